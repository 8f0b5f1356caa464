"""Real Mosquitto, InfluxDB 1.x and PostgreSQL servers for integration tests.

Each server is a child process on a free 127.0.0.1 port with its files in a work dir.
Started servers are registered and ended by an ``atexit`` hook, and each child gets a
signal from the kernel when its parent dies, so not even a killed run leaves one behind.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self
from urllib.parse import quote

import httpx
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

HOST = "127.0.0.1"
# The Debian package that ships each binary, named in skip and fail messages.
DEBIAN_PACKAGES: dict[str, tuple[str, ...]] = {
    "mosquitto": ("mosquitto", "mosquitto_passwd"),
    "mosquitto-clients": ("mosquitto_pub", "mosquitto_sub"),
    "influxdb": ("influxd",),
    "postgresql-15": ("postgres", "initdb", "pg_ctl", "psql"),
    "util-linux": ("setpriv",),
    "chromium": ("chromium",),
}
# Debian keeps PostgreSQL's server binaries off PATH, one directory per major version.
_PG_LIB = Path("/usr/lib/postgresql")


class MissingBinaryError(FileNotFoundError):
    """A server binary is not installed; ``package`` is the Debian package to install."""

    def __init__(self, name: str) -> None:
        base = Path(name).name
        self.binary = name
        self.package = next((p for p, b in DEBIAN_PACKAGES.items() if base in b), None)
        hint = f"apt-get install {self.package}" if self.package else "install it"
        super().__init__(f"{name!r} not found: {hint}")


def find_binary(name_or_path: str) -> str:
    """Return a binary's path, looking on PATH and in Debian's PostgreSQL dirs."""
    if os.sep in name_or_path:
        found = name_or_path if os.access(name_or_path, os.X_OK) else None
    else:
        pg = sorted(_PG_LIB.glob(f"*/bin/{name_or_path}"), key=lambda p: int(p.parts[-3]))
        found = shutil.which(name_or_path) or (str(pg[-1]) if pg else None)
    if found is None:
        raise MissingBinaryError(name_or_path)
    return found


def require_binary(name_or_path: str) -> str:
    """Return a binary's path; if it is missing, fail when ``$CI`` is set, else skip."""
    import pytest  # tests only: keeps this module importable without pytest

    try:
        return find_binary(name_or_path)
    except MissingBinaryError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc}; CI is set, so a missing server fails", pytrace=False)
        pytest.skip(str(exc))


_handed_out: set[int] = set()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free and not yet handed out in this run."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port: int = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def _child_prefix(death_signal: signal.Signals, user: str | None) -> list[str]:
    """``setpriv`` arguments: become ``user``; get ``death_signal`` if the parent dies."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        if user:
            raise MissingBinaryError("setpriv")
        return []
    prefix = [setpriv]
    if user:
        prefix += [f"--reuid={user}", f"--regid={user}", "--clear-groups"]
    # The kernel sends the signal when the thread that started the child ends, so a server
    # started from a worker thread (asyncio.to_thread) would die with it: main thread only.
    # setpriv sets it after the uid change, which would clear it.
    if threading.current_thread() is threading.main_thread():
        prefix.append(f"--pdeathsig={death_signal.name.removeprefix('SIG')}")
    return [*prefix, "--"]


def _listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` has a TCP socket listening on ``port`` (Linux ``/proc``)."""
    proc = Path(f"/proc/{pid}")
    if not Path("/proc/self/net/tcp").exists():
        return True  # no /proc: trust the readiness probe alone
    sockets: set[str] = set()
    for fd in proc.joinpath("fd").glob("*"):
        with contextlib.suppress(OSError):  # fds come and go while we look
            sockets.add(str(fd.readlink()))
    with contextlib.suppress(OSError):
        for line in proc.joinpath("net/tcp").read_text().splitlines()[1:]:
            local, state, inode = (line.split()[i] for i in (1, 3, 9))
            listening = state == "0A"  # TCP_LISTEN
            if listening and int(local.rsplit(":", 1)[1], 16) == port:
                return f"socket:[{inode}]" in sockets
    return False


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"<no {path.name}>"


