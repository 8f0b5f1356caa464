"""Monthly reports of the ledger: the list (清单) and the dispatch table (调度表).

Months are calendar months in the centre's time zone (Asia/Shanghai by default). For a month:

- the **ledger** lists every ticket found before the month ended and not closed before it
  began (everything the month had to deal with), with its status at the end of the month;
- the **dispatch table** counts per institution, with a subtotal per town and a total: found in
  the month, of those major, of those rectified (closed) by the month's end, still open at the
  end, overdue at the end (open and past the deadline, whenever found), and the rectification
  rate (rectified / found; empty when nothing was found).

Both come as rows of cells (`Table`), written as CSV (UTF-8 with BOM, which Excel needs for
Chinese) or XLSX, with Chinese or English headers. Text that a spreadsheet would take for a
formula is written with a quote before it (see `_as_text`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter
from sqlalchemy import Engine, Subquery, and_, func, or_, select, union_all

from tickets.models import TicketSource, TicketStatus
from tickets.tables import ticket_events, tickets

Lang = Literal["zh", "en"]
Cell = str | int | float | None
CENTRE_TZ = ZoneInfo("Asia/Shanghai")
# A text cell starting with one of these is a formula to Excel, LibreOffice and WPS (OWASP).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

LEDGER_COLUMNS: list[tuple[str, str, str]] = [  # key, zh, en
    ("no", "序号", "No."),
    ("institution", "机构名称", "Institution"),
    ("town", "乡镇(街道)", "Town"),
    ("title", "隐患描述", "Hazard"),
    ("major", "是否重大事故隐患", "Major hazard"),
    ("source", "隐患来源", "Source channel"),
    ("found_at", "发现时间", "Found at"),
    ("unit", "整改责任单位", "Responsible unit"),
    ("person", "责任人", "Responsible person"),
    ("measures", "整改措施", "Measures"),
    ("due_at", "整改时限", "Deadline"),
    ("status", "整改状态", "Status"),
    ("closed_at", "销号时间", "Closed at"),
    ("ticket", "工单编号", "Ticket"),
]
DISPATCH_COLUMNS: list[tuple[str, str, str]] = [
    ("town", "乡镇(街道)", "Town"),
    ("institution", "机构名称", "Institution"),
    ("found", "本月排查隐患数", "Found"),
    ("major", "其中重大事故隐患", "Of which major"),
    ("rectified", "已整改", "Rectified"),
    ("open", "未整改", "Open"),
    ("overdue", "逾期未整改", "Overdue"),
    ("rate", "整改率", "Rectification rate"),
]
SOURCE_NAMES = {
    TicketSource.SENSOR: ("传感器自动上报", "sensor"),
    TicketSource.SELF_INSPECTION: ("自查上报", "self-inspection"),
    TicketSource.SUPERVISORY_INSPECTION: ("督导检查发现", "supervisory inspection"),
    TicketSource.PUBLIC_REPORT: ("群众举报查实", "public report"),
}
STATUS_NAMES = {
    TicketStatus.OPEN: ("待处理", "open"),
    TicketStatus.ASSIGNED: ("已指派", "assigned"),
    TicketStatus.RECTIFYING: ("整改中", "rectifying"),
    TicketStatus.AWAITING_VERIFICATION: ("待核查", "awaiting verification"),
    TicketStatus.CLOSED: ("已销号", "closed"),
}
YES_NO = {True: ("是", "yes"), False: ("否", "no")}
TOTAL = ("合计", "Total")
SUBTOTAL = ("小计", "Subtotal")
NO_TOWN = ("(未填乡镇)", "(no town)")


@dataclass(frozen=True, slots=True)
class Month:
    """A calendar month in a time zone."""

    year: int
    month: int
    tz: ZoneInfo = CENTRE_TZ

    @classmethod
    def parse(cls, text: str, tz: ZoneInfo = CENTRE_TZ) -> Month:
        """`2026-11`."""
        try:
            year, month = (int(part) for part in text.split("-"))
            date(year, month, 1)
        except ValueError:
            raise ValueError(f"a month is YYYY-MM, got {text!r}") from None
        return cls(year, month, tz)

    @property
    def start(self) -> datetime:
        """The first instant, UTC."""
        return datetime(self.year, self.month, 1, tzinfo=self.tz).astimezone(UTC)

    @property
    def end(self) -> datetime:
        """The first instant of the next month, UTC."""
        following = date(self.year, self.month, 28) + timedelta(days=4)
        return datetime(following.year, following.month, 1, tzinfo=self.tz).astimezone(UTC)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


@dataclass
class Table:
    """A report: a title, column headers and rows of cells."""

    title: str
    headers: list[str]
    rows: list[list[Cell]] = field(default_factory=list)

    def csv(self) -> bytes:
        """UTF-8 with a BOM (Excel opens Chinese text right only then), CRLF lines."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(self.headers)
        writer.writerows([_as_text(value) for value in row] for row in self.rows)
        return ("\ufeff" + out.getvalue()).encode("utf-8")

    def xlsx(self) -> bytes:
        """One sheet, bold headers, frozen header row, widths to fit; written as a stream
        (openpyxl's write-only mode: a month of a large district is tens of thousands of rows).
        """
        book = Workbook(write_only=True)
        sheet = book.create_sheet(self.title[:31])
        for index, header in enumerate(self.headers, start=1):
            values = [header, *(row[index - 1] for row in self.rows[:200])]
            width = max(_width(v) for v in values)
            sheet.column_dimensions[get_column_letter(index)].width = min(60, max(8, width + 2))
        sheet.freeze_panes = "A2"
        bold = Font(bold=True)
        header_cells = []
        for header in self.headers:
            cell = WriteOnlyCell(sheet, value=header)
            cell.font = bold
            header_cells.append(cell)
        sheet.append(header_cells)
        for row in self.rows:
            sheet.append([_xlsx_value(value) for value in row])
        out = io.BytesIO()
        book.save(out)
        return out.getvalue()


