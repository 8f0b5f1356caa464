"""What each part of a running service is doing: progress, backlog, errors, crashes.

Every loop of the service reports here (the supervisor, hazardwatch/supervisor.py, owns the
loops; the stages only report). `/readyz` shows the lot, so that nothing fails silently:

- `failed`: the loop crashed and waits to be started again, or a fault of its own (its disk
  is full) stops it;
- `stuck`: work waits and the loop has made no progress for `stall_after_s` (a bug, a
  deadlock), or a call of its own has not returned for that long;
- `degraded`: its last attempt failed and it is retrying, or an outside system it depends
  on (`depends_on`: the time-series store, the SQL database, a webhook) does not answer — the
  outside system's trouble, which the service rides out;
- `ok` otherwise.

Any part that is stuck or failed makes the service unready; degraded parts do not.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class State(StrEnum):
    OK = "ok"
    DEGRADED = "degraded"
    STUCK = "stuck"
    FAILED = "failed"


@dataclass
class Component:
    """One loop's report card; its methods are safe to call from any thread."""

    name: str
    depends_on: str | None = None  # an outside system: its outage degrades, never sticks
    stall_after_s: float = 30.0
    backlog: Callable[[], int] | None = None  # work waiting; None: never any
    clock: Callable[[], float] = time.monotonic
    last_progress: float = field(default=0.0)
    error: str | None = None
    busy_since: float | None = None
    crashed: str | None = None
    crashes: int = 0
    broken: str | None = None  # a fault of its own that stops it (disk full, I/O error)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.last_progress = self.clock()

    def progress(self) -> None:
        """Work was done (or the loop went round with nothing to do)."""
        with self._lock:
            self.last_progress = self.clock()
            self.error = None
            self.crashed = None
            self.broken = None

    def busy(self) -> None:
        """A blocking call begins (a database write, a delivery)."""
        with self._lock:
            self.busy_since = self.clock()

    def idle(self) -> None:
        """The blocking call has returned."""
        with self._lock:
            self.busy_since = None

    def failing(self, reason: str) -> None:
        """An attempt failed; the loop retries."""
        with self._lock:
            self.error = _short(reason)
            self.busy_since = None

    def fault(self, reason: str) -> None:
        """It cannot go on until something of its own is fixed (its disk): it is failed."""
        with self._lock:
            self.broken = _short(reason)

    def crash(self, reason: str) -> None:
        """The loop died; the supervisor starts it again (or stops the service)."""
        with self._lock:
            self.crashed = _short(reason)
            self.crashes += 1
            self.busy_since = None

    def waiting(self) -> int:
        """How much work waits for this loop."""
        return max(0, self.backlog()) if self.backlog is not None else 0

    def state(self) -> tuple[State, str | None]:
        """The state now, and why."""
        now = self.clock()
        with self._lock:
            crashed, error, busy_since = self.crashed or self.broken, self.error, self.busy_since
            quiet = now - self.last_progress
        if crashed is not None:
            return State.FAILED, crashed
        if busy_since is not None and now - busy_since > self.stall_after_s:
            what = self.depends_on or "its own call"
            reason = f"{what} has not answered for {now - busy_since:.0f} s"
            return (State.DEGRADED if self.depends_on else State.STUCK), reason
        stalled = quiet > self.stall_after_s and self.waiting() > 0
        if stalled and (error is None or self.depends_on is None):
            # Retrying for ever something of its own (a bug, a bad record) is stuck too.
            why = f"; last: {error}" if error else ""
            return State.STUCK, f"no progress for {quiet:.0f} s while {self.waiting()} wait{why}"
        if error is not None:
            return State.DEGRADED, error
        return State.OK, None

    def report(self) -> dict[str, Any]:
        """What /readyz shows of it."""
        state, reason = self.state()
        shown: dict[str, Any] = {
            "state": state.value,
            "last_progress_s": round(self.clock() - self.last_progress, 3),
            "backlog": self.waiting(),
        }
        if reason:
            shown["reason"] = reason
        if self.crashes:
            shown["crashes"] = self.crashes
        if self.depends_on:
            shown["depends_on"] = self.depends_on
        return shown


class Health:
    """Every component of one service."""

    def __init__(self) -> None:
        self._components: dict[str, Component] = {}
        self._lock = threading.Lock()

    def component(self, name: str, **options: Any) -> Component:
        """The component called `name`, registered on first use."""
        with self._lock:
            found = self._components.get(name)
            if found is None:
                found = self._components[name] = Component(name, **options)
            return found

    def add(self, component: Component) -> Component:
        """Register a component made elsewhere (a stage's own report card)."""
        with self._lock:
            if component.name in self._components:
                raise ValueError(f"component {component.name!r} is there already")
            self._components[component.name] = component
        return component

    def get(self, name: str) -> Component | None:
        """A registered component, if any."""
        with self._lock:
            return self._components.get(name)

    def components(self) -> list[Component]:
        """All, by name."""
        with self._lock:
            return sorted(self._components.values(), key=lambda c: c.name)

    def report(self) -> tuple[bool, str, dict[str, dict[str, Any]]]:
        """(ready, overall status, each component's report)."""
        reports = {c.name: c.report() for c in self.components()}
        states = {r["state"] for r in reports.values()}
        if states & {State.STUCK, State.FAILED}:
            return False, "unready", reports
        return True, "degraded" if State.DEGRADED in states else "ok", reports


@dataclass(frozen=True)
class TaskSpec:
    """A loop a stage needs run: its name, its body, how it is judged (Component's options)."""

    name: str
    body: Callable[[Component], Coroutine[Any, Any, None]]
    fatal: bool = False  # a crash stops the service instead of a restart
    depends_on: str | None = None
    stall_after_s: float = 30.0

    def options(self) -> dict[str, Any]:
        """The Component options."""
        return {
            "depends_on": self.depends_on,
            "stall_after_s": self.stall_after_s,
        }


def _short(reason: str) -> str:
    """The first line, cut: /readyz is unauthenticated, and a driver's message can go on with
    the statement and its parameters."""
    lines = reason.splitlines()
    return (lines[0] if lines else "")[:300]
