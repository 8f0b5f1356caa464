"""What machine a benchmark ran on: printed with every figure."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path


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
