"""The receive edge's pieces that need no broker: raw records, the buffered socket, grouping."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from ingest.edge import (
    MAX_RAW_PAYLOAD,
    MQTT311_WINDOW,
    EdgeConfig,
    _BufferedSocket,
    decode_raw,
    encode_raw,
)


def test_raw_record_round_trip_keeps_bytes_and_flags() -> None:
    topic = "hazardwatch/v1/inst-1/烟感-1/telemetry".encode()
    payload = b'{"seq": 1}\xff'
    body = encode_raw(1_763_798_400_123, True, False, topic, payload)
    assert decode_raw(body) == (1_763_798_400_123, True, False, topic, payload, -1)
    assert decode_raw(encode_raw(5, False, True, b"t", b""))[1:3] == (False, True)


def test_an_oversized_payload_keeps_only_its_start_and_its_size() -> None:
    payload = b"x" * (5 << 20)
    body = encode_raw(7, False, True, b"t/1", payload)
    assert len(body) < MAX_RAW_PAYLOAD + 100, "5 MiB must not reach the disk"
    received_ms, retained, dup, topic, kept, size = decode_raw(body)
    assert size == 5 << 20
    assert kept == payload[:MAX_RAW_PAYLOAD]
    assert (received_ms, retained, dup, topic) == (7, False, True, b"t/1")
    exact = encode_raw(7, False, False, b"t", b"y" * MAX_RAW_PAYLOAD)
    assert decode_raw(exact)[4:] == (b"y" * MAX_RAW_PAYLOAD, -1), "at the limit: kept whole"


def test_buffered_socket_serves_small_reads_from_one_recv() -> None:
    left, right = socket.socketpair()
    try:
        right.setblocking(False)
        buffered = _BufferedSocket(right)
        left.sendall(b"\x30\x05hello\x30\x02hi")
        assert buffered.recv(1) == b"\x30"
        assert buffered.pending() == 10  # the rest came with the first read
        assert buffered.recv(1) == b"\x05"
        assert buffered.recv(5) == b"hello"
        assert buffered.recv(100) == b"\x30\x02hi"  # a short read, as from a socket
        assert buffered.pending() == 0
        with pytest.raises(BlockingIOError):
            buffered.recv(1)  # nothing buffered, nothing on the socket
        left.close()
        assert buffered.recv(1) == b""  # closed by the peer
        assert buffered.fileno() == right.fileno()  # everything else is the socket's
    finally:
        left.close()
        right.close()


def test_group_is_bounded_by_the_brokers_window() -> None:
    def config_with(**options: Any) -> EdgeConfig:
        return EdgeConfig(
            host="h", port=1, client_id="c", topics=["t/#"], spool_dir="/x", **options
        )

    assert config_with(receive_maximum=100).window == 100
    assert config_with(mqtt5=False, receive_maximum=100).window == MQTT311_WINDOW
    config = config_with(password="secret")
    assert EdgeConfig.from_json(config.to_json()) == config