def _as_text(value: Cell) -> Cell:
    """Text that a spreadsheet would run as a formula, with a quote before it; anything else as
    it is.

    Titles, names, units and measures come from people and devices: `=HYPERLINK(...)` or a DDE
    call in one would run on the desk of whoever opens the report (OWASP, "CSV Injection"). The
    quote makes it plain text and keeps what was typed readable. Only text: a number, even a
    negative one, is no formula and stays a number.
    """
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _xlsx_value(value: Cell) -> Cell:
    """`_as_text`, after the control characters XML cannot hold (openpyxl refuses them, and the
    whole export with them) are made U+FFFD: unlike dropping them, that shows the reader that
    something unreadable was there and does not run the words either side together.
    """
    if isinstance(value, str):
        value = ILLEGAL_CHARACTERS_RE.sub("\ufffd", value)
    return _as_text(value)


def _width(value: Cell) -> int:
    text = "" if value is None else str(value)
    return sum(2 if ord(ch) > 0x2E80 else 1 for ch in text)  # CJK takes two columns


def _pick(pair: tuple[str, str], lang: Lang) -> str:
    return pair[0] if lang == "zh" else pair[1]


def _local(moment: datetime | None, tz: ZoneInfo) -> str | None:
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M") if moment is not None else None


class Reports:
    """Builds the monthly tables from the database."""

    def __init__(self, engine: Engine, institution_names: dict[str, tuple[str, str | None]]):
        """`institution_names`: id -> (name, town), from the registry."""
        self._engine = engine
        self._names = institution_names

    def ledger(
        self, month: Month, lang: Lang = "zh", institutions: Sequence[str] | None = None
    ) -> Table:
        """The list (清单): every ticket the month had to deal with, status at its end."""
        # Found in the month, or found before it and not closed before it began.
        rows_of = _month_rows(month, month.start, institutions, list(tickets.c))
        query = select(rows_of).order_by(rows_of.c.found_at, rows_of.c.id)
        headers = [_pick((zh, en), lang) for _, zh, en in LEDGER_COLUMNS]
        title = f"重大事故隐患清单 {month}" if lang == "zh" else f"Hazard ledger {month}"
        table = Table(title, headers)
        with self._engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
            status_at_end = self._status_at(connection, [r["id"] for r in rows], month.end)
        for number, row in enumerate(rows, start=1):
            name, town = self._names.get(row["institution"], (row["institution"], None))
            # No step before the end: found then, but put in the ledger only later.
            status = status_at_end.get(row["id"], TicketStatus.OPEN)
            closed = row["closed_at"] if status is TicketStatus.CLOSED else None
            table.rows.append(
                [
                    number,
                    name,
                    town or "",
                    row["title"],
                    _pick(YES_NO[bool(row["major_hazard"])], lang),
                    _pick(SOURCE_NAMES[TicketSource(row["source"])], lang),
                    _local(row["found_at"], month.tz),
                    row["responsible_unit"],
                    row["responsible_person"],
                    row["measures"],
                    _local(row["due_at"], month.tz),
                    _pick(STATUS_NAMES[status], lang),
                    _local(closed, month.tz),
                    row["id"],
                ]
            )
        return table

    def dispatch(
        self, month: Month, lang: Lang = "zh", institutions: Sequence[str] | None = None
    ) -> Table:
        """The dispatch table (调度表): per institution, subtotals per town, a total."""
        # Found in the month, or found before it and still open at its end; nothing else counts.
        t = tickets.c
        columns = [t.institution, t.found_at, t.major_hazard, t.closed_at, t.due_at]
        c = _month_rows(month, month.end, institutions, columns).c
        closed_by_end = and_(c.closed_at.is_not(None), c.closed_at < month.end)
        found_now = c.found_at >= month.start
        open_at_end = or_(c.closed_at.is_(None), c.closed_at >= month.end)
        counts = select(
            c.institution,
            func.count().filter(found_now).label("found"),
            func.count().filter(and_(found_now, c.major_hazard.is_(True))).label("major"),
            func.count().filter(and_(found_now, closed_by_end)).label("rectified"),
            func.count().filter(open_at_end).label("open"),
            func.count().filter(and_(open_at_end, c.due_at < month.end)).label("overdue"),
        ).group_by(c.institution)
        with self._engine.connect() as connection:
            found = {r["institution"]: r for r in connection.execute(counts).mappings()}
        ids = set(found) | (set(institutions) if institutions is not None else set(self._names))
        by_town: dict[str, list[tuple[str, list[int]]]] = {}
        for institution in ids:
            name, town = self._names.get(institution, (institution, None))
            row = found.get(institution)
            figures = [int(row[k]) if row else 0 for k in ("found", "major", "rectified")]
            figures += [int(row[k]) if row else 0 for k in ("open", "overdue")]
            by_town.setdefault(town or _pick(NO_TOWN, lang), []).append((name, figures))
        headers = [_pick((zh, en), lang) for _, zh, en in DISPATCH_COLUMNS]
        title = f"隐患整治进展调度表 {month}" if lang == "zh" else f"Dispatch table {month}"
        table = Table(title, headers)
        total = [0] * 5
        for town in sorted(by_town):
            subtotal = [0] * 5
            for name, figures in sorted(by_town[town]):
                table.rows.append([town, name, *figures, _rate(figures)])
                subtotal = [a + b for a, b in zip(subtotal, figures, strict=True)]
            table.rows.append([town, _pick(SUBTOTAL, lang), *subtotal, _rate(subtotal)])
            total = [a + b for a, b in zip(total, subtotal, strict=True)]
        table.rows.append([_pick(TOTAL, lang), "", *total, _rate(total)])
        return table

    def _status_at(
        self, connection: Any, ids: Iterable[str], end: datetime
    ) -> dict[str, TicketStatus]:
        """Each ticket's status after its last step before `end`."""
        found: dict[str, TicketStatus] = {}
        ids = list(ids)
        for start in range(0, len(ids), 5000):
            chunk = ids[start : start + 5000]
            last = (
                select(func.max(ticket_events.c.id))
                .where(ticket_events.c.ticket_id.in_(chunk), ticket_events.c.at < end)
                .group_by(ticket_events.c.ticket_id)
            )
            query = select(ticket_events.c.ticket_id, ticket_events.c.status).where(
                ticket_events.c.id.in_(last)
            )
            for ticket_id, status in connection.execute(query):
                found[ticket_id] = TicketStatus(status)
        return found


def _month_rows(
    month: Month,
    open_since: datetime,
    institutions: Sequence[str] | None,
    columns: list[Any],
) -> Subquery:
    """Tickets found in the month, and those found before it and not closed before
    `open_since`, as a union of three index ranges (found_at; closed_at NULL; closed_at from
    `open_since`): an OR of them made SQLite read every older ticket (1.9 s at 1,000,000).
    """
    c = tickets.c
    parts = [
        and_(c.found_at >= month.start, c.found_at < month.end),
        and_(c.found_at < month.start, c.closed_at.is_(None)),
        and_(c.found_at < month.start, c.closed_at >= open_since),
    ]
    if institutions is not None:
        mine = c.institution.in_(list(institutions))
        parts = [and_(part, mine) for part in parts]
    return union_all(*(select(*columns).where(part) for part in parts)).subquery("month_rows")


def _rate(figures: list[int]) -> str:
    found, _major, rectified = figures[:3]
    return f"{rectified / found:.1%}" if found else ""
