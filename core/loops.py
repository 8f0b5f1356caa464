"""The one loop of every periodic task: work in a worker thread, report, wait, again.

A failure is the outside system's more often than ours (the database away, the disk full):
it is reported (the component is degraded, the reason in /readyz and one log line) and tried
again with back-off, never a crash. A bug shows the same way, with its traceback logged once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from core.errors import HazardwatchError
from core.health import Component
from core.retry import Backoff

log = logging.getLogger(__name__)


async def repeat(
    component: Component,
    work: Callable[[], object],
    *,
    every_s: float,
    wake: asyncio.Event | None = None,
    backoff: Backoff | None = None,
) -> None:
    """Run `work` every `every_s` (sooner when `wake` is set; at once again when it returns
    True: more to do), until cancelled."""
    backoff = backoff or Backoff(first=1.0, most=30.0)
    while True:
        if wake is not None:
            wake.clear()
        component.busy()
        try:
            more = await asyncio.to_thread(work)
        except Exception as exc:  # noqa: BLE001 - reported, and tried again after a back-off
            delay = backoff.next()
            log_failure(component.name, exc, backoff.attempts, delay)
            component.failing(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(delay)
            continue
        finally:
            component.idle()
        backoff.reset()
        component.progress()
        if more is True:
            continue
        if wake is None:
            await asyncio.sleep(every_s)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), every_s)


def log_failure(
    what: str, exc: BaseException, attempt: int, delay: float, position: int | None = None
) -> None:
    """One line for a failed attempt: the first, then every tenth (not a line a second)."""
    if attempt != 1 and attempt % 10 != 0:
        return
    where = f" after position {position}" if position is not None else ""
    log.error(
        "%s failed%s (attempt %d): %s: %s; retrying in %.1f s",
        what,
        where,
        attempt,
        type(exc).__name__,
        str(exc).splitlines()[0][:300] if str(exc) else "",
        delay,
        exc_info=attempt == 1 and not _outside(exc),
    )


# Failures of the systems a task talks to: a line in the log says it all. Anything else
# is a bug of ours and is logged with its traceback.
_OUTSIDE_LIBRARIES = ("httpx", "httpcore", "sqlalchemy", "psycopg", "aiomqtt", "paho")


def _outside(exc: BaseException) -> bool:
    if isinstance(exc, OSError | HazardwatchError):
        return True
    return type(exc).__module__.split(".", 1)[0] in _OUTSIDE_LIBRARIES
