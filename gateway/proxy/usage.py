"""Usage aggregated in memory and flushed to the store in batches (DESIGN §6):
nothing on the request path writes to the store or awaits anything.

Two aggregates: the last use of each key (``last_used_at``), and request counts per
key, minute, route prefix, status and client address (``key_usage``, the admin API's
``requests_last_hour`` and ``activity``). A flush that fails keeps both for the next.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from ..store import Store, StoreError, UsageCount

__all__ = ["UsageRecorder"]

log = logging.getLogger("gateway.usage")

# (key_id, minute as epoch seconds, route prefix, status, client address)
CountKey = tuple[str, int, str, int, str]
CHUNK = 5000  # keys per store call of a flush


class UsageRecorder:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._last_used: dict[str, float] = {}
        self._counts: dict[CountKey, int] = {}
        self.flush_errors = 0

    def record(self, key_id: str, now: float) -> None:
        self._last_used[key_id] = now

    def count(self, key_id: str, route: str, status: int, source: str, now: float) -> None:
        """One answered request of a key whose signature verified."""
        key = (key_id, int(now) // 60 * 60, route, status, source)
        self._counts[key] = self._counts.get(key, 0) + 1

    async def flush(self) -> None:
        """Write what was gathered, ``CHUNK`` keys per store call: what the store is
        handed is built in the event loop, and with 100,000 keys in use one call would
        hold it for a quarter of a second. A chunk that fails is kept, with every
        chunk after it, for the next flush."""
        uses = list(self._last_used.items())
        self._last_used = {}
        for i in range(0, len(uses), CHUNK):
            try:
                await self._store.touch_last_used(
                    {k: datetime.fromtimestamp(t, UTC) for k, t in uses[i:i + CHUNK]})
            except StoreError as exc:
                self.flush_errors += 1
                log.warning("usage flush failed: %s", exc)
                for key_id, t in uses[i:]:
                    self._last_used[key_id] = max(t, self._last_used.get(key_id, 0.0))
                break
        counts = list(self._counts.items())
        self._counts = {}
        minutes: dict[int, datetime] = {}
        for i in range(0, len(counts), CHUNK):
            part = counts[i:i + CHUNK]
            for (_, m, _, _, _), _ in part:
                if m not in minutes:
                    minutes[m] = datetime.fromtimestamp(m, UTC)
            try:
                await self._store.add_usage([UsageCount(k, minutes[m], r, s, src, n)
                                             for (k, m, r, s, src), n in part])
            except StoreError as exc:
                self.flush_errors += 1
                log.warning("usage counts flush failed: %s", exc)
                for key, n in counts[i:]:
                    self._counts[key] = self._counts.get(key, 0) + n
                break

    async def run(self, interval: float) -> None:
        try:
            while True:
                await asyncio.sleep(interval)
                await self.flush()
        finally:
            await self.flush()
