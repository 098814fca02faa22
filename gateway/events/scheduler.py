"""The scheduler: keys entering the warning window, expired, gone inactive (issue 11).

Every ``[events] scheduler_interval`` one instance — whichever holds the store's
``scheduler`` lease — scans the keys whose deadline (the earlier of ``expires_at``
and the inactivity deadline, as for ``Gateway-Key-Expires``) lies within ``[auth]
expiry_warning``, and emits ``key.expiring`` (active or rotating keys),
``key.expired`` or ``key.inactive``. Each carries a dedup key ``key|type|deadline``
that is unique in the store: the lease saves work, the constraint guarantees once,
even when two scans race.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from gateway.errors import GatewayError
from gateway.events.model import Event, key_event
from gateway.keys.record import KeyRecord, rfc3339
from gateway.store import KeyFilter, Store

__all__ = ["LEASE", "Scheduler", "due_event", "scan"]

log = logging.getLogger("gateway.events")
LEASE = "scheduler"
PAGE = 1000


def due_event(record: KeyRecord, now: datetime, inactivity: float, warning: float
              ) -> Event | None:
    """The scheduled event a key is due, if any (a pure function)."""
    deadline = record.deadline(inactivity)
    if deadline is None or deadline > now + timedelta(seconds=warning):
        return None
    status = record.status(now, inactivity)
    if status == "revoked":
        return None
    if status in ("expired", "inactive"):
        return key_event(f"key.{status}", record, now, inactivity, dedup=True)
    cause = "expiry" if deadline == record.expires_at else "inactivity"
    return key_event("key.expiring", record, now, inactivity, dedup=True,
                     deadline=rfc3339(deadline), cause=cause)


async def scan(store: Store, *, now: datetime, inactivity: float, warning: float) -> int:
    """Emit every scheduled event due at ``now``; how many were written."""
    where = KeyFilter(deadline_before=now + timedelta(seconds=warning))
    written = 0
    cursor = None
    while True:
        page = await store.list_keys(where, now=now, inactivity=inactivity, limit=PAGE,
                                     cursor=cursor)
        due = [e for r in page.items if (e := due_event(r, now, inactivity, warning))]
        known = await store.existing_dedups([e.dedup for e in due if e.dedup])
        fresh = [e for e in due if e.dedup not in known]
        if fresh:
            async with store.transaction() as tx:
                written += len(await tx.add_events(fresh))
        cursor = page.next_cursor
        if cursor is None:
            return written


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Scheduler:
    def __init__(self, store: Store, *, inactivity: float, warning: float, interval: float,
                 clock: Callable[[], datetime] = _utcnow) -> None:
        self.store = store
        self.inactivity = inactivity
        self.warning = warning
        self.interval = interval
        self.clock = clock
        self.holder = f"scheduler-{secrets.token_hex(8)}"

    async def tick(self) -> int | None:
        """One scan if this instance holds the lease (None when another does)."""
        now = self.clock()
        until = now + timedelta(seconds=2 * self.interval)
        if not await self.store.acquire_lease(LEASE, self.holder, now, until):
            return None
        return await scan(self.store, now=now, inactivity=self.inactivity,
                          warning=self.warning)

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except GatewayError as exc:
                log.warning("event scheduler: %s", exc.message)
            except Exception:
                log.exception("event scheduler failed")
            await asyncio.sleep(self.interval)
