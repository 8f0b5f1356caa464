"""Delivers the outbox: MQTT, InfluxDB and webhooks, each in order, retried until done."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from datetime import timedelta

import httpx

from alerts.notify import render
from alerts.store import AlertStore, Pending
from core.clock import Clock, SystemClock
from core.settings import Webhook

log = logging.getLogger(__name__)

Deliver = Callable[[Pending], None]
# Sent with every webhook delivery: the same number on a retry, so a receiver can drop a
# repeat (delivery is at least once: a crash after sending, before marking, sends again).
DELIVERY_HEADER = "X-Hazardwatch-Delivery"
WEBHOOK_TIMEOUT_S = 5.0
MAX_BACKOFF_S = 300.0
KEEP_DELIVERED = timedelta(days=7)  # delivered outbox rows are then deleted
PRUNE_EVERY = timedelta(hours=1)


class WebhookError(Exception):
    """The receiver did not take the notification."""


def webhook_sender(hook: Webhook, http: httpx.Client) -> Deliver:
    """A delivery function for one webhook."""

    def send(row: Pending) -> None:
        url, body = render(hook, row.payload)
        headers = {DELIVERY_HEADER: str(row.id)}
        response = http.post(url, json=body, headers=headers, timeout=WEBHOOK_TIMEOUT_S)
        if response.status_code >= 300:
            raise WebhookError(f"HTTP {response.status_code}: {response.text[:200]}")
        if hook.format != "generic":
            # WeCom and DingTalk answer 200 with {"errcode": N}; only 0 is success.
            errcode = response.json().get("errcode", 0)
            if errcode != 0:
                raise WebhookError(f"errcode {errcode}: {response.text[:200]}")

    return send


class Dispatcher:
    """A thread that works through the outbox; a failing target waits, the others go on."""

    def __init__(
        self, store: AlertStore, targets: dict[str, Deliver], clock: Clock | None = None
    ) -> None:
        self._store = store
        self._targets = targets
        self._clock = clock or SystemClock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.delivered = 0
        self.failures = 0
        self._next_prune = self._clock.now()

    def wake(self) -> None:
        """New rows are in the outbox."""
        self._wake.set()

    def start(self) -> None:
        """Start delivering."""
        self._thread = threading.Thread(target=self._loop, name="alert-dispatch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current delivery."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                while self.run_once() and not self._stop.is_set():
                    pass
            except Exception:  # the database may be down: try again on the next round
                log.exception("alert dispatch failed; retrying")
                self._stop.wait(2.0)

    def run_once_safely(self) -> None:
        """One last round at shutdown; failures stay in the outbox for the next start."""
        try:
            self.run_once()
        except Exception:  # the database may be gone: nothing is lost, rows wait
            log.exception("alert dispatch at shutdown failed")

    def run_once(self) -> bool:
        """Deliver what is due; True if there may be more."""
        now = self._clock.now()
        rows = self._store.due_deliveries(now)
        blocked = self._store.waiting_targets(now)  # a row of theirs waits for its retry
        done: list[int] = []
        for row in rows:
            if row.target in blocked:
                continue
            try:
                self._deliver(row)
            except Exception as exc:  # noqa: BLE001 - whatever failed, it is retried in order
                self._retry(row, exc)
                blocked.add(row.target)
                continue
            done.append(row.id)
        self._store.delivered(done, self._clock.now())
        self.delivered += len(done)
        if now >= self._next_prune:
            self._store.prune_delivered(now - KEEP_DELIVERED)
            self._next_prune = now + PRUNE_EVERY
        return len(rows) == 200 and bool(done)

    def _deliver(self, row: Pending) -> None:
        deliver = self._targets.get(row.target)
        if deliver is None:
            raise LookupError(f"no such target {row.target!r} (removed from the configuration?)")
        deliver(row)

    def _retry(self, row: Pending, exc: Exception) -> None:
        self.failures += 1
        delay = min(MAX_BACKOFF_S, 2.0 ** min(row.attempts, 12)) * random.uniform(0.8, 1.2)
        log.warning(
            "delivery %d of alert %s to %s failed (attempt %d): %s; retry in %.0f s",
            row.id,
            row.alert_id,
            row.target,
            row.attempts + 1,
            exc,
            delay,
        )
        self._store.failed(
            row.id, f"{type(exc).__name__}: {exc}", self._clock.now() + timedelta(seconds=delay)
        )
