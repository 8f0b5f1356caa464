"""Publish → alarm visible on the duty console's board, in a real browser, under load; and how
long a board with many open alarms takes to draw.

    .venv/bin/python -m bench.console_latency [--alarms 500] [--load 10000]

Real Mosquitto and InfluxDB 1.x, `hazardwatch run` as its own process, Debian's Chromium
driven by Playwright, logged in as a duty officer on the board (1920×1080). A load generator
process publishes ordinary readings from 1,000 devices at `--load` msg/s throughout; then
`--alarms` detectors (one institution each) raise a smoke alarm, 20 a second. For each alarm:

- broker: publish → a bare paho subscriber of the broker (the part that is not hazardwatch's);
- stream: publish → the `smoke_alarm` event on GET /api/v1/stream, read by this process;
- board: publish → its card in the board's DOM (a MutationObserver in the page; both clocks
  are this machine's wall clock).

Then, with all of them open, the board is loaded anew: the time from navigation to every
card drawn, and the time the browser's main thread spent in long tasks (> 50 ms) meanwhile.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import tempfile
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from playwright.sync_api import Page, sync_playwright

from bench.alert_latency import (
    ALARMS_PER_S,
    PREFIX,
    RawSubscriber,
    percentiles,
    raised_at,
    received_total,
    registry,
)
from bench.ingest_throughput import message
from bench.loadgen import publish_fast
from bench.machine import cpu_share_printed, describe
from core.settings import parse_mqtt_url
from tests.integration.service_process import ServiceProcess, StreamReader
from tests.servers import InfluxDB1, Mosquitto

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "bench duty officer passphrase"
# Records when each card first appears, by its device, in wall-clock milliseconds.
OBSERVER = """
window.__seen = {};
new MutationObserver((changes) => {
  const now = performance.timeOrigin + performance.now();
  for (const change of changes) for (const node of change.addedNodes) {
    const device = node.dataset && node.dataset.device;
    if (device && !(device in window.__seen)) window.__seen[device] = now;
  }
}).observe(document.getElementById("alarms"), { childList: true });
"""
# When the board first held `count` cards (a MutationObserver: not when this process looked).
DRAWN = """
window.__drawnAt = null;
const list = document.getElementById("alarms");
new MutationObserver(() => {
  if (window.__drawnAt === null && list.children.length >= window.__wanted) {
    window.__drawnAt = performance.now();
  }
}).observe(list, { childList: true });
window.__drawn = (count) => {
  window.__wanted = count;
  if (window.__drawnAt === null && list.children.length >= count) {
    window.__drawnAt = performance.now();
  }
  return window.__drawnAt;
};
"""
# Long tasks of the main thread (the board frozen), from the page's start.
LONG_TASKS = """
window.__long = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.__long.push(entry.duration);
}).observe({ type: "longtask", buffered: true });
"""


def log_in(page: Page, base: str) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=username]", "bench")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/board")
    page.wait_for_selector("#connection.open")


def alarms(
    service: ServiceProcess, url: str, stream: StreamReader, page: Page, count: int
) -> tuple[list[float], list[float], list[float], float]:
    """(broker, stream, board latencies; background msg/s received meanwhile)."""
    raw = RawSubscriber(url)
    endpoint = parse_mqtt_url(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"alarm-{uuid.uuid4().hex[:8]}")
    client.connect(endpoint.host, endpoint.port)
    client.loop_start()
    page.evaluate(OBSERVER)
    sent: dict[str, tuple[float, float]] = {}  # device -> (monotonic, wall)
    before, started = received_total(service), time.monotonic()
    for i in range(count):
        device = f"alarm-{i:05d}"
        body = json.dumps({"seq": 1, "type": "alarm", "source": "smoke"})
        delay = started + i / ALARMS_PER_S - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sent[device] = (time.monotonic(), time.time())
        client.publish(f"{PREFIX}/lat-{i:05d}/{device}/event", body, qos=1)
    background = (received_total(service) - before - count) / (time.monotonic() - started)
    deadline = time.monotonic() + 60
    shown: dict[str, float] = {}
    while len(shown) < count and time.monotonic() < deadline:
        shown = page.evaluate("window.__seen")
        time.sleep(0.25)
    client.disconnect()
    client.loop_stop()
    raw.close()
    if len(shown) < count:
        raise RuntimeError(f"{count - len(shown)} of {count} alarms never reached the board")
    arrived = raised_at(stream, "smoke_alarm", sent)
    broker = [raw.seen[d] - t[0] for d, t in sent.items() if d in raw.seen]
    ours = [arrived[d] - t[0] for d, t in sent.items() if d in arrived]
    board = [shown[d] / 1000 - t[1] for d, t in sent.items()]
    return broker, ours, board, background


def reload_board(page: Page, base: str, count: int) -> tuple[float, list[float]]:
    """Seconds from navigation to `count` cards drawn; the long tasks (ms) meanwhile."""
    page.add_init_script(LONG_TASKS)
    page.goto(f"{base}/board")
    # Polled from here: the page's CSP (script-src 'self') refuses wait_for_function's eval.
    page.evaluate(DRAWN)
    deadline = time.monotonic() + 120
    drawn = None
    while drawn is None and time.monotonic() < deadline:
        drawn = page.evaluate(f"window.__drawn({count})")
        time.sleep(0.05)
    if drawn is None:
        raise RuntimeError(f"the board did not draw {count} cards within 120 s")
    page.wait_for_timeout(500)
    long_tasks: list[float] = page.evaluate("window.__long || []")
    return drawn / 1000, long_tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alarms", type=int, default=500)
    parser.add_argument("--load", type=float, default=10_000, help="background msg/s")
    args = parser.parse_args()
    print(describe())
    with tempfile.TemporaryDirectory() as tmp, cpu_share_printed():
        work = Path(tmp)
        broker = Mosquitto(work / "mosquitto").start()
        influx = InfluxDB1(work / "influx").start()
        influx.create_database("bench")
        env = {
            "HAZARDWATCH_MQTT_URL": broker.url,
            "HAZARDWATCH_INFLUX_URL": influx.url,
            "HAZARDWATCH_INFLUX_API": "v1",
            "HAZARDWATCH_INFLUX_DB": "bench",
        }
        service = ServiceProcess(work, env)
        (work / "registry.yaml").write_text(registry(args.alarms, 0), encoding="utf-8")
        service.hazardwatch("registry", "import", str(work / "registry.yaml"))
        service.add_user("bench", "duty_officer", password=PASSWORD)
        load: multiprocessing.Process | None = None
        try:
            service.start()
            stream = StreamReader(service)
            seconds = 10 + args.alarms / ALARMS_PER_S + 90
            load = multiprocessing.Process(
                target=publish_fast,
                args=(broker.url, functools.partial(message, PREFIX), int(args.load * seconds)),
                kwargs={"rate": args.load},
                daemon=True,
            )
            with sync_playwright() as driver:
                browser = driver.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
                )
                page = browser.new_page(viewport={"width": 1920, "height": 1080})
                log_in(page, service.base)
                load.start()
                time.sleep(5)  # warm up: every background device known
                print(
                    f"alarms: {args.alarms} at {ALARMS_PER_S:.0f}/s, background load "
                    f"{args.load:,.0f} msg/s of readings from 1,000 devices (QoS 1)"
                )
                broker_s, stream_s, board_s, background = alarms(
                    service, broker.url, stream, page, args.alarms
                )
                print(f"background actually received by hazardwatch: {background:,.0f} msg/s")
                print(f"baseline  publish -> bare paho subscriber: {percentiles(broker_s)}")
                print(f"hazardwatch publish -> SSE stream:       {percentiles(stream_s)}")
                print(f"hazardwatch publish -> card on the board: {percentiles(board_s)}")
                load.terminate()
                load = None
                fresh = browser.new_page(viewport={"width": 1920, "height": 1080})
                log_in(fresh, service.base)
                drawn, long_tasks = reload_board(fresh, service.base, args.alarms)
                print(
                    f"board with {args.alarms} open alarms, navigation -> every card drawn: "
                    f"{drawn * 1000:,.0f} ms; long tasks {len(long_tasks)}, longest "
                    f"{max(long_tasks, default=0):,.0f} ms, total {sum(long_tasks):,.0f} ms"
                )
                browser.close()
        finally:
            if load is not None:
                load.terminate()
            service.stop()
            influx.stop()
            broker.stop()


if __name__ == "__main__":
    main()
