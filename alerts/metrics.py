"""Prometheus figures of the alert engine, read when scraped."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from alerts.engine import AlertEngine


class AlertCollector(Collector):
    """`hazardwatch_alerts_raised_total{kind,severity}` and the alerts on the board."""

    def __init__(self, engine: AlertEngine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        """Read the counts now (memory only: /metrics answers while the database is away)."""
        raised = CounterMetricFamily(
            "hazardwatch_alerts_raised", "Alerts raised", labels=["kind", "severity"]
        )
        for (kind, severity), count in sorted(self._engine.raised.items()):
            raised.add_metric([kind, severity], count)
        yield raised
        stats = self._engine.stats()
        yield GaugeMetricFamily("hazardwatch_alerts_open", "Alerts on the board", stats["open"])
