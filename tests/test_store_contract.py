"""One contract for every store backend: the same tests, SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
from .keystore_fixtures import ACTOR, NOW

from gateway.events.model import Event, EventFilter, Webhook
from gateway.config import PolicyConfig
from gateway.kek import Keyring
from gateway.keys.lifecycle import KeyManager, NewKey
from gateway.keys.record import STATUSES, AuditEntry, KeyRecord
from gateway.store import KeyFilter, MfaEnrolment, Store, Transaction, open_store

DAY = timedelta(days=1)


async def test_schema_is_created_on_first_use_and_migrating_again_is_a_no_op(
        store: Store, store_url: str) -> None:
    assert await store.schema_version() == 3
    assert await store.migrate() == []
    again = await open_store(store_url)
    try:
        assert await again.migrate() == []
        assert await again.schema_version() == 3
    finally:
        await again.close()


async def test_created_key_reads_back_by_id_and_by_secret_hash(manager: KeyManager) -> None:
    issued = await manager.create(NewKey(principal="ci", name="deploy", scopes=("api:read",)),
                                  actor=ACTOR, now=NOW)
    got = await manager.store.get_key(issued.record.key_id)
    assert got == issued.record
    assert got.expires_at == NOW + timedelta(days=90)  # policy.default_lifetime
    by_hash = await manager.store.get_key_by_secret_sha256(issued.record.secret_sha256)
    assert by_hash == issued.record
    _record, secret = await manager.get_with_secret(issued.record.key_id)
    assert secret == issued.secret
    assert await manager.store.get_key("gwk_" + "0" * 28) is None


async def test_every_change_writes_audit_and_change_log(manager: KeyManager) -> None:
    store = manager.store
    start = await store.max_change_seq()
    a = await manager.create(NewKey(principal="svc"), actor=ACTOR, now=NOW)
    b = await manager.rotate(a.record.key_id, actor=ACTOR, now=NOW + DAY)
    await manager.renew(b.record.key_id, actor=ACTOR, now=NOW + DAY, expiry=30 * 86400.0)
    await manager.revoke(b.record.key_id, actor=ACTOR, now=NOW + 2 * DAY, reason="leaked")
    changes = await store.changes_since(start)
    assert [(c.key_id, c.kind) for c in changes] == [
        (a.record.key_id, "created"), (a.record.key_id, "rotated"),
        (b.record.key_id, "created"), (b.record.key_id, "renewed"),
        (b.record.key_id, "revoked")]
    assert [c.seq for c in changes] == sorted(c.seq for c in changes)
    assert await store.max_change_seq() == changes[-1].seq
    assert await store.changes_since(changes[-1].seq) == []
    audit = await store.list_audit()
    assert [(e.action, e.target) for e in audit] == [
        ("key.created", a.record.key_id), ("key.rotated", a.record.key_id),
        ("key.created", b.record.key_id), ("key.renewed", b.record.key_id),
        ("key.revoked", b.record.key_id)]
    assert all(e.actor_principal == "cli:tester" and e.actor_key_id is None for e in audit)
    assert audit[-1].details == {"reason": "leaked"}
    assert [e.action for e in await store.list_audit(target=b.record.key_id)] == [
        "key.created", "key.renewed", "key.revoked"]


async def _one_of_each_status(manager: KeyManager, policy: PolicyConfig) -> dict[str, str]:
    """Keys that are, at NOW, in each of the five statuses; status -> key_id."""
    policy_lifetime = timedelta(seconds=policy.inactivity)
    active = await manager.create(NewKey(principal="p1"), actor=ACTOR, now=NOW)
    old = await manager.create(NewKey(principal="p2"), actor=ACTOR, now=NOW - DAY)
    await manager.rotate(old.record.key_id, actor=ACTOR, now=NOW - DAY / 2)  # grace 24h
    revoked = await manager.create(NewKey(principal="p3"), actor=ACTOR, now=NOW - DAY)
    await manager.revoke(revoked.record.key_id, actor=ACTOR, now=NOW - DAY / 2)
    expired = await manager.create(NewKey(principal="p4", expiry=86400.0), actor=ACTOR,
                                   now=NOW - 2 * DAY)
    inactive = await manager.create(NewKey(principal="p5", expiry=300 * 86400.0), actor=ACTOR,
                                    now=NOW - policy_lifetime + DAY * 200)
    await manager.store.touch_last_used({inactive.record.key_id: NOW - policy_lifetime})
    return {"active": active.record.key_id, "rotating": old.record.key_id,
            "revoked": revoked.record.key_id, "expired": expired.record.key_id,
            "inactive": inactive.record.key_id}


async def test_status_is_derived_from_time_and_the_filter_agrees(
        manager: KeyManager, policy: PolicyConfig) -> None:
    expected = await _one_of_each_status(manager, policy)
    for status in STATUSES:
        record = await manager.get(expected[status])
        assert record.status(NOW, policy.inactivity) == status
        page = await manager.store.list_keys(KeyFilter(status=status), now=NOW,
                                             inactivity=policy.inactivity)
        listed = {r.key_id for r in page.items}
        assert expected[status] in listed
        assert all(r.status(NOW, policy.inactivity) == status for r in page.items)
    # with inactivity off (0s) nothing is inactive
    off = await manager.store.list_keys(KeyFilter(status="inactive"), now=NOW, inactivity=0)
    assert off.items == []


async def test_rotated_key_is_rotating_until_the_grace_ends_then_revoked(
        manager: KeyManager) -> None:
    old = await manager.create(NewKey(principal="svc"), actor=ACTOR, now=NOW)
    new = await manager.rotate(old.record.key_id, actor=ACTOR, now=NOW, grace=3600.0)
    rec = await manager.get(old.record.key_id)
    inactivity = manager.policy.inactivity
    assert rec.rotated_to == new.record.key_id and new.record.rotated_from == rec.key_id
    assert rec.status(NOW + timedelta(minutes=59), inactivity) == "rotating"
    assert rec.status(NOW + timedelta(hours=1), inactivity) == "revoked"
    assert rec.revoke_reason == "rotated"
    assert new.record.scopes == old.record.scopes and new.record.principal == "svc"


async def test_listing_filters_and_cursor_pagination(
        store: Store, keyring: Keyring, policy: PolicyConfig) -> None:
    manager = KeyManager(store, keyring, replace(policy, max_active_keys_per_principal=10))
    ids = []
    for i in range(7):
        issued = await manager.create(NewKey(principal=f"team-{i % 2}", name=f"k{i}"),
                                      actor=ACTOR, now=NOW + timedelta(minutes=i))
        ids.append(issued.record.key_id)
    store, inact = manager.store, manager.policy.inactivity
    seen: list[str] = []
    cursor = None
    while True:
        page = await store.list_keys(KeyFilter(), now=NOW, inactivity=inact, limit=3,
                                     cursor=cursor)
        seen += [r.key_id for r in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ids  # creation order, each once
    team0 = await store.list_keys(KeyFilter(principal="team-0"), now=NOW, inactivity=inact)
    assert [r.key_id for r in team0.items] == ids[0::2]
    mid = await store.list_keys(KeyFilter(created_after=NOW + timedelta(minutes=1),
                                          created_before=NOW + timedelta(minutes=4)),
                                now=NOW, inactivity=inact)
    assert [r.key_id for r in mid.items] == ids[2:4]
    await store.touch_last_used({ids[0]: NOW + timedelta(hours=5)})
    unused = await store.list_keys(KeyFilter(unused_since=NOW + timedelta(hours=1)),
                                   now=NOW, inactivity=inact)
    assert [r.key_id for r in unused.items] == ids[1:]
    soon = await store.list_keys(KeyFilter(expires_before=NOW + timedelta(days=90, minutes=2)),
                                 now=NOW, inactivity=inact)
    assert [r.key_id for r in soon.items] == ids[:2]
    mfa = await store.list_keys(KeyFilter(issued_with_mfa=True), now=NOW, inactivity=inact)
    no_mfa = await store.list_keys(KeyFilter(issued_with_mfa=False), now=NOW, inactivity=inact)
    assert mfa.items == [] and [r.key_id for r in no_mfa.items] == ids  # the CLI issues none


async def test_last_used_never_moves_backwards(manager: KeyManager) -> None:
    issued = await manager.create(NewKey(principal="svc"), actor=ACTOR, now=NOW)
    key_id = issued.record.key_id
    await manager.store.touch_last_used({key_id: NOW + timedelta(hours=2)})
    await manager.store.touch_last_used({key_id: NOW + timedelta(hours=1)})
    assert (await manager.get(key_id)).last_used_at == NOW + timedelta(hours=2)


class InjectedFault(Exception):
    pass


class _AuditFails(Transaction):
    """A real transaction whose audit write fails: nothing of the change may remain."""

    def __init__(self, inner: Transaction) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def lock_principals(self, principals: Sequence[str]) -> None:
        await self._inner.lock_principals(principals)

    async def live_keys(self, principals: Sequence[str], now: datetime) -> list[KeyRecord]:
        return await self._inner.live_keys(principals, now)

    async def get_key(self, key_id: str) -> KeyRecord | None:
        return await self._inner.get_key(key_id)

    async def insert_keys(self, records: Sequence[KeyRecord]) -> None:
        await self._inner.insert_keys(records)

    async def update_key(self, record: KeyRecord) -> None:
        await self._inner.update_key(record)

    async def add_changes(self, changes: Sequence[tuple[str, str, datetime]]) -> None:
        await self._inner.add_changes(changes)

    async def insert_mfa(self, enrolment: MfaEnrolment) -> bool:
        return await self._inner.insert_mfa(enrolment)

    async def add_events(self, events: Sequence[Event]) -> list[Event]:
        return await self._inner.add_events(events)

    async def insert_webhook(self, webhook: Webhook) -> None:
        await self._inner.insert_webhook(webhook)

    async def delete_webhook(self, webhook_id: str) -> bool:
        return await self._inner.delete_webhook(webhook_id)

    async def redeliver(self, event_id: str, now: datetime) -> bool:
        return await self._inner.redeliver(event_id, now)

    async def add_audit(self, entries: Sequence[AuditEntry]) -> None:
        raise InjectedFault("audit write failed")


async def test_a_failed_audit_write_leaves_no_key_and_no_change(
        store: Store, keyring: Keyring, policy: PolicyConfig) -> None:
    real_transaction = store.transaction

    @asynccontextmanager
    async def failing() -> AsyncIterator[Transaction]:
        async with real_transaction() as tx:
            yield _AuditFails(tx)

    store.transaction = failing  # type: ignore[method-assign]
    manager = KeyManager(store, keyring, policy)
    with pytest.raises(InjectedFault):
        await manager.create(NewKey(principal="svc"), actor=ACTOR, now=NOW)
    store.transaction = real_transaction  # type: ignore[method-assign]
    page = await store.list_keys(KeyFilter(), now=NOW, inactivity=0)
    assert page.items == []
    assert await store.max_change_seq() == 0
    assert await store.list_audit() == []
    assert await store.list_events(EventFilter()) == []  # nor an event in the outbox


async def _dump(store_url: str) -> tuple[str, bytes]:
    """Every cell of every table, straight from the database: (as text, as bytes)."""
    texts: list[str] = []
    blobs: list[bytes] = []

    def add(value: Any) -> None:
        if isinstance(value, (bytes, memoryview)):
            blobs.append(bytes(value))
            texts.append(bytes(value).hex())
        else:
            texts.append(str(value))

    if store_url.startswith("sqlite://"):
        conn = sqlite3.connect(store_url[len("sqlite://"):])
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for t in tables:
            for row in conn.execute(f'SELECT * FROM "{t}"'):
                for v in row:
                    add(v)
        conn.close()
        assert {"keys", "audit", "key_changes", "schema_migrations"} <= set(tables)
    else:
        conn = await asyncpg.connect(store_url)
        tables = [r[0] for r in await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = "
            "current_schema()")]
        for t in tables:
            for row in await conn.fetch(f'SELECT * FROM "{t}"'):
                for v in row.values():
                    add(v)
        await conn.close()
        assert {"keys", "audit", "key_changes", "schema_migrations"} <= set(tables)
    return "\x00".join(texts), b"\x00".join(blobs)


async def test_database_dump_holds_no_secret_nor_any_8_character_piece_of_one(
        manager: KeyManager, store_url: str) -> None:
    secrets = []
    for i in range(4):
        issued = await manager.create(NewKey(principal=f"p{i}", scopes=("api:read",)),
                                      actor=ACTOR, now=NOW)
        secrets.append(issued.secret.reveal())
    rotated = await manager.rotate(issued.record.key_id, actor=ACTOR, now=NOW)
    secrets.append(rotated.secret.reveal())
    text, blob = await _dump(store_url)
    assert issued.record.key_id in text  # the dump did see the rows
    for secret in secrets:
        for i in range(len(secret) - 7):
            piece = secret[i:i + 8]
            assert piece not in text, f"secret piece {piece!r} found in the database"
            assert piece.encode() not in blob
            assert piece.encode().hex() not in text


async def test_rewrap_batches_move_every_record_to_the_target_version(
        store: Store, policy: PolicyConfig) -> None:
    ring1 = Keyring.generate(NOW)
    wide = replace(policy, max_active_keys_per_principal=100)
    manager = KeyManager(store, ring1, wide)
    issued = await manager.create_many([NewKey(principal="bulk") for _ in range(25)],
                                       actor=ACTOR, now=NOW)
    ring2 = ring1.with_new_version(NOW).activated(2)

    def rewrap(key_id: str, w: Any) -> Any:
        return ring2.wrap_secret(key_id, ring2.unwrap_secret(key_id, w))

    assert await store.count_by_kek_version() == {1: 25}
    assert await store.rewrap_batch(2, 10, rewrap, NOW) == 10
    assert await store.count_by_kek_version() == {1: 15, 2: 10}
    while await store.rewrap_batch(2, 10, rewrap, NOW):
        pass
    assert await store.count_by_kek_version() == {2: 25}
    for i in issued:
        rec = await store.get_key(i.record.key_id)
        assert rec is not None and ring2.unwrap_secret(rec.key_id, rec.wrapped) == i.secret
    kinds = [c.kind for c in await store.changes_since(0, limit=100)]
    assert kinds.count("rewrapped") == 25