class ServerProcess:
    """A server child process with start/stop/kill/restart on a fixed port."""

    name: ClassVar[str] = "server"
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    # Sent at exit and if the test process dies: must end the server promptly.
    emergency_signal: ClassVar[signal.Signals] = signal.SIGKILL
    start_timeout: ClassVar[float] = 10.0
    _live: ClassVar[set[ServerProcess]] = set()
    _stray_dirs: ClassVar[set[Path]] = set()  # removed at exit, after the servers

    def __init__(self, workdir: Path | str, port: int | None = None) -> None:
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port if port is not None else free_port()
        self.output_path = self.workdir / f"{self.name}.out"
        self._proc: subprocess.Popen[bytes] | None = None
        self._cwd = self.workdir
        self._run_as: str | None = None  # the user to run as when started as root

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _is_ready(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def _log_paths(self) -> list[Path]:
        return [self.output_path]

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        """Start the server and wait until it serves; raise with its log tail if not."""
        if self.running:
            return self
        with self.output_path.open("ab") as out:
            self._proc = subprocess.Popen(
                [*_child_prefix(self.emergency_signal, self._run_as), *self._command()],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self._cwd,
            )
        ServerProcess._live.add(self)
        deadline = time.monotonic() + self.start_timeout
        # Another process may have taken the port since free_port(): then the probe would
        # reach that one, so also check that the port is ours.
        while not (_listens(self._proc.pid, self.port) and self._is_ready()):
            if self._proc.poll() is not None:
                self._fail(f"exited with status {self._proc.returncode} while starting")
            if time.monotonic() > deadline:
                self.kill()
                self._fail(f"was not ready after {self.start_timeout:.0f} s")
            time.sleep(0.05)
        return self

    def _fail(self, what: str) -> None:
        ServerProcess._live.discard(self)
        logs = "\n".join(f"--- {p} ---\n{_tail(p)}" for p in self._log_paths())
        raise RuntimeError(f"{self.name} on port {self.port} {what}\n{logs}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully, so the server saves its state; kill it after ``timeout``."""
        self._end(self.stop_signal, timeout)

    def kill(self) -> None:
        """Kill the server with SIGKILL, saving nothing, like a crash."""
        self._end(signal.SIGKILL, 10.0)

    def restart(self) -> Self:
        """Stop gracefully and start again on the same port with the same files."""
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        """Stop the server and remove any files it keeps outside ``workdir``."""
        self.stop()

    def _end(self, sig: signal.Signals, timeout: float) -> None:
        proc, self._proc = self._proc, None
        ServerProcess._live.discard(self)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    @classmethod
    def stop_all(cls) -> None:
        """End every server still running and remove stray dirs; runs at exit."""
        for server in list(cls._live):
            server._end(server.emergency_signal, 5.0)
        for path in list(cls._stray_dirs):
            shutil.rmtree(path, ignore_errors=True)
        cls._stray_dirs.clear()


atexit.register(ServerProcess.stop_all)


class Mosquitto(ServerProcess):
    """A Mosquitto 2.x broker on 127.0.0.1 with its persistence and log in ``workdir``."""

    name = "mosquitto"

    def __init__(
        self,
        workdir: Path | str,
        port: int | None = None,
        *,
        users: dict[str, str] | None = None,
        acl: str | None = None,
        max_inflight: int | None = None,
        persistence: bool = True,
        max_queued: int = 1_000_000,
    ) -> None:
        super().__init__(workdir, port)
        self.binary = find_binary("mosquitto")
        self.users = dict(users or {})
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        lines = [
            f"listener {self.port} {HOST}",
            f"allow_anonymous {str(not self.users).lower()}",
            f"persistence {str(persistence).lower()}",
            f"persistence_location {self.workdir}",
            f"log_dest file {self.log_path}",
        ]
        # One type per line: mosquitto 2.0.11 reads only the first word of a log_type line.
        lines += [f"log_type {t}" for t in ("error", "warning", "notice", "information")]
        lines += ["log_type subscribe", "log_type unsubscribe"]
        if os.geteuid() == 0:
            # As root, mosquitto 2 switches to user "mosquitto", who cannot write into a
            # root-only temp dir: it would run with no log and fail to save its state.
            lines.append("user root")
        if self.users:
            lines.append(f"password_file {self._write_password_file()}")
        if acl is not None:
            (self.workdir / "acl").write_text(acl)
            lines.append(f"acl_file {self.workdir / 'acl'}")
        if max_inflight is not None:
            lines.append(f"max_inflight_messages {max_inflight}")
        # As in deploy/mosquitto/mosquitto.conf: the default of 1000 queued messages per client
        # makes Mosquitto drop QoS 1 messages while a late-acknowledging subscriber catches up.
        lines.append(f"max_queued_messages {max_queued}")
        self.config_path.write_text("\n".join(lines) + "\n")

    def _write_password_file(self) -> Path:
        passwd, path = find_binary("mosquitto_passwd"), self.workdir / "passwd"
        for i, (user, password) in enumerate(self.users.items()):
            create = ["-c"] if i == 0 else []  # -c truncates: only for the first user
            cmd = [passwd, *create, "-b", str(path), user, password]
            subprocess.run(cmd, check=True, capture_output=True)
        return path

    def _command(self) -> list[str]:
        return [self.binary, "-c", str(self.config_path)]

    def _log_paths(self) -> list[Path]:
        return [self.output_path, self.log_path]

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:PORT``."""
        return f"mqtt://{HOST}:{self.port}"

    def url_for(self, user: str, password: str) -> str:
        """``mqtt://user:password@127.0.0.1:PORT``, both parts percent-encoded."""
        credentials = f"{quote(user, safe='')}:{quote(password, safe='')}"
        return f"mqtt://{credentials}@{HOST}:{self.port}"


_INFLUXDB_CONFIG = """\
reporting-disabled = true
bind-address = "{host}:{rpc_port}"
[meta]
  dir = "{workdir}/meta"
  logging-enabled = false
[data]
  dir = "{workdir}/data"
  wal-dir = "{workdir}/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  bind-address = "{host}:{port}"
  log-enabled = false
  pprof-enabled = false
  max-row-limit = 0
[logging]
  level = "warn"
  suppress-logo = true
[continuous_queries]
  log-enabled = false
"""


def quote_ident(name: str) -> str:
    """Quote an InfluxQL identifier."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class MosquittoFactory(Protocol):
    """The ``mosquitto_factory`` fixture: starts an extra broker, stopped after the test."""

    def __call__(
        self,
        *,
        users: dict[str, str] | None = None,
        acl: str | None = None,
        max_inflight: int | None = None,
        persistence: bool = True,
    ) -> Mosquitto: ...


class InfluxDB1(ServerProcess):
    """An InfluxDB 1.x ``influxd`` with its meta, data and WAL dirs in ``workdir``."""

    name = "influxd"

    def __init__(self, workdir: Path | str, port: int | None = None) -> None:
        super().__init__(workdir, port)
        self.binary = find_binary("influxd")
        self.rpc_port = free_port()  # backup/restore RPC; its default 8088 may be taken
        self.config_path = self.workdir / "influxdb.conf"
        self.config_path.write_text(
            _INFLUXDB_CONFIG.format(
                host=HOST, port=self.port, rpc_port=self.rpc_port, workdir=self.workdir
            )
        )

    def _command(self) -> list[str]:
        return [self.binary, "run", "-config", str(self.config_path)]

    def _is_ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/ping", timeout=0.5).status_code == 204
        except httpx.HTTPError:
            return False

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{HOST}:{self.port}"

    def query(self, q: str, db: str | None = None) -> dict[str, Any]:
        """Run InfluxQL with ``epoch=ms``; raise if any statement fails."""
        params = {"q": q, "epoch": "ms", **({"db": db} if db else {})}
        # InfluxDB 1.x deprecates statements that change anything in a GET.
        read_only = q.lstrip().upper().startswith(("SELECT", "SHOW"))
        url = f"{self.url}/query"
        response = httpx.request("GET" if read_only else "POST", url, params=params)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        errors = [r["error"] for r in body.get("results", []) if "error" in r]
        if "error" in body or errors:
            raise RuntimeError(f"InfluxQL {q!r} failed: {body.get('error') or errors}")
        return body

    def create_database(self, name: str) -> None:
        """Create a database; a no-op if it exists."""
        self.query(f"CREATE DATABASE {quote_ident(name)}")

    def drop_database(self, name: str) -> None:
        """Drop a database with all its data."""
        self.query(f"DROP DATABASE {quote_ident(name)}")

    def write(self, db: str, lines: str | list[str], precision: str = "ms") -> None:
        """Write line protocol to ``db``; raise unless InfluxDB answers 204."""
        body = lines if isinstance(lines, str) else "\n".join(lines)
        params = {"db": db, "precision": precision}
        response = httpx.post(f"{self.url}/write", params=params, content=body.encode())
        if response.status_code != 204:
            raise RuntimeError(f"write to {db!r}: {response.status_code} {response.text}")

    def points(self, measurement: str, db: str) -> list[dict[str, Any]]:
        """All points of a measurement as column->value dicts, ``time`` in epoch ms."""
        body = self.query(f"SELECT * FROM {quote_ident(measurement)}", db=db)
        series = [s for r in body["results"] for s in r.get("series", [])]
        return [dict(zip(s["columns"], v, strict=True)) for s in series for v in s["values"]]

    def count(self, measurement: str, db: str) -> int:
        """The number of distinct points (series and time) in a measurement."""
        return len(self.points(measurement, db))


class Postgres(ServerProcess):
    """A PostgreSQL cluster on 127.0.0.1 with a database owned by a password user."""

    name = "postgres"
    stop_signal = signal.SIGINT  # "fast": SIGTERM ("smart") waits for clients to leave
    emergency_signal = signal.SIGQUIT  # "immediate": also ends the backends
    start_timeout = 30.0

    def __init__(
        self,
        workdir: Path | str,
        port: int | None = None,
        *,
        user: str = "hazardwatch",
        password: str = "hazardwatch",
        database: str = "hazardwatch",
    ) -> None:
        super().__init__(workdir, port)
        self.initdb, self.binary = find_binary("initdb"), find_binary("postgres")
        self.user, self.password, self.database = user, password, database
        self.rundir = self._cwd = self.workdir / "pg"
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root, and user "postgres" cannot enter pytest's
            # root-only temp dirs: keep the cluster in a dir of its own, owned by postgres.
            self._run_as = "postgres"
            self.rundir = self._cwd = Path(tempfile.mkdtemp(prefix="hazardwatch-pg-"))
            shutil.chown(self.rundir, "postgres", "postgres")
            ServerProcess._stray_dirs.add(self.rundir)
            (self.workdir / "pg").unlink(missing_ok=True)
            (self.workdir / "pg").symlink_to(self.rundir)
        self.rundir.mkdir(exist_ok=True)
        self.datadir = self.rundir / "data"
        self._provisioned = False

    def start(self) -> Self:
        """Create the cluster on first start, start it, then create user and database."""
        if not self.datadir.exists():
            self._run_initdb()
        super().start()
        if not self._provisioned:
            self._provision()
            self._provisioned = True
        return self

    def cleanup(self) -> None:
        """Stop the server and remove its cluster if it lives outside ``workdir``."""
        self.stop()
        if self.rundir in ServerProcess._stray_dirs:
            ServerProcess._stray_dirs.discard(self.rundir)
            shutil.rmtree(self.rundir, ignore_errors=True)

    def pause(self) -> None:
        """Stop the postmaster and every backend with SIGSTOP: a database that hangs (a stalled
        disk on its host). Connections stay open; nothing answers."""
        for pid in self._processes():
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT what `pause` stopped."""
        for pid in self._processes():
            os.kill(pid, signal.SIGCONT)

    def _processes(self) -> list[int]:
        """The postmaster and its children (backends, background workers)."""
        assert self._proc is not None, "not running"
        postmaster = self._proc.pid
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                # "pid (comm) state ppid …": comm may hold spaces, so split after its ")"
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == postmaster:
                    children.append(int(stat.parent.name))
        return [postmaster, *children]

    def _run_initdb(self) -> None:
        cmd = [self.initdb, "-D", str(self.datadir), "-U", "postgres", "--no-sync"]
        cmd += ["--auth-local=trust", "--auth-host=scram-sha-256"]
        cmd += ["--encoding=UTF8", "--locale=C"]
        cmd = [*_child_prefix(signal.SIGKILL, self._run_as), *cmd]
        with self.output_path.open("ab") as out:
            done = subprocess.run(
                cmd, check=False, stdout=out, stderr=subprocess.STDOUT, cwd=self._cwd
            )
        if done.returncode != 0:
            self._fail(f"initdb exited with status {done.returncode}")

    def _command(self) -> list[str]:
        settings = [
            f"listen_addresses={HOST}",
            f"unix_socket_directories={self.rundir}",
            "fsync=off",  # throw-away test data: speed over durability
            "full_page_writes=off",
            "synchronous_commit=off",
            "max_connections=200",
        ]
        cmd = [self.binary, "-D", str(self.datadir), "-p", str(self.port)]
        return cmd + [arg for setting in settings for arg in ("-c", setting)]

    def _admin_connection(self) -> psycopg.Connection[Any]:
        # Over the unix socket, where initdb's "trust" lets the superuser in.
        conninfo = make_conninfo(host=str(self.rundir), port=self.port, dbname="postgres")
        return psycopg.connect(conninfo, user="postgres", connect_timeout=2, autocommit=True)

    def _is_ready(self) -> bool:
        try:
            with self._admin_connection():
                return True
        except psycopg.OperationalError:
            return False

    def _provision(self) -> None:
        user, db = sql.Identifier(self.user), sql.Identifier(self.database)
        with self._admin_connection() as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(user, sql.Literal(self.password))
            )
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(db, user))

    def create_database(self, name: str) -> str:
        """A new empty database owned by the user; its SQLAlchemy URL."""
        with self._admin_connection() as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(self.user)
                )
            )
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    @property
    def dsn(self) -> str:
        """A libpq URI, for ``psycopg.connect``."""
        credentials = f"{quote(self.user, safe='')}:{quote(self.password, safe='')}"
        return f"postgresql://{credentials}@{HOST}:{self.port}/{self.database}"

    @property
    def url(self) -> str:
        """A SQLAlchemy URL with the psycopg 3 driver."""
        return self.dsn.replace("postgresql://", "postgresql+psycopg://", 1)
