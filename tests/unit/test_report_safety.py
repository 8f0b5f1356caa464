"""Exports of hostile text: every CSV and XLSX cell read back, none of them a formula.

Titles, names, units and measures come from people and devices. A spreadsheet runs a cell that
starts with `=`, `+`, `-` or `@` (or a tab or carriage return before one) as a formula, which can
leak data or launch programs (OWASP, "CSV Injection"); and openpyxl refuses control characters.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from openpyxl import load_workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

from core.clock import FakeClock
from core.db import make_engine, upgrade
from tests.unit.test_reports import INSTITUTIONS, cst
from tickets.ledger import Ledger
from tickets.models import TicketSource
from tickets.policy import load_policy
from tickets.reports import Cell, Month, Reports, Table
from tickets.store import TicketStore

TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
FORMULAS = ['=HYPERLINK("http://x","y")', "+1+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1"]
CONTROL = "烟感\x00报警\x07故障\x1b"
UNICODE = [
    "消防通道被杂物堵塞，需立即清理并设置警示标识。" * 150,
    "厨房🔥燃气泄漏😱",
    "\u202etxt.exe",
]
NOVEMBER = Month.parse("2026-11")


@pytest.fixture
def reports(tmp_path: Path) -> Reports:
    """A ledger whose every text field holds one hostile value per ticket, and a
    registry whose institution names and towns are hostile too.
    """
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)
    engine = make_engine(url)
    ledger = Ledger(
        TicketStore(engine), load_policy(), INSTITUTIONS.get, FakeClock(cst("2026-11-02 09:00"))
    )
    for index, text in enumerate([*FORMULAS, CONTROL, *UNICODE]):
        ledger.create(
            actor="inspector",
            source=TicketSource.PUBLIC_REPORT,
            institution="inst-1" if index % 2 else "inst-2",
            category="fire_exit",
            title=text[:200],
            description=text,
            found_at=cst(f"2026-11-02 08:{index:02d}"),
            due_at=cst("2026-11-20 18:00"),
            responsible_unit=text[:200],
            responsible_person=text[:100],
            responsible_phone=text[:40],
            measures=text,
        )
    names: dict[str, tuple[str, str | None]] = {
        "inst-1": ('=HYPERLINK("http://x","y")', "-2+3"),
        "inst-2": ("@SUM(A1)", CONTROL),
        "inst-3": ("+1+1", "\t=1"),
    }
    return Reports(engine, names)


def tables(reports: Reports) -> list[Table]:
    return [reports.ledger(NOVEMBER), reports.dispatch(NOVEMBER, "en")]


def escaped(value: Cell) -> Cell:
    """What a text cell should say: a quote before a formula's first character."""
    if isinstance(value, str) and value.startswith(TRIGGERS):
        return "'" + value
    return value


def in_xlsx(value: Cell) -> Cell:
    """What openpyxl should read back: control characters shown as U+FFFD, carriage returns as
    line feeds (XML reads a bare CR as a line end), empty text as an empty cell.
    """
    if not isinstance(value, str):
        return value
    if value == "":
        return None
    return str(escaped(ILLEGAL_CHARACTERS_RE.sub("\ufffd", value))).replace("\r", "\n")


def read_csv(table: Table) -> list[list[str]]:
    return list(csv.reader(io.StringIO(table.csv().decode("utf-8-sig"), newline="")))


def assert_no_formula(value: object) -> None:
    assert not (isinstance(value, str) and value.startswith(TRIGGERS)), value


def test_csv_cells_that_start_like_a_formula_are_quoted_text(reports: Reports) -> None:
    for table in tables(reports):
        rows = read_csv(table)
        assert rows[0] == table.headers
        expected = [["" if c is None else str(escaped(c)) for c in row] for row in table.rows]
        assert rows[1:] == expected
        for value in (v for row in rows for v in row):
            assert_no_formula(value)
    ledger = read_csv(reports.ledger(NOVEMBER))
    titles = [row[3] for row in ledger[1:]]
    assert titles[: len(FORMULAS)] == ["'" + text for text in FORMULAS]
    assert titles[len(FORMULAS)] == CONTROL  # CSV keeps every character as it was
    assert ledger[1][1] == "'@SUM(A1)" and ledger[2][2] == "'-2+3"


def test_xlsx_cells_are_text_never_formulas_and_control_characters_do_not_fail_it(
    reports: Reports,
) -> None:
    for table in tables(reports):
        sheet = load_workbook(io.BytesIO(table.xlsx())).active
        assert sheet is not None
        cells = [list(row) for row in sheet.iter_rows()]
        assert [c.value for c in cells[0]] == table.headers
        assert [[c.value for c in row] for row in cells[1:]] == [
            [in_xlsx(c) for c in row] for row in table.rows
        ]
        for cell in (c for row in cells for c in row):
            assert cell.data_type != "f", cell.value
            assert_no_formula(cell.value)
    sheet = load_workbook(io.BytesIO(reports.ledger(NOVEMBER).xlsx())).active
    assert sheet is not None
    assert sheet["D2"].value == '\'=HYPERLINK("http://x","y")' and sheet["D2"].data_type == "s"
    assert sheet["D6"].value == "'\t=1" and sheet["D7"].value == "'\n=1"
    assert sheet["D8"].value == "烟感\ufffd报警\ufffd故障\ufffd"


def test_ordinary_text_numbers_and_the_json_rows_are_left_as_they_are(reports: Reports) -> None:
    ledger = reports.ledger(NOVEMBER)
    assert [row[3] for row in ledger.rows] == [t[:200] for t in [*FORMULAS, CONTROL, *UNICODE]]
    sheet = load_workbook(io.BytesIO(ledger.xlsx())).active
    assert sheet is not None
    assert [sheet.cell(row, 10).value for row in (9, 10, 11)] == UNICODE
    assert [row[9] for row in read_csv(ledger)[8:]] == UNICODE
    table = Table("figures", ["n", "x", "text"], [[-5, -0.5, "-5"], [3, 2.25, "5-3"]])
    assert read_csv(table)[1:] == [["-5", "-0.5", "'-5"], ["3", "2.25", "5-3"]]
    sheet = load_workbook(io.BytesIO(table.xlsx())).active
    assert sheet is not None
    values = [[(c.value, c.data_type) for c in row] for row in sheet.iter_rows(min_row=2)]
    assert values == [
        [(-5, "n"), (-0.5, "n"), ("'-5", "s")],
        [(3, "n"), (2.25, "n"), ("5-3", "s")],
    ]
