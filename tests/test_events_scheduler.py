"""The scheduler (issue 11, point 3): keys entering the warning window, expired or gone
inactive get ``key.expiring`` / ``key.expired`` / ``key.inactive`` once, however many
instances scan, on PostgreSQL. The clock is controlled by creating keys in the past."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.config import PolicyConfig, load_config
from gateway.events.manage import add_webhook
from gateway.events.model import EventFilter
from gateway.events.scheduler import Scheduler, scan
from gateway.kek import Keyring, load_keyring
from gateway.keys.lifecycle import Actor, KeyManager, NewKey
from gateway.store import Store, open_store

from .admin_client import until
from .conftest import free_port
from .event_receiver import Receiver
from .gateway_fixtures import Upstream, start_gateway, stop

DAY = 86400.0
ACTOR = Actor(principal="cli:test")
WARNING = 14 * DAY
POLICY = PolicyConfig(min_lifetime=1.0, inactivity=30 * DAY)


async def keys_due(store: Store, keyring: Keyring, n: int, now: datetime) -> dict[str, str]:
    """``n`` keys inside the warning window, one expired and one inactive: ID -> the
    event each is due."""
    manager = KeyManager(store, keyring, POLICY)
    due = {}
    for i in range(n):  # made a day ago, expiring in 6 days
        issued = await manager.create(NewKey(principal=f"p{i}", expiry=7 * DAY),
                                      actor=ACTOR, now=now - timedelta(days=1))
        due[issued.record.key_id] = "key.expiring"
    expired = await manager.create(NewKey(principal="gone", expiry=2 * DAY), actor=ACTOR,
                                   now=now - timedelta(days=3))
    idle = await manager.create(NewKey(principal="idle", expiry=90 * DAY), actor=ACTOR,
                                now=now - timedelta(days=31))  # never used: inactive
    fine = await manager.create(NewKey(principal="fine", expiry=60 * DAY), actor=ACTOR, now=now)
    due[expired.record.key_id] = "key.expired"
    due[idle.record.key_id] = "key.inactive"
    assert fine.record.key_id not in due
    return due


async def scheduled(store: Store) -> Counter[tuple[str, str]]:
    found = await store.list_events(EventFilter(), limit=1000)
    return Counter((e.event.target, e.event.type) for e in found
                   if e.event.type in ("key.expiring", "key.expired", "key.inactive"))


async def test_racing_scans_of_two_instances_emit_each_event_once(
        pg_dsn: str, keyring: Keyring) -> None:
    a, b = await open_store(pg_dsn), await open_store(pg_dsn)
    try:
        now = datetime.now(UTC)
        due = await keys_due(a, keyring, 20, now)
        # no lease: the unique dedup key alone must hold when scans truly race
        written = await asyncio.gather(*(scan(s, now=now, inactivity=POLICY.inactivity,
                                              warning=WARNING) for s in (a, b) * 4))
        assert sum(written) == len(due)
        counts = await scheduled(a)
        assert counts == Counter({(k, t): 1 for k, t in due.items()})
        (one,) = [e for e in await a.list_events(EventFilter(type="key.expiring",
                                                             target=next(iter(due))))]
        assert one.event.payload["cause"] == "expiry"
        assert one.event.payload["deadline"] == one.event.payload["key"]["expires_at"]
        # later scans find nothing new
        assert await scan(b, now=now + timedelta(minutes=1), inactivity=POLICY.inactivity,
                          warning=WARNING) == 0
    finally:
        await a.close()
        await b.close()


async def test_only_the_lease_holder_scans_and_another_takes_over_when_it_lapses(
        pg_dsn: str) -> None:
    a, b = await open_store(pg_dsn), await open_store(pg_dsn)
    now = datetime.now(UTC)

    def at(offset: float) -> Callable[[], datetime]:
        return lambda: now + timedelta(seconds=offset)

    try:
        first = Scheduler(a, inactivity=POLICY.inactivity, warning=WARNING, interval=60,
                          clock=at(0))
        second = Scheduler(b, inactivity=POLICY.inactivity, warning=WARNING, interval=60,
                           clock=at(1))
        assert await first.tick() == 0 and await second.tick() is None
        second.clock = at(121)  # the first holder's lease (2 intervals) has lapsed
        assert await second.tick() == 0
        first.clock = at(122)
        assert await first.tick() is None
    finally:
        await a.close()
        await b.close()


async def test_two_gateways_on_postgres_deliver_each_key_expiring_once(
        tmp_path: Path, upstream: Upstream, pg_dsn: str) -> None:
    events = ('[events]\nscheduler_interval = "100ms"\ndeliver_interval = "50ms"\n'
              'retry_base = "50ms"\ntimeout = "1s"\n')
    receiver = await Receiver(free_port()).start()
    first = start_gateway(tmp_path, upstream, events, store_url=pg_dsn, name="first")
    second = start_gateway(tmp_path, upstream, events, store_url=pg_dsn, name="second")
    config = load_config(first.config_path, env={})
    keyring = load_keyring(config.kek.keyring)
    store = await open_store(pg_dsn)
    try:
        webhook, secret = await add_webhook(store, keyring, receiver.url, ["key.expiring"],
                                            actor=ACTOR, now=datetime.now(UTC))
        receiver.secrets[webhook.id] = secret.hmac_key()
        due = await keys_due(store, keyring, 5, datetime.now(UTC))
        expiring = {k for k, t in due.items() if t == "key.expiring"}

        def told() -> set[str]:
            return {d.body["target"] for d in receiver.deliveries}

        async def everyone_told() -> bool:
            return told() == expiring

        await until(everyone_told, "a key.expiring delivery per key")
        # one instance stops: if it held the lease the other takes over once it lapses;
        # either way only the new key is warned
        stop(first.proc)
        manager = KeyManager(store, keyring, POLICY)
        late = await manager.create(NewKey(principal="late", expiry=5 * DAY), actor=ACTOR,
                                    now=datetime.now(UTC))
        expiring.add(late.record.key_id)
        await until(everyone_told, "the late key's warning from the other instance")
        assert receiver.refused == []
        counts = await scheduled(store)
        assert {k: n for (k, t), n in counts.items() if t == "key.expiring"} == \
            dict.fromkeys(expiring, 1)
        ids: dict[str, set[str]] = {}
        for d in receiver.deliveries:  # at least once, so maybe twice, but one event ID
            ids.setdefault(d.body["target"], set()).add(d.event_id)
        assert all(len(v) == 1 for v in ids.values()), ids
    finally:
        await store.close()
        stop(first.proc)
        stop(second.proc)
        await receiver.stop()
