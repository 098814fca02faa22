"""Revoke a rotated key once it has gone quiet: ``keys rotate --wait-idle D --revoke-old``,
or ``keys revoke KEY_ID --wait-idle D`` after a rotation made elsewhere (the admin API).

Usage reaches the store at least every ``[usage] flush``, so "idle for D" is only
believed after D *plus* one flush interval without a recorded use (DESIGN.md §4.1):
a key still in use is never revoked. The clock and the sleep are parameters.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from gateway.keys.lifecycle import Actor, KeyManager
from gateway.keys.record import KeyRecord

__all__ = ["revoke_when_idle"]


async def revoke_when_idle(manager: KeyManager, key_id: str, *, idle: float, flush: float,
                           actor: Actor, clock: Callable[[], datetime],
                           sleep: Callable[[float], Awaitable[None]],
                           since: datetime, reason: str = "rotated") -> KeyRecord:
    """Wait until ``key_id`` has not been used for ``idle + flush`` seconds (counting from
    its last use, or from ``since`` when it was not used after that), then revoke it with
    ``reason``. Returns at once if the key gets revoked some other way meanwhile."""
    quiet = timedelta(seconds=idle + flush)
    while True:
        record = await manager.get(key_id)
        now = clock()
        if record.status(now, manager.policy.inactivity) == "revoked":
            return record
        last = max(record.last_used_at or since, since)
        if now - last >= quiet:
            return await manager.revoke(key_id, actor=actor, now=now, reason=reason)
        await sleep(min((last + quiet - now).total_seconds(), max(flush, 1.0)))
