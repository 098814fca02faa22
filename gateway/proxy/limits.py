"""Replay protection and rate limits: shared through Redis when it is there and
healthy, per process otherwise (DESIGN §5: Redis down degrades, never fails)."""

from __future__ import annotations

from .replay import ReplayGuard
from .shared import RedisDown, SharedTier

__all__ = ["Limits"]


class _LocalGCRA:
    def __init__(self) -> None:
        self._tat: dict[str, float] = {}

    def allow(self, key_id: str, rps: float, burst: int, now: float) -> tuple[bool, float]:
        interval = 1.0 / rps
        tat = max(self._tat.get(key_id, now), now)
        new_tat = tat + interval
        if new_tat - now > interval * burst:
            return False, new_tat - now - interval * burst
        self._tat[key_id] = new_tat
        return True, 0.0


class Limits:
    def __init__(self, shared: SharedTier | None) -> None:
        self.shared = shared
        self.local_replay = ReplayGuard()
        self._local_rate = _LocalGCRA()
        self.fallbacks = 0  # decisions taken per process because Redis was unavailable

    async def first_use(self, token: bytes, until: int, now: float) -> bool:
        """False if this replay token was seen (by any instance) inside its window."""
        shared = self.shared
        if shared is not None and shared.healthy:
            try:
                return await shared.claim(token, until - now) is not None
            except RedisDown:
                pass
        if shared is not None:
            self.fallbacks += 1
        return self.local_replay.first_use(token, until, now)

    async def allow(self, key_id: str, rps: float, burst: int, now: float
                    ) -> tuple[bool, float]:
        shared = self.shared
        if shared is not None and shared.healthy:
            try:
                return await shared.allow(key_id, rps, burst)
            except RedisDown:
                pass
        if shared is not None:
            self.fallbacks += 1
        return self._local_rate.allow(key_id, rps, burst, now)
