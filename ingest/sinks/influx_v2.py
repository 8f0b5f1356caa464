"""InfluxDB 2.x/3.x over `/api/v2/write`, through influxdb-client."""

from __future__ import annotations

from collections.abc import Sequence

from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from core.errors import StoreError
from core.points import Point
from ingest.sinks.influx_v1 import classify
from ingest.sinks.lineprotocol import encode_many


class InfluxV2Sink:
    """Writes batches synchronously; batching and retries are the forwarder's job."""

    name = "influxdb-v2"

    def __init__(self, url: str, bucket: str, org: str | None, token: str) -> None:
        self._client = InfluxDBClient(url=url, token=token, org=org or "-", timeout=30_000)
        self._write = self._client.write_api(write_options=SYNCHRONOUS)
        self._bucket = bucket
        self._org = org or "-"

    def write(self, points: Sequence[Point]) -> None:
        """Write one batch."""
        if not points:
            return
        try:
            self._write.write(
                bucket=self._bucket,
                org=self._org,
                record=encode_many(points),
                write_precision=WritePrecision.MS,  # type: ignore[arg-type]  # a str constant
            )
        except ApiException as exc:
            raise classify(exc.status or 500, str(exc.body or exc.reason)) from None
        except (Urllib3Error, OSError) as exc:
            raise StoreError(f"InfluxDB unreachable: {exc!r}", retryable=True) from None

    def ping(self) -> bool:
        """True when /ping answers."""
        try:
            return bool(self._client.ping())
        except Exception:  # noqa: BLE001 - ping reports, it never raises
            return False

    def close(self) -> None:
        """Close the client."""
        self._client.close()  # type: ignore[no-untyped-call]
