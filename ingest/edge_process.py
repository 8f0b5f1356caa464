"""The service's side of the receive edge: starts it, listens to it, restarts it if it dies.

The edge process (ingest/edge.py) owns the MQTT session and the raw spool; this object owns
the edge process and offers the raw spool to readers (`SpoolSource`): which records are
durable, and which segments are on disk.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from core.journal import SUFFIX, list_segments, segment_name
from core.retry import Backoff
from core.settings import MqttEndpoint
from ingest.edge import RECEIVE_MAXIMUM, EdgeConfig
from ingest.metrics import IngestMetrics

log = logging.getLogger(__name__)

RESTART_MIN_S = 0.5
RESTART_MAX_S = 30.0
STOP_TIMEOUT_S = 15.0


class EdgeProcess:
    """Runs `python -m ingest.edge` under a supervising thread."""

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
        )
        self._committed = 0
        self._reported = False
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
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

    def start(self, timeout: float = 30.0) -> None:
        """Start the edge process and wait until it has reported its recovered LSN.

        Readers start after that: the first report says where the raw spool ends.
        """
        self._thread = threading.Thread(target=self._supervise, name="edge-supervisor")
        self._thread.start()
        with self._changed:
            if not self._changed.wait_for(lambda: self._reported, timeout):
                raise RuntimeError(f"the edge process did not start within {timeout:.0f} s")

    def stop(self) -> None:
        """Ask the edge to finish its group and disconnect; wait for it."""
        self._stopping.set()
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S + 5)
            self._thread = None
        self.connected.clear()

    def wait_connected(self, timeout: float) -> bool:
        """Block until the edge is connected and subscribed, or the timeout passes."""
        return self.connected.wait(timeout)

    def _supervise(self) -> None:
        """Start the edge, relay its status, start it again after a crash (with back-off)."""
        backoff = Backoff(first=RESTART_MIN_S, most=RESTART_MAX_S)
        while not self._stopping.is_set():
            started = time.monotonic()
            code = self._run_once()
            self.connected.clear()
            if self._stopping.is_set():
                return
            self.restarts += 1
            if time.monotonic() - started > 60:
                backoff.reset()
            delay = backoff.next()
            log.error("edge process exited with %s; starting it again in %.1f s", code, delay)
            if self._stopping.wait(delay):
                return

    def _run_once(self) -> int | None:
        process = subprocess.Popen(
            [sys.executable, "-m", "ingest.edge"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[1],
        )
        assert process.stdin is not None and process.stdout is not None
        with self._changed:
            self._process = process
            self._changed.notify_all()
        with contextlib.suppress(BrokenPipeError):  # died at once: its exit code says why
            process.stdin.write(self._config.to_json().encode() + b"\n")
            process.stdin.flush()
        for line in process.stdout:
            self._status(line.decode().split())
        try:
            return process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.error("edge process did not stop within %.0f s; killing it", STOP_TIMEOUT_S)
            process.kill()
            return process.wait()
        finally:
            process.stdin.close()
            process.stdout.close()

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
            case ["fault", *reason]:  # the raw spool refused a group: nothing was acknowledged
                self.fault = " ".join(reason)
            case ["up"]:
                self.connected.set()
            case ["down"]:
                self.connected.clear()
            case _:
                log.warning("edge process said %r", " ".join(words))

    @property
    def pid(self) -> int | None:
        """The edge process's pid while it runs."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None
