"""`hazardwatch run` with a certificate and key: HTTPS only, /metrics with the token read from
its file, docs and schema switched off."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.service_process import TOKEN, ServiceProcess
from tests.servers import InfluxDB1, Mosquitto

METRICS = "metrics-token-0123456789abcdef"


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key, made by the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-nodes", "-days", "1",
            "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=hazardwatch test",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    key.chmod(0o600)
    return cert, key


class HttpsService(ServiceProcess):
    """`hazardwatch run` whose API speaks HTTPS, trusted through `ca`."""

    def __init__(self, tmp_path: Path, env: dict[str, str], ca: ssl.SSLContext) -> None:
        super().__init__(tmp_path, env)
        self.ca = ca

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        assert self.process is not None and self.process.poll() is None, self.log_tail()
        try:
            response = httpx.get(f"{self.base}/readyz", timeout=1, verify=self.ca)
        except httpx.HTTPError:
            return False
        return response.status_code == 200


def _tls12_client(trusted: ssl.SSLContext, ciphers: str) -> ssl.SSLContext:
    """A TLS 1.2 client that trusts the certificate and offers only these suites."""
    client = ssl.create_default_context()
    pem = "".join(ssl.DER_cert_to_PEM_cert(der) for der in trusted.get_ca_certs(binary_form=True))
    client.load_verify_locations(cadata=pem)
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    client.set_ciphers(ciphers)
    return client


def _handshake(port: int, client: ssl.SSLContext) -> str | None:
    """The TLS version agreed with the service, or ssl.SSLError."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        client.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        return tls.version()


@pytest.fixture
def service(
    tmp_path: Path, mosquitto_factory: Any, influxdb: InfluxDB1, influx_db: str
) -> Iterator[HttpsService]:
    cert, key = self_signed(tmp_path)
    token_file = tmp_path / "metrics_token"
    token_file.write_text(METRICS + "\n", encoding="utf-8")
    token_file.chmod(0o600)
    broker: Mosquitto = mosquitto_factory()
    env = {
        "HAZARDWATCH_MQTT_URL": broker.url,
        "HAZARDWATCH_INFLUX_URL": influxdb.url,
        "HAZARDWATCH_INFLUX_API": "v1",
        "HAZARDWATCH_INFLUX_DB": influx_db,
        "HAZARDWATCH_API__TLS_CERTFILE": str(cert),
        "HAZARDWATCH_API__TLS_KEYFILE": str(key),
        "HAZARDWATCH_API__METRICS_TOKEN_FILE": str(token_file),
        "HAZARDWATCH_API__DOCS": "false",
    }
    running = HttpsService(tmp_path, env, ssl.create_default_context(cafile=str(cert)))
    running.start()
    yield running
    running.close()


def test_the_api_speaks_https_only_with_the_configured_certificate(service: HttpsService) -> None:
    with httpx.Client(base_url=service.base, verify=service.ca, timeout=5) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        admin = client.get("/api/v1/dead-letters", headers={"Authorization": f"Bearer {TOKEN}"})
        assert admin.status_code == 200

    # Plain HTTP on the same port gets no answer; a client that does not trust the
    # certificate gets no connection.
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{service.port}/healthz", timeout=5)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{service.base}/healthz", timeout=5)

    # Python's defaults, which uvicorn keeps: no SHA-1 suites (a client offering only those is
    # refused), TLS 1.2 with GCM served.
    with pytest.raises(ssl.SSLError):
        _handshake(service.port, _tls12_client(service.ca, "ECDHE+AES128+SHA1:ECDHE+AES256+SHA1"))
    assert _handshake(service.port, _tls12_client(service.ca, "ECDHE+AESGCM")) == "TLSv1.2"

    assert service.stop() == 0, service.log_tail()
    log = service.log_tail(100_000)
    assert f"HTTP API on https://127.0.0.1:{service.port}" in log


def test_metrics_take_the_token_from_its_file_and_docs_are_off(service: HttpsService) -> None:
    with httpx.Client(base_url=service.base, verify=service.ca, timeout=5) as client:
        assert client.get("/metrics").status_code == 401
        metrics = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS}"})
        assert metrics.status_code == 200
        assert "hazardwatch_messages_received_total" in metrics.text
        # The metrics token opens nothing else.
        other = client.get("/api/v1/dead-letters", headers={"Authorization": f"Bearer {METRICS}"})
        assert other.status_code == 401
        assert "components" not in client.get("/readyz").json()
        detail = client.get("/readyz", headers={"Authorization": f"Bearer {METRICS}"}).json()
        assert "forwarder" in detail["components"]
        for path in ("/docs", "/openapi.json"):
            assert client.get(path).status_code == 404, path

    assert service.stop() == 0, service.log_tail()
    assert METRICS not in service.log_tail(100_000), "a secret in the log"


@pytest.mark.parametrize(
    ("problem", "message"),
    [
        ("encrypted", "tls_keyfile is encrypted; give it unencrypted"),
        ("mismatched", "cannot use tls_certfile and tls_keyfile: [X509: KEY_VALUES_MISMATCH]"),
    ],
)
def test_a_key_that_cannot_serve_stops_the_start(
    tmp_path: Path, problem: str, message: str
) -> None:
    cert, key = self_signed(tmp_path)
    if problem == "encrypted":
        plain, key = key, tmp_path / "encrypted.pem"
        subprocess.run(
            ["openssl", "pkey", "-in", str(plain), "-aes256", "-passout", "pass:secret",
             "-out", str(key)],
            check=True,
            capture_output=True,
        )  # fmt: skip
    else:
        (tmp_path / "other").mkdir()
        _, key = self_signed(tmp_path / "other")
    env = {
        "HAZARDWATCH_DATA_DIR": str(tmp_path / "data"),
        "HAZARDWATCH_API__TLS_CERTFILE": str(cert),
        "HAZARDWATCH_API__TLS_KEYFILE": str(key),
    }
    done = subprocess.run(
        [sys.executable, "-m", "hazardwatch", "run"],
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "hazardwatch: invalid configuration:" in done.stderr
    assert f"HAZARDWATCH_API: Value error, {message}" in done.stderr
    assert not (tmp_path / "data").exists()  # stopped before anything started
