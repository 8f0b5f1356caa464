"""`hazardwatch run` as a child process, and a client of its API and live stream."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.integration.mqtt_tools import wait_until
from tests.servers import free_port

TOKEN = "t" * 32


class ServiceProcess:
    """One `hazardwatch run`, its log in `tmp_path/service.log` (kept over restarts).

    `env` holds HAZARDWATCH_* settings; the data dir, API port and admin token are set here.
    `restart()` starts a new process with the same settings, data and port.
    """

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.log_path = tmp_path / "service.log"
        self.port = free_port()
        self.env = {
            **os.environ,
            "HAZARDWATCH_DATA_DIR": str(tmp_path / "data"),
            "HAZARDWATCH_API_PORT": str(self.port),
            "HAZARDWATCH_ADMIN_TOKEN": TOKEN,
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def add_user(self, name: str, role: str, *scope: str, password: str | None = None) -> str:
        """`hazardwatch user add`; the new user's token. `scope`: --institution/--town pairs.
        With `password`, the user logs in with it too."""
        if password is None:
            out = self.hazardwatch("user", "add", name, "--role", role, *scope)
        else:
            out = self.hazardwatch(
                "user",
                "add",
                name,
                "--role",
                role,
                *scope,
                "--password-stdin",
                "--token",
                stdin=f"{password}\n",
            )
        return out.rsplit("bearer token: ", 1)[1].strip()

    def hazardwatch(self, *args: str, stdin: str | None = None) -> str:
        """Run another verb with the same settings (e.g. `registry import`); its output."""
        done = subprocess.run(
            [sys.executable, "-m", "hazardwatch", *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def start(self, *verb: str) -> ServiceProcess:
        """Start `hazardwatch run` (or the verb and options given, e.g. `demo …`) and wait
        until /readyz answers 200."""
        command = [sys.executable, "-m", "hazardwatch", *(verb or ("run",))]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=log)
        wait_until(self.ready, timeout=60, what="the service to be ready")
        return self

    def ready(self) -> bool:
        """True once /readyz says broker, store and database are reachable."""
        assert self.process is not None and self.process.poll() is None, self.log_tail()
        try:
            return httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> int:
        """SIGTERM, as an init system would; the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise

    def kill(self) -> None:
        """SIGKILL: a crash."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def close(self) -> None:
        """Stop the process if it still runs (after a failed test)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the service's log, for assertion messages."""
        return self.log_path.read_text(errors="replace")[-chars:]

    @property
    def base(self) -> str:
        """The API's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def api(self, method: str, path: str, token: str = TOKEN, **kwargs: Any) -> httpx.Response:
        """A request to the API with the admin token, or another."""
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.request(method, f"{self.base}{path}", headers=headers, timeout=10, **kwargs)

    def alerts(self, **params: str) -> list[dict[str, Any]]:
        """GET /api/v1/alerts with these filters."""
        response = self.api("GET", "/api/v1/alerts", params=params)
        assert response.status_code == 200, response.text
        body: list[dict[str, Any]] = response.json()
        return body


class StreamReader:
    """Reads GET /api/v1/stream in a thread; keeps every event with the time it arrived.

    With `resume`, it behaves as a browser's EventSource: when the stream ends (the service
    stops or crashes) it connects again, sending the id of the last event it got as
    Last-Event-ID, for as long as it is not closed.
    """

    def __init__(
        self,
        service: ServiceProcess,
        token: str = TOKEN,
        *,
        resume: bool = False,
        last_event_id: int | None = None,
    ) -> None:
        self.events: list[tuple[float, str, dict[str, Any]]] = []  # (monotonic, event, body)
        self.ids: list[int] = []  # the event ids, in the order received
        self.connections = 0
        self.last_event_id = last_event_id
        self._service = service
        self._token = token
        self._resume = resume
        self._connected = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="sse-reader", daemon=True)
        self._thread.start()
        assert self._connected.wait(10), "the stream did not open"

    def _run(self) -> None:
        while not self._closing:
            try:
                self._read_once()
            except (httpx.HTTPError, AssertionError):
                if not self._resume:
                    if self._closing:
                        return
                    raise
            if not self._resume:
                return
            time.sleep(0.2)  # EventSource waits `retry` ms; the test need not wait 2 s

    def _read_once(self) -> None:
        headers = {"Authorization": f"Bearer {self._token}"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = str(self.last_event_id)
        url = f"{self._service.base}/api/v1/stream"
        with (
            httpx.Client(timeout=httpx.Timeout(10, read=None)) as client,
            client.stream("GET", url, headers=headers) as response,
        ):
            assert response.status_code == 200
            self.connections += 1
            self._connected.set()
            event, data, event_id = "message", "", None
            for line in response.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data += line[5:].strip()
                elif line.startswith("id:"):
                    event_id = int(line[3:].strip())
                elif not line and data:
                    self.events.append((time.monotonic(), event, json.loads(data)))
                    if event_id is not None:
                        self.ids.append(event_id)
                        self.last_event_id = event_id
                    event, data, event_id = "message", "", None

    def alert_changes(self) -> list[dict[str, Any]]:
        """The bodies of the `alert` events so far."""
        return self.bodies("alert")

    def bodies(self, kind: str) -> list[dict[str, Any]]:
        """The bodies of the events of a kind (`alert`, `ticket`) so far."""
        return [body for _, event, body in list(self.events) if event == kind]

    def wait_for(
        self,
        matches: Callable[[dict[str, Any]], bool],
        what: str,
        timeout: float = 15.0,
        kind: str = "alert",
    ) -> dict[str, Any]:
        """The first event body of `kind` that `matches`, waiting for it."""
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [body for body in self.bodies(kind) if matches(body)]
            return bool(found)

        wait_until(seen, timeout, what)
        return found[0]

    def close(self) -> None:
        """Stop reading (the service's shutdown also ends the stream)."""
        self._closing = True


def ticket_of(alert_id: str, action: str = "opened") -> Callable[[dict[str, Any]], bool]:
    """A matcher for a ticket event: this action, about this alert (opened, attached)."""

    def matches(body: dict[str, Any]) -> bool:
        return body["action"] == action and body.get("alert_id") == alert_id

    return matches


def change(action: str, kind: str, device: str | None = None) -> Callable[[dict[str, Any]], bool]:
    """A matcher for an alert event: this action on an alert of this kind (and device)."""

    def matches(body: dict[str, Any]) -> bool:
        alert = body["alert"]
        return (
            body["action"] == action
            and alert["kind"] == kind
            and (device is None or alert["device"] == device)
        )

    return matches
