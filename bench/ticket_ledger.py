"""The hazard ledger at size: queries and monthly reports on 1,000,000 tickets.

    .venv/bin/python -m bench.ticket_ledger [--tickets 1000000] [--months 24]
                                            [--institutions 500] [--backends sqlite,postgres]

A district of `--institutions` institutions in 25 towns, with `--tickets` tickets found over
`--months` months (60 % from sensors, the rest from inspections and public reports), each with
its audit trail (opened; assigned, rectified and verified once closed: about 2.6 steps a
ticket) and, for sensor tickets, its alert. 2 % of tickets stay open, so the last months carry
a backlog, many of it overdue. The data is loaded in bulk (sqlite3 `executemany`, PostgreSQL
`COPY`) into a schema made by the migrations, then read back through `TicketStore` to check it.

Timed, through hazardwatch's own code (`TicketStore`, `Reports`), median of `--repeat` runs:

- the API's list queries: a page of 100 and the total count (`X-Total-Count`) for the whole
  district, a town office (its 20 institutions, open tickets), one institution, the overdue
  tickets, and page 100 of the district;
- the escalation clock's query (open, past the deadline, below the top level; 500 at a time);
- the ledger (清单) and the dispatch table (调度表) of the last full month, as a table of cells,
  as CSV and as XLSX — each in a fresh process, with its peak memory (resident set growth).

Baseline in the same run: the same rows fetched by the bare driver (`sqlite3`, `psycopg`) with
hand-written SQL, no SQLAlchemy, no models — what the database itself costs.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from bench.machine import describe
from core.db import make_engine, upgrade
from tests.servers import Postgres
from tickets.models import TicketAction, TicketSource, TicketStatus
from tickets.reports import Month, Reports
from tickets.store import TicketQuery, TicketStore
from tickets.tables import ticket_alerts, ticket_events, tickets

TOWNS = 25
PAGE = 100
OPEN_SHARE = 0.02
SENSOR_CATEGORIES = [  # category, severity, major, deadline, verification
    ("device_fault", "major", False, timedelta(hours=72), True),
    ("device_offline", "major", False, timedelta(hours=72), True),
    ("low_battery", "minor", False, timedelta(days=7), False),
    ("gas_leak", "critical", True, timedelta(hours=24), True),
    ("tamper", "major", False, timedelta(hours=72), True),
]
OTHER_CATEGORIES = [
    ("blocked_exit", "major", True, timedelta(days=3), True),
    ("electrical", "major", False, timedelta(days=7), True),
    ("extinguisher", "minor", False, timedelta(days=15), True),
    ("fire_door", "minor", False, timedelta(days=30), True),
]
OTHER_SOURCES = [
    TicketSource.SELF_INSPECTION,
    TicketSource.SUPERVISORY_INSPECTION,
    TicketSource.PUBLIC_REPORT,
]
OPEN_STATUSES = [
    TicketStatus.OPEN,
    TicketStatus.ASSIGNED,
    TicketStatus.RECTIFYING,
    TicketStatus.AWAITING_VERIFICATION,
]
TICKET_COLUMNS = [c.name for c in tickets.columns]
EVENT_COLUMNS = [c.name for c in ticket_events.columns if c.name != "id"]
ALERT_COLUMNS = [c.name for c in ticket_alerts.columns]


def institution_names(count: int) -> dict[str, tuple[str, str | None]]:
    """id -> (name, town), as the registry gives them to `Reports`."""
    return {
        f"inst-{i:03d}": (f"第{i}养老院", f"第{i % TOWNS + 1:02d}街道") for i in range(1, count + 1)
    }


def town_institutions(count: int, town: int = 1) -> list[str]:
    """The institutions of one town (a town office's view)."""
    return [f"inst-{i:03d}" for i in range(1, count + 1) if i % TOWNS + 1 == town]


# --- data ------------------------------------------------------------------------------------


def generate(
    count: int, months: int, institutions: int, end: datetime, seed: int = 7
) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]]:
    """Tickets in order of finding, each with its events and alert links (as column dicts)."""
    rng = random.Random(seed)
    start = end - timedelta(days=30.44 * months)
    span = (end - start).total_seconds()
    open_keys: set[str] = set()
    for n in range(count):
        found = start + timedelta(seconds=span * n / count + rng.random())
        inst = rng.randint(1, institutions)
        institution = f"inst-{inst:03d}"
        sensor = rng.random() < 0.6
        if sensor:
            category, severity, major, deadline, verify = rng.choice(SENSOR_CATEGORIES)
            source, device = TicketSource.SENSOR, f"{institution}-d{rng.randint(1, 40):02d}"
            unit, person = f"第{inst}养老院", "安全管理员"
        else:
            category, severity, major, deadline, verify = rng.choice(OTHER_CATEGORIES)
            source, device = rng.choice(OTHER_SOURCES), None
            unit, person = f"第{inst}养老院", "院长"
        due = found + deadline
        key = f"{device}|{category}" if device else None
        still_open = found > end - timedelta(days=3) or rng.random() < OPEN_SHARE
        if still_open and key is not None and key in open_keys:
            still_open = False  # one open ticket per (device, category)
        ticket_id = f"{int(found.timestamp() * 1000):011x}{n:010x}"
        events = [_event(ticket_id, found, TicketAction.OPENED, "system", TicketStatus.OPEN)]
        if still_open:
            status = rng.choice(OPEN_STATUSES)
            closed = None
            if status is not TicketStatus.OPEN:
                at = found + deadline * rng.random() * 0.3
                events.append(_event(ticket_id, at, TicketAction.ASSIGNED, "值班员", status))
            if key is not None:
                open_keys.add(key)
        else:
            status = TicketStatus.CLOSED
            closed = found + deadline * (0.1 + rng.random() * 1.2)  # some after the deadline
            rectified = found + (closed - found) * 0.7
            if verify:
                events.append(
                    _event(
                        ticket_id,
                        rectified,
                        TicketAction.RECTIFIED,
                        person,
                        TicketStatus.AWAITING_VERIFICATION,
                    )
                )
                events.append(
                    _event(ticket_id, closed, TicketAction.VERIFIED, "督导员", TicketStatus.CLOSED)
                )
            else:
                events.append(
                    _event(ticket_id, closed, TicketAction.RECTIFIED, person, TicketStatus.CLOSED)
                )
        overdue_days = ((end - due).days if closed is None else 0) if still_open else 0
        level = 0 if overdue_days <= 0 else 1 if overdue_days < 3 else 2 if overdue_days < 7 else 3
        ticket = {
            "id": ticket_id,
            "open_key": key if still_open else None,
            "category": category,
            "status": status.value,
            "source": source.value,
            "institution": institution,
            "device": device,
            "title": f"{category} 隐患",
            "description": f"设备 {device}" if device else "检查发现",
            "severity": severity,
            "major_hazard": major,
            "responsible_unit": unit,
            "responsible_person": person,
            "responsible_phone": None,
            "measures": "更换设备并复查" if not still_open else "",
            "verification_required": verify,
            "found_at": found,
            "due_at": due,
            "created_at": found,
            "updated_at": closed or found,
            "closed_at": closed,
            "rectified_by": person if closed else None,
            "verified_by": "督导员" if closed and verify else None,
            "reported_by": "system" if sensor else "巡查员",
            "occurrences": 1,
            "escalation_level": level,
            "listed_supervision": level >= 3,
        }
        alerts = [{"alert_id": f"a{ticket_id}", "ticket_id": ticket_id, "attached_at": found}]
        yield ticket, events, alerts if sensor else []


