"""Shared test configuration: markers by test folder, and Hypothesis profiles."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings

# Property tests (Hypothesis) run the same examples on every run: in CI, on a laptop, in a
# rerun of a failure. They keep no example database (.hypothesis/ holds only caches) and have
# no deadline per example (a 2-core machine shared with benchmarks is slow at times). To look
# for failures the fixed examples miss, `pytest --hypothesis-profile=explore` draws new ones on
# each run, ten times as many; a failure prints the decorator that reproduces it.
settings.register_profile(
    "hazardwatch", derandomize=True, database=None, deadline=None, print_blob=True
)
settings.register_profile(
    "explore", max_examples=1000, database=None, deadline=None, print_blob=True
)
settings.load_profile("hazardwatch")

_FOLDER_MARKERS = {
    "unit": "no I/O, fast",
    "integration": "real Mosquitto, InfluxDB and PostgreSQL started by session fixtures",
    "e2e": "the whole service, simulators and a real browser",
}


def pytest_configure(config: pytest.Config) -> None:
    """Declare the folder markers, so that ``-m "not integration"`` works."""
    for name, meaning in _FOLDER_MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {meaning}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with the name of its folder under ``tests/``."""
    tests_dir = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(tests_dir):
            folder = item.path.relative_to(tests_dir).parts[0]
            if folder in _FOLDER_MARKERS:
                item.add_marker(folder)
