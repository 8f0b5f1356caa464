"""InfluxDB 2.x/3.x over `/api/v2/write`, through influxdb-client."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from core.errors import StoreError
from core.points import Point
from core.readings import ReadingsQuery, Series, epoch_ms, from_epoch_ms
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


def flux_string(text: str) -> str:
    """A Flux string literal (`${` would start an interpolation)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def readings_flux(bucket: str, query: ReadingsQuery) -> str:
    """The Flux of a readings query: means per window, aligned to the epoch and stamped with
    the window's start (as InfluxQL's GROUP BY time), empty windows left out."""
    fields = " or ".join(f"r._field == {flux_string(name)}" for name in query.fields)
    return (
        f"from(bucket: {flux_string(bucket)})\n"
        f"  |> range(start: {_rfc3339(query.start)}, stop: {_rfc3339(query.stop)})\n"
        f'  |> filter(fn: (r) => r._measurement == "reading"'
        f" and r.device == {flux_string(query.device)} and ({fields}))\n"
        '  |> group(columns: ["_field"])\n'
        f"  |> aggregateWindow(every: {query.every_s}s, fn: mean, createEmpty: false,"
        ' timeSrc: "_start")\n'
        '  |> keep(columns: ["_time", "_field", "_value"])'
    )


class InfluxV2Readings:
    """Reads a device's readings with Flux through influxdb-client."""

    def __init__(self, url: str, bucket: str, org: str | None, token: str) -> None:
        # A person waits for a chart: a store that takes longer is as good as away.
        self._client = InfluxDBClient(url=url, token=token, org=org or "-", timeout=10_000)
        self._bucket = bucket
        self._org = org or "-"

    def readings(self, query: ReadingsQuery) -> Series:
        """Means per window, from InfluxDB."""
        found: Series = {name: [] for name in query.fields}
        every_ms = query.every_s * 1000
        try:
            tables = self._client.query_api().query(
                readings_flux(self._bucket, query), org=self._org
            )
        except ApiException as exc:
            raise classify(exc.status or 500, str(exc.body or exc.reason)) from None
        except (Urllib3Error, OSError) as exc:
            raise StoreError(f"InfluxDB unreachable: {exc!r}", retryable=True) from None
        for table in tables:
            for record in table.records:
                row: dict[str, Any] = record.values
                value, name = row.get("_value"), row.get("_field")
                if value is not None and name in found:
                    # The first window's start is the range's: to its bucket, as InfluxQL's.
                    at = from_epoch_ms(epoch_ms(row["_time"]) // every_ms * every_ms)
                    found[name].append((at, float(value)))
        for series in found.values():
            series.sort()
        return found

    def close(self) -> None:
        """Close the client."""
        self._client.close()  # type: ignore[no-untyped-call]
