"""Ports taken before the service starts: a taken one is one clear line."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from hazardwatch.ports import PortInUseError, bind, check_free


@pytest.fixture
def taken() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def test_a_taken_port_names_itself_what_it_is_for_and_what_to_do(taken: int) -> None:
    with pytest.raises(PortInUseError) as caught:
        check_free("127.0.0.1", taken, what="HTTP API", hint="use --port")
    message = str(caught.value)
    assert caught.value.port == taken
    assert f"port {taken} on 127.0.0.1 (HTTP API) is in use" in message
    assert message.endswith("use --port") and "\n" not in message


def test_a_free_port_is_bound_and_given_back() -> None:
    sock = bind("127.0.0.1", 0, what="HTTP API", hint="-")
    try:
        host, port = sock.getsockname()
        assert host == "127.0.0.1" and port > 0
    finally:
        sock.close()
    check_free("127.0.0.1", port, what="HTTP API", hint="-")  # released: free again


def test_an_unknown_host_is_a_clear_error() -> None:
    with pytest.raises(PortInUseError, match=r"HTTP API: cannot listen on 'no-such-host\.invalid'"):
        check_free("no-such-host.invalid", 8080, what="HTTP API", hint="-")
