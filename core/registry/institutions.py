"""The institutions of the registry in memory: for notifications and scopes, without SQL.

Notifications name the institution, its town and its principal; scopes of town offices list
their towns' institutions. Both must work while the SQL database is away, so they read this
copy, which is loaded at the start and refreshed every minute (and after a registry import).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable

from core.health import Component
from core.loops import repeat
from core.registry.models import Institution
from core.registry.repository import RegistryRepository

log = logging.getLogger(__name__)

REFRESH_S = 60.0


class InstitutionCache:
    """Every institution by id, read from the registry."""

    def __init__(self, repository: RegistryRepository) -> None:
        self._repository = repository
        self._lock = threading.Lock()
        self._by_id: dict[str, Institution] = {}

    def load(self) -> int:
        """Read them all again (blocking); how many."""
        found = {item.id: item for item in self._repository.institutions()}
        with self._lock:
            self._by_id = found
        return len(found)

    def get(self, institution_id: str) -> Institution | None:
        """One institution, or None."""
        with self._lock:
            return self._by_id.get(institution_id)

    def in_towns(self, towns: Iterable[str]) -> list[str]:
        """The ids of the institutions in these towns."""
        wanted = set(towns)
        with self._lock:
            return [i.id for i in self._by_id.values() if i.town in wanted]

    async def run(self, component: Component) -> None:
        """Refresh every minute, until cancelled; the old copy stays while the database is away."""
        await asyncio.sleep(REFRESH_S)
        await repeat(component, self.load, every_s=REFRESH_S)
