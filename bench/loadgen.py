"""A lean QoS 1 publisher for live measurements: pre-encoded packets on a plain socket.

A paho-mqtt publisher tops out near 10,000 msg/s here and takes a whole core to do it, on a
machine of two cores whose other one the subscriber under test needs: a live figure measured
with it says more about the publisher than about the subscriber. This one encodes every
PUBLISH packet before the clock starts and then only writes bytes and counts PUBACKs, keeping
at most `window` messages unacknowledged (MQTT 3.1.1, sections 3.3 and 3.4).
"""

from __future__ import annotations

import multiprocessing
import socket
import struct
import time
import uuid
from collections.abc import Callable

from core.settings import parse_mqtt_url

PUBACK = 0x40
CHUNK = 200


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def _connect_packet(client_id: str) -> bytes:
    # protocol name, level 4 (3.1.1), flags: clean session, keep-alive 60 s
    body = _utf8("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 60) + _utf8(client_id)
    return bytes([0x10]) + _remaining_length(len(body)) + body


def _publish_packet(topic: str, payload: bytes, packet_id: int) -> bytes:
    body = _utf8(topic) + struct.pack("!H", packet_id) + payload
    return bytes([0x32]) + _remaining_length(len(body)) + body


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        data += chunk
    return data


def publish_fast(
    url: str,
    messages: Callable[[int], tuple[str, bytes]],
    count: int,
    first: int = 0,
    window: int = 5000,
    rate: float | None = None,
) -> float:
    """Publish messages `first` … `first + count - 1` at QoS 1; return msg/s once all acked.

    With `rate`, messages go out at that pace (in steps of 2 ms) instead of as fast as the
    broker takes them: background load for latency measurements.
    """
    chunk = CHUNK if rate is None else max(1, int(rate / 500))
    packets = [
        _publish_packet(*messages(i), packet_id=(i - first) % 65535 + 1)
        for i in range(first, first + count)
    ]
    endpoint = parse_mqtt_url(url)
    with socket.create_connection((endpoint.host, endpoint.port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(_connect_packet(f"loadgen-{uuid.uuid4().hex[:8]}"))
        connack = _recv_exactly(sock, 4)
        if connack[0] != 0x20 or connack[3] != 0:
            raise ConnectionError(f"the broker refused the connection: {connack!r}")
        start = time.perf_counter()
        sent = acked = 0
        pending = b""
        while acked < count:
            now = time.perf_counter()
            due = count if rate is None else min(count, int((now - start) * rate) + chunk)
            if sent < due and sent - acked + chunk <= window:
                stop = min(due, sent + chunk)
                sock.sendall(b"".join(packets[sent:stop]))
                sent = stop
                continue
            wait = None  # nothing more to send yet: read PUBACKs until the next is due
            if rate is not None and sent < count:
                wait = max(0.0005, start + (sent - chunk + 1) / rate - now)
                if sent == acked:
                    time.sleep(wait)
                    continue
            sock.settimeout(wait)
            try:
                pending += sock.recv(65536)
            except TimeoutError:
                continue
            finally:
                sock.settimeout(None)
            # Acknowledge the broker's segments at once: with delayed ACKs here and Nagle's
            # algorithm there, PUBACKs otherwise arrive in 40 ms steps (seen: 25,000 msg/s).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            whole = len(pending) // 4 * 4
            for offset in range(0, whole, 4):
                if pending[offset] != PUBACK:
                    raise ConnectionError(f"expected PUBACK, got packet type {pending[offset]:#x}")
            acked += whole // 4
            pending = pending[whole:]
        elapsed = time.perf_counter() - start
        sock.sendall(b"\xe0\x00")  # DISCONNECT
    return count / elapsed


def publish_fast_in_process(
    url: str, messages: Callable[[int], tuple[str, bytes]], count: int, first: int = 0
) -> None:
    """`publish_fast` in a process of its own (a module-level `messages`, for pickling)."""
    process = multiprocessing.Process(target=publish_fast, args=(url, messages, count, first))
    process.start()
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"the publisher failed with exit code {process.exitcode}")
