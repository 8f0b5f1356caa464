"""Where a live stream begins: after the client's last event, or with a reset."""

from __future__ import annotations

from pathlib import Path

import orjson

from api.routers.stream import _start
from core.eventlog import ALERT, JournalEventLog, NewEvent


def _log(tmp_path: Path, events: int) -> JournalEventLog:
    log = JournalEventLog(tmp_path, segment_bytes=300, fsync=False)
    for n in range(events):
        log.append([NewEvent(ALERT, "dev", "inst-1", b'{"n": %d}' % n)])
    return log


def test_a_new_client_starts_at_the_head(tmp_path: Path) -> None:
    log = _log(tmp_path, 5)
    assert _start(log, None) == (5, None)
    assert _start(log, "not a number") == (5, None)


def test_a_returning_client_resumes_after_its_last_event(tmp_path: Path) -> None:
    log = _log(tmp_path, 5)
    assert _start(log, "2") == (2, None)
    assert _start(log, "5") == (5, None)


def test_a_client_whose_events_were_pruned_or_never_existed_gets_a_reset(
    tmp_path: Path,
) -> None:
    log = _log(tmp_path, 40)
    log.note("all", 40)
    log._retention_s = 0  # everything handled is old enough to go
    first = log.prune(["all"])
    assert first > 2
    start, reset = _start(log, "1")
    assert start == 40 and reset is not None and reset.event == "reset"
    assert orjson.loads(str(reset.raw_data)) == {"first": first, "head": 40, "last_event_id": 1}
    start, reset = _start(log, "99")  # a log that was replaced: ids of another one
    assert start == 40 and reset is not None


def test_a_last_event_id_that_is_no_position_starts_at_the_head(tmp_path: Path) -> None:
    log = _log(tmp_path, 3)
    for bad in ("²", "1" * 5000, "-1", "1.5", " 2", "0x2"):
        assert _start(log, bad) == (3, None), bad
