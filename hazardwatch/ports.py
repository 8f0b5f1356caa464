"""Listening ports: taken before anything starts, with one clear line when they cannot be."""

from __future__ import annotations

import errno
import socket

from core.errors import HazardwatchError


class PortInUseError(HazardwatchError):
    """A port the service must listen on is taken (or not ours to take)."""

    def __init__(self, message: str, port: int) -> None:
        super().__init__(message)
        self.port = port


def _address(host: str, port: int, what: str) -> tuple[socket.AddressFamily, tuple[str, int]]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise PortInUseError(f"{what}: cannot listen on {host!r}: {exc.strerror}", port) from None
    family, _, _, _, address = infos[0]
    return family, (str(address[0]), int(address[1]))


def bind(host: str, port: int, *, what: str, hint: str) -> socket.socket:
    """A socket bound to `host:port` (not yet listening); PortInUseError, with `hint` on what to
    do, when the port is taken."""
    family, address = _address(host, port, what)
    sock = socket.socket(family, socket.SOCK_STREAM)
    # As asyncio and uvicorn do: a port left in TIME_WAIT by our last run is free to us.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(
                f"port {port} on {host} ({what}) is in use by another program: {hint}", port
            ) from None
        raise PortInUseError(
            f"cannot listen on {host}:{port} ({what}): {exc.strerror}; {hint}", port
        ) from None
    return sock


def check_free(host: str, port: int, *, what: str, hint: str) -> None:
    """Raise PortInUseError now if `host:port` cannot be bound (for a server that binds it
    itself a moment later, and would otherwise fail with a traceback)."""
    bind(host, port, what=what, hint=hint).close()


API_HINT = "stop it, or choose another port (hazardwatch demo --port PORT, or HAZARDWATCH_API_PORT)"
BROKER_HINT = (
    "stop it (another hazardwatch? Mosquitto?), choose another port with "
    "--embedded-broker-port PORT, or use that broker with HAZARDWATCH_MQTT_URL"
)
