"""Prometheus figures of the alert engine, read when scraped."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

from alerts.stage import AlertStage


class AlertCollector(Collector):
    """`hazardwatch_alerts_raised_total{kind,severity}`, open alerts, outbox backlog."""

    def __init__(self, stage: AlertStage) -> None:
        self._stage = stage

    def collect(self) -> Iterator[Metric]:
        """Read the counts now."""
        raised = CounterMetricFamily(
            "hazardwatch_alerts_raised", "Alerts raised", labels=["kind", "severity"]
        )
        for (kind, severity), count in sorted(self._stage.engine.raised.items()):
            raised.add_metric([kind, severity], count)
        yield raised
        stats = self._stage.engine.stats()
        yield GaugeMetricFamily("hazardwatch_alerts_open", "Alerts on the board", stats["open"])
        yield CounterMetricFamily(
            "hazardwatch_notifications_delivered",
            "Outbox rows delivered (MQTT, InfluxDB, webhooks)",
            self._stage.dispatcher.delivered,
        )
        yield CounterMetricFamily(
            "hazardwatch_notification_failures",
            "Failed delivery attempts, each retried",
            self._stage.dispatcher.failures,
        )
        try:
            pending = self._stage.store.undelivered()
        except SQLAlchemyError:  # the database is down: /metrics still answers
            return
        yield GaugeMetricFamily(
            "hazardwatch_alert_outbox_pending", "Outbox rows not yet delivered", pending
        )
