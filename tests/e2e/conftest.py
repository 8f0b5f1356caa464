"""Fixtures of the end-to-end tests: the servers of the integration tests, and a browser."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Playwright, sync_playwright

from tests.integration.conftest import (  # noqa: F401 - fixtures for the tests here
    influx_db,
    influxdb,
    mosquitto_factory,
)
from tests.integration.sites import site_factory  # noqa: F401 - a fixture for the tests
from tests.servers import require_binary

CHROMIUM = "/usr/bin/chromium"  # Debian's package (scripts/setup --servers installs it)


# Module-scoped, not session-scoped: Playwright's sync API holds an event loop of its own
# while it is open, and the async tests of other folders cannot run their loops beside it.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Debian's Chromium, headless."""
    launched = playwright.chromium.launch(
        executable_path=require_binary(CHROMIUM), headless=True, args=["--no-sandbox"]
    )
    yield launched
    launched.close()
