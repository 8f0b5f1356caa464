"""The monthly reports, checked cell by cell against a known ledger."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
from openpyxl import load_workbook

from core.clock import FakeClock
from core.db import make_engine, upgrade
from core.registry.models import Institution, InstitutionType, Person
from tickets.ledger import Ledger
from tickets.models import TicketAction, TicketSource
from tickets.policy import load_policy
from tickets.reports import Month, Reports
from tickets.store import TicketStore

A = TicketAction
INSTITUTIONS = {
    "inst-1": Institution(
        id="inst-1",
        name="阳光养老院",
        type=InstitutionType.ELDERLY_CARE,
        town="城关镇",
        safety_manager=Person(name="李四"),
    ),
    "inst-2": Institution(
        id="inst-2", name="东城敬老院", type=InstitutionType.ELDERLY_CARE, town="东城街道"
    ),
    "inst-3": Institution(
        id="inst-3", name="福利院", type=InstitutionType.CHILD_WELFARE, town="城关镇"
    ),
}


def cst(text: str) -> datetime:
    """A time in China Standard Time (UTC+8), as the reports show it."""
    return datetime.fromisoformat(text + "+08:00").astimezone(UTC)


@pytest.fixture
def reports(tmp_path: Path) -> tuple[Reports, dict[str, str]]:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)
    engine = make_engine(url)
    clock = FakeClock(cst("2026-09-30 09:00"))
    ledger = Ledger(TicketStore(engine), load_policy(), INSTITUTIONS.get, clock)
    ids: dict[str, str] = {}

    def at(text: str) -> None:
        clock._now = cst(text)

    def found(name: str, institution: str, when: str, due: str, *, major: bool = False) -> None:
        at(when)
        ids[name] = ledger.create(
            actor="inspector",
            source=TicketSource.SUPERVISORY_INSPECTION,
            institution=institution,
            category="fire_exit",
            title=f"隐患{name}",
            found_at=cst(when),
            due_at=cst(due),
            major_hazard=major,
        ).id

    def close(name: str, start: str, done: str) -> None:
        at(start)
        ledger.act(ids[name], A.ASSIGNED, "duty")
        ledger.act(ids[name], A.STARTED, "wang")
        at(done)
        ledger.act(ids[name], A.RECTIFIED, "wang", measures=f"整改{name}")
        ledger.act(ids[name], A.VERIFIED, "zhao")

    found("T5", "inst-1", "2026-10-01 10:00", "2026-10-20 18:00")
    close("T5", "2026-10-02 09:00", "2026-10-15 11:00")  # closed before November
    found("T1", "inst-1", "2026-10-20 08:30", "2026-11-20 18:00")
    close("T1", "2026-10-21 09:00", "2026-11-10 16:45")  # carried into November, closed there
    found("T2", "inst-1", "2026-11-03 14:00", "2026-11-10 18:00", major=True)  # overdue
    found("T3", "inst-2", "2026-11-15 09:00", "2026-11-25 18:00")
    close("T3", "2026-11-16 09:00", "2026-11-20 10:00")
    found("T4", "inst-2", "2026-11-25 09:00", "2026-12-05 18:00")
    at("2026-11-26 09:00")
    ledger.act(ids["T4"], A.ASSIGNED, "duty")
    ledger.act(ids["T4"], A.STARTED, "wang")
    at("2026-12-02 10:00")  # closed after the month: still rectifying at its end
    ledger.act(ids["T4"], A.RECTIFIED, "wang", measures="整改T4")
    ledger.act(ids["T4"], A.VERIFIED, "zhao")
    found("T7", "inst-1", "2026-12-01 00:30", "2026-12-09 18:00")  # December
    names = {i.id: (i.name, i.town) for i in INSTITUTIONS.values()}
    return Reports(engine, names), ids


def test_the_month_is_a_china_standard_time_month() -> None:
    month = Month.parse("2026-11")
    assert month.start == datetime(2026, 10, 31, 16, 0, tzinfo=UTC)
    assert month.end == datetime(2026, 11, 30, 16, 0, tzinfo=UTC)
    assert Month.parse("2026-12").end == datetime(2026, 12, 31, 16, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="YYYY-MM"):
        Month.parse("2026-13")


def test_the_ledger_lists_what_the_month_dealt_with_as_it_stood_at_its_end(
    reports: tuple[Reports, dict[str, str]],
) -> None:
    report, ids = reports
    table = report.ledger(Month.parse("2026-11"))
    assert table.headers == [
        "序号", "机构名称", "乡镇(街道)", "隐患描述", "是否重大事故隐患", "隐患来源", "发现时间",
        "整改责任单位", "责任人", "整改措施", "整改时限", "整改状态", "销号时间", "工单编号",
    ]  # fmt: skip
    assert table.rows == [
        [1, "阳光养老院", "城关镇", "隐患T1", "否", "督导检查发现", "2026-10-20 08:30",
         "阳光养老院", "李四", "整改T1", "2026-11-20 18:00", "已销号", "2026-11-10 16:45",
         ids["T1"]],
        [2, "阳光养老院", "城关镇", "隐患T2", "是", "督导检查发现", "2026-11-03 14:00",
         "阳光养老院", "李四", "", "2026-11-10 18:00", "待处理", None, ids["T2"]],
        [3, "东城敬老院", "东城街道", "隐患T3", "否", "督导检查发现", "2026-11-15 09:00",
         "东城敬老院", "未指定", "整改T3", "2026-11-25 18:00", "已销号", "2026-11-20 10:00",
         ids["T3"]],
        [4, "东城敬老院", "东城街道", "隐患T4", "否", "督导检查发现", "2026-11-25 09:00",
         "东城敬老院", "未指定", "整改T4", "2026-12-05 18:00", "整改中", None, ids["T4"]],
    ]  # fmt: skip
    english = report.ledger(Month.parse("2026-11"), "en")
    assert english.headers[:4] == ["No.", "Institution", "Town", "Hazard"]
    assert [r[11] for r in english.rows] == ["closed", "open", "closed", "rectifying"]
    assert english.rows[0][5] == "supervisory inspection" and english.rows[1][4] == "yes"
    only = report.ledger(Month.parse("2026-11"), institutions=["inst-2"])
    assert [r[13] for r in only.rows] == [ids["T3"], ids["T4"]]


def test_the_dispatch_table_counts_per_institution_town_and_in_total(
    reports: tuple[Reports, dict[str, str]],
) -> None:
    report, _ = reports
    table = report.dispatch(Month.parse("2026-11"))
    assert table.headers == [
        "乡镇(街道)", "机构名称", "本月排查隐患数", "其中重大事故隐患", "已整改", "未整改",
        "逾期未整改", "整改率",
    ]  # fmt: skip
    assert table.rows == [
        ["东城街道", "东城敬老院", 2, 0, 1, 1, 0, "50.0%"],
        ["东城街道", "小计", 2, 0, 1, 1, 0, "50.0%"],
        ["城关镇", "福利院", 0, 0, 0, 0, 0, ""],
        ["城关镇", "阳光养老院", 1, 1, 0, 1, 1, "0.0%"],
        ["城关镇", "小计", 1, 1, 0, 1, 1, "0.0%"],
        ["合计", "", 3, 1, 1, 2, 1, "33.3%"],
    ]
    october = report.dispatch(Month.parse("2026-10"), "en")
    assert october.rows[-1] == ["Total", "", 2, 0, 1, 1, 0, "50.0%"]
    scoped = report.dispatch(Month.parse("2026-11"), institutions=["inst-1"])
    assert scoped.rows[-1] == ["合计", "", 1, 1, 0, 1, 1, "0.0%"]
    assert [r[1] for r in scoped.rows] == ["阳光养老院", "小计", ""]


def test_csv_and_xlsx_carry_the_same_cells(reports: tuple[Reports, dict[str, str]]) -> None:
    report, _ = reports
    table = report.dispatch(Month.parse("2026-11"))
    data = table.csv()
    assert data.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    assert rows[0] == table.headers
    assert rows[1:] == [[("" if c is None else str(c)) for c in row] for row in table.rows]
    sheet = load_workbook(io.BytesIO(table.xlsx())).active
    assert sheet is not None
    values = [list(r) for r in sheet.iter_rows(values_only=True)]
    assert values[0] == table.headers
    assert values[1:] == [[None if c == "" else c for c in row] for row in table.rows]
    assert sheet.title == "隐患整治进展调度表 2026-11" and sheet.freeze_panes == "A2"


def test_a_month_carries_the_older_open_tickets_and_those_closed_within_it(
    reports: tuple[Reports, dict[str, str]],
) -> None:
    report, ids = reports
    december = Month.parse("2026-12")
    ledger = report.ledger(december)
    # T2 still open from November, T4 closed in December, T7 found then; T1, T3, T5 closed before.
    assert [(r[13], r[11]) for r in ledger.rows] == [
        (ids["T2"], "待处理"),
        (ids["T4"], "已销号"),
        (ids["T7"], "待处理"),
    ]
    total = report.dispatch(december).rows[-1]
    # Found: T7; open at the end: T2 and T7, both past their deadlines by then.
    assert total == ["合计", "", 1, 0, 0, 2, 2, "0.0%"]
    assert report.dispatch(december, institutions=["inst-2"]).rows[-1][2:7] == [0, 0, 0, 0, 0]
