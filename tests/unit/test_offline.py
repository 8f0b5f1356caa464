"""The silence wheel: each silent device reported once, at its deadline, however many there are."""

from __future__ import annotations

from pathlib import Path

from alerts.offline import OfflineWatch

START = 1_795_000_000.0


def test_a_device_filed_again_is_not_reported_at_its_old_deadline() -> None:
    windows = {"a": 10.0}
    watch = OfflineWatch(lambda device: windows[device], resolution_s=0.05)
    watch.seen("a", START)
    windows["a"] = 30.0  # e.g. a status announced a longer heartbeat
    watch.refile("a")
    assert watch.due(START + 10.5) == []  # the stale entry of the old deadline is skipped
    assert watch.due(START + 29.9) == []
    [(device, silent)] = watch.due(START + 30.05)
    assert device == "a" and 30.0 <= silent <= 30.05
    assert watch.due(START + 100) == []


def test_a_silent_device_heard_again_is_watched_again() -> None:
    watch = OfflineWatch(lambda _device: 5.0)
    watch.seen("a", START)
    assert [d for d, _ in watch.due(START + 5.1)] == ["a"]
    watch.seen("a", START + 20)
    assert watch.due(START + 24.9) == []
    assert [d for d, _ in watch.due(START + 25.1)] == ["a"]
    assert watch.last_seen("a") == START + 20


def test_an_older_receive_time_does_not_move_last_seen_back() -> None:
    watch = OfflineWatch(lambda _device: 5.0)
    watch.seen("a", START + 3)
    watch.seen("a", START + 1)
    assert watch.last_seen("a") == START + 3
    assert watch.last_seen("b") is None
    assert watch.due(START + 7.9) == []
    assert [d for d, _ in watch.due(START + 8.1)] == ["a"]


def test_many_devices_are_each_reported_once_without_a_timer_apiece() -> None:
    watch = OfflineWatch(lambda device: 60.0 if device.endswith("7") else 30.0)
    devices = [f"dev-{i:05d}" for i in range(20_000)]
    for i, device in enumerate(devices):
        watch.seen(device, START + i * 0.001)  # 20 s of arrivals
    watch.seen("dev-00001", START + 25)  # one of them speaks again
    reported: list[str] = []
    for step in range(0, 1000):
        reported += [d for d, _ in watch.due(START + step * 0.1)]
    assert len(reported) == len(set(reported)) == len(devices)
    # 00002 at 30 s, 00001 at 25 + 30 s, 00007 (a 60 s window) at 60 s
    assert reported.index("dev-00007") > reported.index("dev-00001") > reported.index("dev-00002")
    assert len(watch) == len(devices)


def test_a_snapshot_keeps_every_last_receive_time(tmp_path: Path) -> None:
    watch = OfflineWatch(lambda _device: 5.0)
    for i, device in enumerate(("a", "b", "设备-3")):
        watch.seen(device, START + i + 0.25)
    path = tmp_path / "seen.bin"
    watch.save(path)
    loaded = OfflineWatch(lambda _device: 5.0)
    assert loaded.load(path) == 3
    assert [loaded.last_seen(d) for d in ("a", "b", "设备-3")] == [
        START + 0.25,
        START + 1.25,
        START + 2.25,
    ]
    assert [d for d, _ in loaded.due(START + 5.3)] == ["a"]