def _event(
    ticket_id: str, at: datetime, action: TicketAction, actor: str, status: TicketStatus
) -> dict[str, Any]:
    return {
        "ticket_id": ticket_id,
        "at": at,
        "action": action.value,
        "actor": actor,
        "note": None,
        "status": status.value,
        "evidence": "[]",
        "alert_id": None,
    }


def _sqlite_value(value: Any) -> Any:
    """As SQLAlchemy stores it in SQLite: naive UTC text, 0/1."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, bool):
        return int(value)
    return value


def load(url: str, args: argparse.Namespace, end: datetime) -> dict[str, int]:
    """Migrate, bulk-load, return the row counts."""
    upgrade(url)
    batches: dict[str, list[tuple[Any, ...]]] = {"tickets": [], "events": [], "alerts": []}
    counts = dict.fromkeys(batches, 0)
    columns = {"tickets": TICKET_COLUMNS, "events": EVENT_COLUMNS, "alerts": ALERT_COLUMNS}
    names = {"tickets": "tickets", "events": "ticket_events", "alerts": "ticket_alerts"}
    sqlite = url.startswith("sqlite")
    if sqlite:
        raw: Any = sqlite3.connect(url.split("///", 1)[1])
        raw.execute("PRAGMA journal_mode=WAL")
        raw.execute("PRAGMA synchronous=OFF")
    else:
        raw = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1))

    def flush() -> None:
        for kind, rows in batches.items():
            if not rows:
                continue
            cols = columns[kind]
            if sqlite:
                marks = ", ".join("?" * len(cols))
                raw.executemany(
                    f"INSERT INTO {names[kind]} ({', '.join(cols)}) VALUES ({marks})", rows
                )
            else:
                with raw.cursor() as cursor:
                    copy_sql = f"COPY {names[kind]} ({', '.join(cols)}) FROM STDIN"
                    with cursor.copy(copy_sql) as copy:
                        for row in rows:
                            copy.write_row(row)
            counts[kind] += len(rows)
            rows.clear()
        raw.commit()

    convert = _sqlite_value if sqlite else (lambda v: v)
    for ticket, events, alerts in generate(args.tickets, args.months, args.institutions, end):
        batches["tickets"].append(tuple(convert(ticket[c]) for c in TICKET_COLUMNS))
        batches["events"].extend(tuple(convert(e[c]) for c in EVENT_COLUMNS) for e in events)
        batches["alerts"].extend(tuple(convert(a[c]) for c in ALERT_COLUMNS) for a in alerts)
        if len(batches["tickets"]) >= 20_000:
            flush()
    flush()
    if sqlite:
        raw.execute("ANALYZE")
    else:
        raw.execute("ANALYZE")
    raw.commit()
    raw.close()
    return counts


# --- timing ----------------------------------------------------------------------------------


def timed(action: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median seconds of `repeat` runs, and the last result."""
    seconds, result = [], None
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        result = action()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def rss_kib(field: str) -> int:
    """VmRSS or VmHWM of this process, KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def one_report(url: str, operation: str, month: str, institutions: int, repeat: int) -> None:
    """In a fresh process: run one report operation, print seconds and peak RSS growth."""
    engine = make_engine(url)
    reports = Reports(engine, institution_names(institutions))
    the_month = Month.parse(month)
    kind, _, form = operation.partition(".")

    def run() -> int:
        if kind == "raw":
            with bare_connection(url) as connection:
                return len(raw_ledger(connection, the_month))
        table = (reports.ledger if kind == "ledger" else reports.dispatch)(the_month, "zh")
        if form == "csv":
            return len(table.csv())
        if form == "xlsx":
            return len(table.xlsx())
        return len(table.rows)

    # Memory: the first run in this fresh process (later runs reuse what the first one freed).
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = rss_kib("VmRSS")
    size = run()
    peak = rss_kib("VmHWM") - before
    seconds = []
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - started)
    print(json.dumps({"seconds": statistics.median(seconds), "peak_kib": peak, "n": size}))


def bare_connection(url: str) -> Any:
    """The bare driver's connection (sqlite3 or psycopg), and its placeholder."""
    if url.startswith("sqlite"):
        return sqlite3.connect(url.split("///", 1)[1])
    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1))


