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
CHUNK = 2000  # keys converted between two yields to the event loop


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
        """Write what was gathered, each aggregate in one store call (one transaction:
        cheaper than several). Building what the store is handed runs in the event
        loop, so it yields every ``CHUNK`` keys: with 100,000 keys in use it would
        otherwise hold the loop for a quarter of a second. A failed write is kept for
        the next flush."""
        if self._last_used:
            pending, self._last_used = self._last_used, {}
            uses: dict[str, datetime] = {}
            for n, (key_id, t) in enumerate(pending.items(), 1):
                uses[key_id] = datetime.fromtimestamp(t, UTC)
                if n % CHUNK == 0:
                    await asyncio.sleep(0)
            try:
                await self._store.touch_last_used(uses)
            except StoreError as exc:  # keep them for the next flush
                self.flush_errors += 1
                log.warning("usage flush failed: %s", exc)
                for key_id, t in pending.items():
                    self._last_used[key_id] = max(t, self._last_used.get(key_id, 0.0))
        if self._counts:
            counts, self._counts = self._counts, {}
            minutes: dict[int, datetime] = {}  # a flush spans a handful of minutes
            rows: list[UsageCount] = []
            for n, ((key_id, m, route, status, source), count) in enumerate(counts.items(), 1):
                minute = minutes.get(m)
                if minute is None:
                    minute = minutes[m] = datetime.fromtimestamp(m, UTC)
                rows.append(UsageCount(key_id, minute, route, status, source, count))
                if n % CHUNK == 0:
                    await asyncio.sleep(0)
            try:
                await self._store.add_usage(rows)
            except StoreError as exc:
                self.flush_errors += 1
                log.warning("usage counts flush failed: %s", exc)
                for key, count in counts.items():
                    self._counts[key] = self._counts.get(key, 0) + count

    async def run(self, interval: float) -> None:
        """Flush every ``interval`` until cancelled, then once more. A flush under way
        when the cancellation comes is shielded from it and finished first: cut short,
        it would have taken its aggregates out of the recorder and written nothing, or
        written them without our knowing."""
        flushing: asyncio.Future[None] | None = None
        try:
            while True:
                await asyncio.sleep(interval)
                flushing = asyncio.ensure_future(self.flush())
                await asyncio.shield(flushing)
        finally:
            if flushing is not None:
                await flushing
            await self.flush()
