"""WeCom and DingTalk robots: priority, merging and their rate limit, never losing a notice.

A robot takes 20 messages a minute (`[alerts] robot_messages_per_min`); more are refused, and
a burst of device faults sent one by one would queue a fire alarm behind it for minutes. So
each robot's output keeps the notices it has read but not sent in memory, and each turn sends:

1. fire, smoke, gas and CO notices first (`URGENT`), in log order, at once; only when more of
   them wait than the minute's messages left are those of one kind, action and institution
   merged into one message;
2. the others after a short hold (`robot_merge_window_s`, 30 s), so that a burst of one kind
   in one town (12 `device_offline`) goes as one message ("12 台设备离线:…", the first few and
   the count), group by group, the oldest first.

**Nothing lost, at least once.** The event log is the queue. The output's checkpoint is the
position before the oldest notice not yet sent (the *low-water mark*), never beyond it, so a
crash reads again every event whose notice had not gone. Notices sent ahead of it (an alarm
that overtook a held fault) are listed, by position, in a small file beside the checkpoints
(`{data_dir}/notices/{name}.sent`), written after each send and before the checkpoint moves,
and skipped when read again. A crash therefore repeats at most the one message in flight: sent,
but neither listed nor checkpointed. A robot that refuses keeps everything pending: the output
retries with back-off (core/consumers.py) and the notices merge meanwhile.

While notices wait, the checkpoint stays behind the events read, and the feeding loop gives
the same events again about once a second (at most `TURN_S` of waiting in a turn): that is this
output's clock. It also reads ahead in the log itself, so that an alarm is seen behind any
number of held notices.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from alerts.events import from_event
from alerts.notices import NoticeContext
from alerts.notify import InstitutionLookup, Message, alert_message, render, ticket_message, wants
from alerts.outputs import DELIVERY_HEADER, WEBHOOK_TIMEOUT_S, WebhookError
from core.consumers import Checkpointed
from core.eventlog import ALERT, TICKET, FileCheckpoints, LogEvent
from core.ports import EventLog
from core.settings import Webhook

log = logging.getLogger(__name__)

URGENT = frozenset({"fire_confirmed", "smoke_alarm", "gas_leak", "co_alarm"})
WINDOW_S = 60.0  # the robots' limit is per minute
TURN_S = 1.0  # longest wait for the next message within one call of handle
READ_AHEAD = 500
MOST_PENDING = 10_000  # beyond, reading ahead waits (memory); the log keeps the rest


@dataclass(slots=True)
class Pending:
    """A notice read and not yet sent."""

    position: int
    message: Message
    group: tuple[str, ...]
    urgent: bool
    since: float


@dataclass(slots=True)
class RateLimit:
    """At most `per_min` messages in any 60 s (a sliding window)."""

    per_min: int
    clock: Callable[[], float]
    _sent: deque[float] = field(default_factory=deque)

    def left(self) -> int:
        """Messages that may go now."""
        now = self.clock()
        while self._sent and self._sent[0] <= now - WINDOW_S:
            self._sent.popleft()
        return self.per_min - len(self._sent)

    def wait_s(self) -> float:
        """Seconds until the next message may go (0: now)."""
        return 0.0 if self.left() > 0 else self._sent[0] + WINDOW_S - self.clock()

    def take(self) -> None:
        """One message went."""
        self._sent.append(self.clock())


def group_of(message: Message) -> tuple[tuple[str, ...], bool]:
    """What it may merge with, and whether it overtakes the others."""
    body = message.body
    if "alert" in body:
        kind = body["alert"]["kind"]
        if kind in URGENT:
            return ("alert", kind, body["action"], body["alert"]["institution"]), True
        return ("alert", kind, body["action"], message.town or ""), False
    return ("ticket", body["action"], message.town or ""), False


class RobotQueue:
    """The notices of one robot not yet sent, and which to send next (no I/O)."""

    def __init__(self, per_min: int, merge_window_s: float, clock: Callable[[], float]) -> None:
        self.limit = RateLimit(per_min, clock)
        self._window_s = merge_window_s
        self._clock = clock
        self._pending: list[Pending] = []  # in log order

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, position: int, message: Message) -> None:
        """A notice to send."""
        group, urgent = group_of(message)
        self._pending.append(Pending(position, message, group, urgent, self._clock()))

    def low_water(self) -> int | None:
        """The position of the oldest notice not sent, if any."""
        return self._pending[0].position if self._pending else None

    def next(self) -> tuple[list[Pending], float]:
        """The notices to send as one message now, or none and the seconds to wait."""
        if not self._pending:
            return [], 0.0
        wait = self.limit.wait_s()
        if wait > 0:
            return [], wait
        urgent = [p for p in self._pending if p.urgent]
        if urgent:
            first = urgent[0]
            if len(urgent) <= self.limit.left():  # no pressure: each alarm its own message
                return [first], 0.0
            return [p for p in urgent if p.group == first.group], 0.0
        now = self._clock()
        due = [p for p in self._pending if p.since + self._window_s <= now]
        if not due:
            return [], min(p.since for p in self._pending) + self._window_s - now
        group = due[0].group
        return [p for p in self._pending if p.group == group], 0.0

    def sent(self, batch: Sequence[Pending]) -> None:
        """The batch went as one message."""
        self.limit.take()
        gone = {id(p) for p in batch}
        self._pending = [p for p in self._pending if id(p) not in gone]


class SentAhead:
    """Positions sent ahead of the checkpoint, in a file replaced atomically."""

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self._path = path
        self._fsync = fsync
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.positions: set[int] = set(json.loads(path.read_text()))
        except FileNotFoundError:
            self.positions = set()

    def save(self, positions: set[int], checkpoint: int) -> None:
        """Keep those beyond the checkpoint (the others will not be read again)."""
        kept = {p for p in positions if p > checkpoint}
        if kept == self.positions:
            return
        tmp = self._path.with_suffix(".tmp")
        with tmp.open("w") as handle:
            handle.write(json.dumps(sorted(kept)))
            handle.flush()
            if self._fsync:
                os.fsync(handle.fileno())
        tmp.replace(self._path)
        self.positions = kept


class RobotOutput(Checkpointed):
    """Delivers what one WeCom/DingTalk robot should hear of: urgent first, bursts merged,
    within its rate limit, at least once."""

    def __init__(
        self,
        hook: Webhook,
        http: httpx.Client,
        institutions: InstitutionLookup,
        events: EventLog,
        checkpoints: FileCheckpoints,
        *,
        state_dir: Path,
        per_min: int = 20,
        merge_window_s: float = 30.0,
        context: NoticeContext | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        fsync: bool = True,
    ) -> None:
        super().__init__(events, checkpoints)
        self.name = f"webhook:{hook.name}"
        self.hook = hook
        self._http = http
        self._institutions = institutions
        self._context = context or NoticeContext()
        self._clock, self._sleep = clock, sleep
        self.queue = RobotQueue(per_min, merge_window_s, clock)
        self._ahead = SentAhead(state_dir / f"{hook.name}.sent", fsync=fsync)
        self._read = -1  # the last position read into the queue
        self.delivered = 0  # messages

    def load(self) -> None:
        """The checkpoint; the queue is refilled from there."""
        super().load()
        self._read = self.position

    def handle(self, events: Sequence[LogEvent]) -> None:
        """Queue what is new, send what is due (waiting at most TURN_S), checkpoint."""
        if self._read < 0:
            self._read = self.position
        self._take(events)
        self._read_ahead()
        deadline = self._clock() + TURN_S
        try:
            while self.queue:
                batch, wait = self.queue.next()
                if batch:
                    self._send(batch)
                    continue
                left = deadline - self._clock()
                if left <= 0:
                    break
                self._sleep(min(wait, left))
        finally:
            self._checkpoint()

    def _take(self, events: Sequence[LogEvent]) -> None:
        for event in events:
            if event.position <= self._read:
                continue  # given again while notices wait: already queued or sent
            self._read = event.position
            if event.position in self._ahead.positions:
                continue  # sent before a restart
            message = self._message(event)
            if message is not None and wants(self.hook, message):
                self.queue.add(event.position, message)

    def _read_ahead(self) -> None:
        cursor = self._events.cursor(self._read)
        try:
            while len(self.queue) < MOST_PENDING:
                found = cursor.next_batch(READ_AHEAD)
                if not found:
                    break
                self._take(found)
        finally:
            cursor.close()

    def _message(self, event: LogEvent) -> Message | None:
        if event.kind == ALERT:
            return alert_message(from_event(event)[1], self._institutions)
        if event.kind == TICKET:
            return ticket_message(event.body(), self._institutions)
        return None

    def _send(self, batch: list[Pending]) -> None:
        bodies = [p.message.body for p in batch]
        url, payload = render(self.hook, bodies[0], context=self._context, more=bodies[1:])
        headers = {DELIVERY_HEADER: str(batch[0].position)}
        response = self._http.post(url, json=payload, headers=headers, timeout=WEBHOOK_TIMEOUT_S)
        if response.status_code >= 300:
            raise WebhookError(f"HTTP {response.status_code}: {response.text[:200]}")
        errcode = response.json().get("errcode", 0)  # 200 with {"errcode": N}; only 0 is success
        if errcode != 0:
            raise WebhookError(f"errcode {errcode}: {response.text[:200]}")
        self.queue.sent(batch)
        self.delivered += 1
        if len(batch) > 1:
            log.info("%s: %d notices sent as one message", self.name, len(batch))
        self._checkpoint(sent=[p.position for p in batch])

    def _checkpoint(self, sent: Sequence[int] = ()) -> None:
        low = self.queue.low_water()
        position = self._read if low is None else low - 1
        self._ahead.save(self._ahead.positions | set(sent), position)  # before the checkpoint
        self._save(position)


def robot_state_dir(data_dir: Path) -> Path:
    """Where robot outputs list what they sent ahead of their checkpoints."""
    return data_dir / "notices"
