"""What machine a benchmark ran on: printed with every figure."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _cpu_times() -> list[int] | None:
    """The machine's CPU time counters (user, nice, system, idle, iowait, irq, softirq, steal)."""
    try:
        with Path("/proc/stat").open(encoding="utf-8") as handle:
            fields = handle.readline().split()
    except OSError:
        return None
    return [int(x) for x in fields[1:9]] if fields and fields[0] == "cpu" else None


class CpuShare:
    """How busy the machine was during a run, and how much CPU the hypervisor took (steal).

    On a shared virtual machine, steal time is CPU the guest was ready to use and did not get:
    figures from runs with much of it are slower than the code is.
    """

    def __init__(self) -> None:
        self._start = _cpu_times()

    def report(self) -> str:
        """One line: busy and stolen shares of all cores since the start."""
        end = _cpu_times()
        if self._start is None or end is None:
            return "cpu during the run: unknown (no /proc/stat)"
        delta = [b - a for a, b in zip(self._start, end, strict=True)]
        total = sum(delta) or 1
        idle = delta[3] + delta[4]
        steal = delta[7]
        return (
            f"cpu during the run: {100 * (total - idle - steal) / total:.0f} % busy, "
            f"{100 * steal / total:.0f} % stolen by the hypervisor (steal time)"
        )


@contextmanager
def cpu_share_printed() -> Iterator[None]:
    """Print the CPU shares of the run at its end, also when a phase of it fails."""
    share = CpuShare()
    try:
        yield
    finally:
        print(share.report(), flush=True)


def describe() -> str:
    """CPU model, cores, memory, OS, Python, load average, and server versions."""
    cpu = "unknown CPU"
    try:
        with Path("/proc/cpuinfo").open(encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = []
    for command in (["mosquitto", "-h"], ["influxd", "version"]):
        try:
            out = subprocess.run(command, check=False, capture_output=True, text=True, timeout=5)
            versions.append((out.stdout or out.stderr).splitlines()[0].strip())
        except (OSError, IndexError, subprocess.TimeoutExpired):
            versions.append(f"{command[0]}: not found")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"machine: {cpu}, {os.cpu_count()} cores, {memory:.0f} GiB, {platform.platform()}, "
        f"Python {platform.python_version()}, load {load}\n"
        f"servers: {'; '.join(versions)}"
    )
