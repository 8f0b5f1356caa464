"""Prometheus figures of the service's parts: their state, backlog and crashes."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from core.health import Health, State


class HealthCollector(Collector):
    """`hazardwatch_component_state{component,state}` (1 for the current state) and
    `hazardwatch_component_backlog{component}`, read when scraped."""

    def __init__(self, health: Health) -> None:
        self._health = health

    def collect(self) -> Iterator[Metric]:
        """Read the reports now."""
        states = GaugeMetricFamily(
            "hazardwatch_component_state",
            "1 for each component's current state (ok, degraded, stuck, failed)",
            labels=["component", "state"],
        )
        backlog = GaugeMetricFamily(
            "hazardwatch_component_backlog",
            "work waiting for each component (records, events)",
            labels=["component"],
        )
        for component in self._health.components():
            now, _ = component.state()
            for state in State:
                states.add_metric([component.name, state.value], 1.0 if state is now else 0.0)
            backlog.add_metric([component.name], component.waiting())
        yield states
        yield backlog
