"""Shared test configuration: markers by test folder."""

from __future__ import annotations

from pathlib import Path

import pytest

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