def _bare(connection: Any, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    if isinstance(connection, sqlite3.Connection):
        params = tuple(_sqlite_value(v) for v in params)
    else:
        sql = sql.replace("?", "%s")
    return list(connection.execute(sql, params).fetchall())


def raw_ledger(connection: Any, month: Month) -> list[tuple[Any, ...]]:
    """Baseline: the ledger's rows and each one's last step before the month's end, bare SQL
    (the same three index ranges as `Reports`)."""
    in_month = (
        "SELECT {cols} FROM tickets WHERE found_at >= ? AND found_at < ?"
        " UNION ALL SELECT {cols} FROM tickets WHERE found_at < ? AND closed_at IS NULL"
        " UNION ALL SELECT {cols} FROM tickets WHERE found_at < ? AND closed_at >= ?"
    )
    params = (month.start, month.end, month.start, month.start, month.start)
    rows = _bare(
        connection,
        f"SELECT * FROM ({in_month.format(cols='*')}) AS m ORDER BY found_at, id",
        params,
    )
    _bare(
        connection,
        "SELECT e.ticket_id, e.status FROM ticket_events e JOIN ("
        " SELECT ticket_id, max(id) AS id FROM ticket_events WHERE at < ? AND ticket_id IN ("
        f"  {in_month.format(cols='id')}) GROUP BY ticket_id"
        ") last ON last.id = e.id",
        (month.end, *params),
    )
    return rows


def raw_page(connection: Any, where: str, params: tuple[Any, ...], offset: int) -> int:
    """Baseline: a page of 100 and the count, bare SQL."""
    page = f"SELECT * FROM tickets {where} ORDER BY found_at DESC, id DESC"
    _bare(connection, f"{page} LIMIT ? OFFSET ?", (*params, PAGE, offset))  # as SQLAlchemy
    return int(_bare(connection, f"SELECT count(*) FROM tickets {where}", params)[0][0])


def api_page(store: TicketStore, query: TicketQuery, offset: int) -> int:
    """What GET /api/v1/tickets asks of the store: a page and the total."""
    store.search(query, limit=PAGE, offset=offset)
    return store.count(query)


def pad(label: str, width: int = 56) -> str:
    """Left-aligned in `width` columns of a terminal (a Chinese character takes two)."""
    used = sum(2 if ord(ch) > 0x2E80 else 1 for ch in label)
    return label + " " * max(0, width - used)


def previous_month(moment: datetime) -> Month:
    """The last full month before `moment`, in the centre's time zone."""
    local = moment.astimezone(Month.parse("2026-01").tz)
    return Month.parse(f"{local.replace(day=1) - timedelta(days=1):%Y-%m}")


def measure(url: str, args: argparse.Namespace, end: datetime) -> None:
    """Load one database and print every figure."""
    backend = "SQLite" if url.startswith("sqlite") else "PostgreSQL"
    started = time.perf_counter()
    counts = load(url, args, end)
    loaded = time.perf_counter() - started
    print(
        f"\n== {backend}: {counts['tickets']:,} tickets, {counts['events']:,} steps, "
        f"{counts['alerts']:,} alert links, loaded in {loaded:.0f} s"
    )
    engine = make_engine(url)
    store = TicketStore(engine)
    sample = store.search(TicketQuery(), limit=PAGE)  # read back through the models
    if len(sample) != PAGE or store.count(TicketQuery()) != counts["tickets"]:
        raise SystemExit(f"{backend}: the loaded tickets do not read back")
    bare = bare_connection(url)
    town = town_institutions(args.institutions)
    one = ["inst-001"]
    open_statuses = [s.value for s in OPEN_STATUSES]
    town_marks = ", ".join("?" for _ in town)
    status_marks = ", ".join("?" for _ in open_statuses)
    cases: list[tuple[str, TicketQuery, int, str, tuple[Any, ...]]] = [
        ("district, page 1", TicketQuery(), 0, "", ()),
        ("district, page 100", TicketQuery(), 99 * PAGE, "", ()),
        (
            f"town office ({len(town)} institutions), open",
            TicketQuery(statuses=open_statuses, institutions=town),
            0,
            f"WHERE status IN ({status_marks}) AND institution IN ({town_marks})",
            (*open_statuses, *town),
        ),
        (
            "one institution",
            TicketQuery(institutions=one),
            0,
            "WHERE institution IN (?)",
            tuple(one),
        ),
        (
            "overdue",
            TicketQuery(overdue_at=end),
            0,
            f"WHERE status IN ({status_marks}) AND due_at < ?",
            (*open_statuses, end),
        ),
    ]
    print(f"{'list query (page of 100 + count)':56} {'hazardwatch':>12} {'bare driver':>12}")
    for name, query, offset, where, params in cases:
        ours, total = timed(functools.partial(api_page, store, query, offset), args.repeat)
        bare_s, bare_total = timed(
            functools.partial(raw_page, bare, where, params, offset), args.repeat
        )
        if bare_total != total:
            raise SystemExit(f"{backend} {name}: {total} counted, the bare query {bare_total}")
        print(f"{pad(f'{name} [{total:,}]')} {ours * 1000:9.1f} ms {bare_s * 1000:9.1f} ms")
    seconds, due = timed(functools.partial(store.overdue, end, 3), args.repeat)
    print(
        f"{pad(f'escalation clock: overdue below level 3 [{len(due)}]')} {seconds * 1000:9.1f} ms"
    )
    engine.dispose()
    bare.close()

    month = str(previous_month(end))
    print(f"\nmonthly reports for {month} (fresh process each; median of {args.repeat}):")
    print(f"{'':56} {'time':>10} {'peak RSS growth':>16}")
    for operation in (
        "raw",
        "ledger",
        "ledger.csv",
        "ledger.xlsx",
        "dispatch",
        "dispatch.csv",
        "dispatch.xlsx",
    ):
        command = [sys.executable, "-m", "bench.ticket_ledger", "--one", operation, "--url", url]
        command += ["--month", month, "--institutions", str(args.institutions)]
        command += ["--repeat", str(args.repeat)]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        figures = json.loads(out.strip().splitlines()[-1])
        label = {
            "raw": "bare driver: the ledger's rows and statuses",
            "ledger": "ledger (清单), table of cells",
            "dispatch": "dispatch table (调度表), table of cells",
        }.get(operation, f"{operation.replace('.', ' as ')}")
        unit = "rows" if "." not in operation else "bytes"
        label += f" [{figures['n']:,} {unit}]"
        print(f"{label:56} {figures['seconds']:8.2f} s {figures['peak_kib'] / 1024:12.0f} MiB")


def main() -> None:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--months", type=int, default=24)
    parser.add_argument("--institutions", type=int, default=500)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--month", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one_report(args.url, args.one, args.month, args.institutions, args.repeat)
        return
    end = datetime(2026, 11, 1, tzinfo=Month.parse("2026-11").tz).astimezone(UTC)
    end += timedelta(days=10)  # the 11th: last month closed, this one under way
    print(describe())
    print(
        f"{args.tickets:,} tickets over {args.months} months, {args.institutions} institutions "
        f"in {TOWNS} towns"
    )
    with tempfile.TemporaryDirectory(prefix="hazardwatch-bench-") as tmp:
        for backend in args.backends.split(","):
            if backend == "sqlite":
                measure(f"sqlite:///{tmp}/ledger.db", args, end)
            elif backend == "postgres":
                server = Postgres(Path(tmp) / "postgres").start()
                try:
                    measure(server.url, args, end)
                finally:
                    server.stop()
                    server.cleanup()
            else:
                raise SystemExit(f"unknown backend {backend!r}")


if __name__ == "__main__":
    main()
