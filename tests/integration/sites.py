"""A site for end-to-end tests: `hazardwatch run` with a small registry, detectors, a stream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.mqtt_tools import Publisher
from tests.integration.service_process import ServiceProcess, StreamReader
from tests.servers import InfluxDB1, Mosquitto

REGISTRY = """\
institutions:
  - id: inst-1
    name: 阳光养老院
    type: elderly_care
    town: 城关镇
    principal: {name: 张三, phone: "13800000001"}
    safety_manager: {name: 李四, phone: "13800000002"}
  - id: inst-2
    name: 东城敬老院
    type: elderly_care
    town: 东城街道
devices:
  - {id: smoke-21, institution: inst-2, kind: smoke}
  - {id: smoke-1, institution: inst-1, kind: smoke, zone: 2F-east}
  - {id: smoke-2, institution: inst-1, kind: smoke, zone: 2F-east}
  - {id: smoke-9, institution: inst-1, kind: smoke, zone: 1F}
  - {id: gas-1, institution: inst-1, kind: gas, zone: kitchen}
  - {id: quiet-1, institution: inst-1, kind: smoke, heartbeat_s: 2}
  - {id: quiet-2, institution: inst-1, kind: smoke, heartbeat_s: 4}
"""
TOPIC = "hazardwatch/v1/{institution}/{device}/{channel}"


class Site:
    """A service with the registry above, a detector publisher and a stream reader."""

    def __init__(
        self, tmp_path: Path, broker: Mosquitto, influx: tuple[InfluxDB1, str], env: dict[str, str]
    ) -> None:
        server, db = influx
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.service = ServiceProcess(
            tmp_path,
            {
                "HAZARDWATCH_MQTT_URL": broker.url,
                "HAZARDWATCH_INFLUX_URL": server.url,
                "HAZARDWATCH_INFLUX_API": "v1",
                "HAZARDWATCH_INFLUX_DB": db,
                **env,
            },
        )
        registry = tmp_path / "registry.yaml"
        registry.write_text(REGISTRY, encoding="utf-8")
        self.service.hazardwatch("registry", "import", str(registry))
        self.service.start()
        self.stream = StreamReader(self.service)
        self.devices = Publisher(broker.url)
        self._seq: dict[str, int] = {}

    def send(
        self, device: str, channel: str, body: dict[str, Any], institution: str = "inst-1"
    ) -> None:
        """Publish one message of `device` with its next `seq`, and wait for the broker."""
        seq = self._seq[device] = self._seq.get(device, 0) + 1
        topic = TOPIC.format(institution=institution, device=device, channel=channel)
        self.devices.publish(topic, {"seq": seq, **body})
        self.devices.wait_all_acked()

    def restart(self, *, crash: bool) -> None:
        """Kill (crash) or stop the service and start it again with the same data."""
        self.stream.close()
        if crash:
            self.service.kill()
        else:
            assert self.service.stop() == 0, self.service.log_tail()
        self.service.start()
        self.stream = StreamReader(self.service)

    def close(self) -> None:
        self.devices.close()
        self.stream.close()
        self.service.close()


@pytest.fixture
def site_factory(
    tmp_path: Path, mosquitto_factory: Any, influxdb: InfluxDB1, influx_db: str
) -> Iterator[Any]:
    """Sites on a fresh broker each; `make(**env)` starts one."""
    sites: list[Site] = []

    def make(**env: str) -> Site:
        broker: Mosquitto = mosquitto_factory()
        site = Site(tmp_path / f"site-{len(sites)}", broker, (influxdb, influx_db), env)
        sites.append(site)
        return site

    yield make
    for site in sites:
        site.close()
