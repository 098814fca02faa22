"""Usage aggregated in memory and flushed to the store in batches (DESIGN §6):
nothing on the request path writes to the store."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from ..store import Store, StoreError

__all__ = ["UsageRecorder"]

log = logging.getLogger("gateway.usage")


class UsageRecorder:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._last_used: dict[str, float] = {}

    def record(self, key_id: str, now: float) -> None:
        self._last_used[key_id] = now

    async def flush(self) -> None:
        if not self._last_used:
            return
        pending, self._last_used = self._last_used, {}
        uses = {k: datetime.fromtimestamp(t, UTC) for k, t in pending.items()}
        try:
            await self._store.touch_last_used(uses)
        except StoreError as exc:  # keep them for the next flush
            log.warning("usage flush failed: %s", exc)
            for key_id, t in pending.items():
                self._last_used[key_id] = max(t, self._last_used.get(key_id, 0.0))

    async def run(self, interval: float) -> None:
        try:
            while True:
                await asyncio.sleep(interval)
                await self.flush()
        finally:
            await self.flush()
