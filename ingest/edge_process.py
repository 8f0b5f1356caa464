"""The service's side of the receive edge: starts it, listens to it, restarts it if it dies.

A task of the service (hazardwatch/supervisor.py) runs the child process; a thread of its own
reads the status lines, on which the digester thread waits.

The edge process (ingest/edge.py) owns the MQTT session and the raw spool; this object owns
the edge process and offers the raw spool to readers (`SpoolSource`): which records are
durable, and which segments are on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from core.health import Component
from core.journal import SUFFIX, list_segments, segment_name
from core.retry import Backoff
from core.settings import MqttEndpoint
from ingest.edge import RECEIVE_MAXIMUM, EdgeConfig
from ingest.metrics import IngestMetrics

log = logging.getLogger(__name__)

RESTART_MIN_S = 0.5
RESTART_MAX_S = 30.0
STOP_TIMEOUT_S = 15.0
# Where `python -m ingest.edge` finds the package (resolved once, off the event loop).
_PROJECT = Path(__file__).resolve().parents[1]


class EdgeProcess:
    """Runs `python -m ingest.edge` as a child process, from an asyncio task."""

    def __init__(
        self,
        endpoint: MqttEndpoint,
        *,
        spool_dir: Path,
        client_id: str,
        topics: list[str],
        metrics: IngestMetrics,
        mqtt5: bool = True,
        receive_maximum: int | None = RECEIVE_MAXIMUM,
        spool_max_bytes: int | None = None,
    ) -> None:
        self.directory = spool_dir
        self.connected = threading.Event()
        self._metrics = metrics
        spool_dir.mkdir(parents=True, exist_ok=True)
        self._config = EdgeConfig(
            host=endpoint.host,
            port=endpoint.port,
            username=endpoint.username,
            password=endpoint.password.get_secret_value() if endpoint.password else None,
            tls=endpoint.tls,
            client_id=client_id,
            topics=topics,
            spool_dir=str(spool_dir),
            mqtt5=mqtt5,
            receive_maximum=receive_maximum,
            log_level=logging.getLevelName(logging.getLogger().getEffectiveLevel()),
            spool_max_bytes=spool_max_bytes,
        )
        self._committed = 0
        self._reported = False
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-status")
        self._component: Component | None = None
        self.restarts = 0
        self.fault: str | None = None  # why the edge cannot make messages durable, if it cannot

    # -- the raw spool, as readers see it ------------------------------------------------

    @property
    def committed_lsn(self) -> int:
        """The LSN of the last raw record the edge has made durable."""
        return self._committed

    def segments(self) -> list[int]:
        """First LSNs of the raw spool's segments, oldest first."""
        return list_segments(self.directory)

    def wait_beyond(self, lsn: int, timeout: float) -> bool:
        """Block until a raw record after `lsn` is durable, or the timeout passes."""
        with self._changed:
            return self._changed.wait_for(lambda: self._committed > lsn, timeout)

    def release_through(self, lsn: int) -> None:
        """Delete raw segments whose records are all at or before `lsn` (never the last)."""
        segments = self.segments()
        for first, following in itertools.pairwise(segments):
            if following - 1 > lsn:
                break
            (self.directory / segment_name(first)).unlink(missing_ok=True)

    def size_bytes(self) -> int:
        """Bytes of the raw spool on disk."""
        total = 0
        for path in self.directory.glob(f"*{SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):  # released meanwhile
                total += path.stat().st_size
        return total

    # -- the process ---------------------------------------------------------------------

    async def run(self, component: Component) -> None:
        """Run the edge; start it again after a crash (with back-off); until stopped."""
        backoff = Backoff(first=RESTART_MIN_S, most=RESTART_MAX_S)
        self._component = component
        while not self._stopping.is_set():
            started = time.monotonic()
            code = await self._run_once()
            self.connected.clear()
            if self._stopping.is_set():
                return
            self.restarts += 1
            if time.monotonic() - started > 60:
                backoff.reset()
            delay = backoff.next()
            component.crash(f"the edge process exited with {code}")
            log.error("edge process exited with %s; starting it again in %.1f s", code, delay)
            await asyncio.sleep(delay)

    async def stop(self) -> None:
        """Ask the edge to finish its group and disconnect; wait for it."""
        self._stopping.set()
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.to_thread(self._wait_or_kill, process)
        self.connected.clear()

    def close(self) -> None:
        """Release the status thread (after the edge has stopped)."""
        self._reader.shutdown(wait=True)

    def wait_connected(self, timeout: float) -> bool:
        """Block until the edge is connected and subscribed, or the timeout passes."""
        return self.connected.wait(timeout)

    async def _run_once(self) -> int | None:
        # The status lines are read by a thread of their own: the digester waits on them, and
        # an event loop busy for a few milliseconds (measured: p99 5-16 ms under 5,000 msg/s)
        # would add that to every message's way, alarms included.
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.shield(loop.run_in_executor(self._reader, self._follow))
        finally:
            process = self._process
            if process is not None and process.poll() is None:  # cancelled: must not outlive us
                process.send_signal(signal.SIGTERM)
                await asyncio.to_thread(self._wait_or_kill, process)

    def _follow(self) -> int | None:
        """Start the edge, relay its status lines until it ends; its exit code.

        Started from this long-lived thread: the edge asks to die with the thread that
        started it (PR_SET_PDEATHSIG), which must not be a pool's passing worker.
        """
        process = self._process = subprocess.Popen(
            [sys.executable, "-m", "ingest.edge"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=_PROJECT,
        )
        assert process.stdin is not None and process.stdout is not None
        with contextlib.suppress(BrokenPipeError):  # died at once: its exit code says why
            process.stdin.write(self._config.to_json().encode() + b"\n")
            process.stdin.flush()
        for line in process.stdout:
            self._status(line.decode().split())
        process.stdin.close()
        process.stdout.close()
        return self._wait_or_kill(process)

    def _wait_or_kill(self, process: subprocess.Popen[bytes]) -> int:
        try:
            return process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.error("edge process did not stop within %.0f s; killing it", STOP_TIMEOUT_S)
            process.kill()
            return process.wait()

    def _status(self, words: list[str]) -> None:
        match words:
            case ["lsn", lsn, group]:
                with self._changed:
                    self._committed = int(lsn)
                    self._reported = True
                    self._changed.notify_all()
                if int(group):
                    self.fault = None
                    self._metrics.commit_batch.set(int(group))
                    self._tell("progress")
            case ["fault", *reason]:  # the raw spool refused a group: nothing was acknowledged
                self.fault = " ".join(reason)
                self._tell("fault", f"the raw spool cannot be written: {self.fault}")
            case ["up"]:
                self.connected.set()
                self._tell("progress")
            case ["down"]:
                self.connected.clear()
                self._tell("failing", "lost the broker")
            case _:
                log.warning("edge process said %r", " ".join(words))

    def _tell(self, how: str, *reason: str) -> None:
        """Report to the task's component, if it runs under one."""
        if self._component is not None:
            getattr(self._component, how)(*reason)

    @property
    def pid(self) -> int | None:
        """The edge process's pid while it runs."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None
