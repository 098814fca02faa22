"""The admin API's store contract (schema version 2), on SQLite and PostgreSQL alike:
usage counts, TOTP enrolments with their one-use time steps, audit filters, key counts."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from gateway.kek import Keyring
from gateway.keys.lifecycle import KeyManager, NewKey
from gateway.keys.record import AuditEntry
from gateway.keys.rewrap import rewrap_all
from gateway.store import AuditFilter, KeyFilter, MfaEnrolment, Store, UsageCount

from .keystore_fixtures import ACTOR, NOW

MINUTE = timedelta(minutes=1)


async def test_usage_counts_add_up_per_route_status_and_source(store: Store) -> None:
    key = "gwk_" + "a" * 28
    other = "gwk_" + "b" * 28
    await store.add_usage([
        UsageCount(key, NOW - 90 * MINUTE, "/api/", 200, "10.0.0.1", 7),  # before the window
        UsageCount(key, NOW, "/api/", 200, "10.0.0.1", 3),
        UsageCount(key, NOW, "/api/", 403, "10.0.0.2", 1),
        UsageCount(key, NOW + MINUTE, "/open/", 200, "10.0.0.1", 2),
        UsageCount(other, NOW, "/api/", 200, "10.0.0.9", 50),
    ])
    # a second flush of the same minute adds to the row instead of replacing it
    await store.add_usage([UsageCount(key, NOW, "/api/", 200, "10.0.0.1", 4)])
    got = await store.activity(key, NOW - 60 * MINUTE + timedelta(seconds=30))
    assert got.routes == [("/api/", 200, 7), ("/api/", 403, 1), ("/open/", 200, 2)]
    assert got.sources == [("10.0.0.1", 9), ("10.0.0.2", 1)]
    assert got.total == 10
    assert (await store.activity(key, NOW - 2 * 60 * MINUTE)).total == 17
    assert (await store.activity("gwk_" + "c" * 28, NOW)).routes == []


async def test_mfa_enrolment_is_once_per_principal_and_steps_are_used_once(
        store: Store, keyring: Keyring) -> None:
    wrapped = keyring.wrap(b"totp-seed", "p1", b"s" * 20)
    assert await store.get_mfa("alice") is None
    async with store.transaction() as tx:
        assert await tx.insert_mfa(MfaEnrolment("alice", wrapped, NOW))
    async with store.transaction() as tx:
        assert not await tx.insert_mfa(MfaEnrolment("alice", wrapped, NOW + MINUTE))
    got = await store.get_mfa("alice")
    assert got == MfaEnrolment("alice", wrapped, NOW, 0)
    assert keyring.unwrap(b"totp-seed", "p1", got.wrapped) == b"s" * 20
    assert await store.use_mfa_step("alice", 100)
    assert not await store.use_mfa_step("alice", 100)  # the same code again
    assert not await store.use_mfa_step("alice", 99)  # an older one
    assert await store.use_mfa_step("alice", 101)
    assert not await store.use_mfa_step("bob", 5)  # not enrolled


async def test_two_concurrent_uses_of_one_step_accept_exactly_one(store: Store,
                                                                  keyring: Keyring) -> None:
    async with store.transaction() as tx:
        await tx.insert_mfa(MfaEnrolment("carol", keyring.wrap(b"totp-seed", "c", b"x" * 20),
                                         NOW))
    results = await asyncio.gather(*(store.use_mfa_step("carol", 7) for _ in range(10)))
    assert sorted(results) == [False] * 9 + [True]


async def test_audit_filters_and_pagination(store: Store, manager: KeyManager) -> None:
    a = await manager.create(NewKey(principal="svc"), actor=ACTOR, now=NOW)
    await manager.revoke(a.record.key_id, actor=ACTOR, now=NOW + MINUTE, reason="leaked")
    async with store.transaction() as tx:
        await tx.add_audit([AuditEntry(
            at=NOW + 2 * MINUTE, actor_key_id=a.record.key_id, actor_principal="svc",
            action="admin.auth_failed", target=None, source="127.0.0.1", outcome="failure",
            details={"error": "key_revoked"})])
    by_key = await store.find_audit(AuditFilter(key_id=a.record.key_id))
    assert [e.action for e in by_key] == ["key.created", "key.revoked", "admin.auth_failed"]
    assert [e.action for e in await store.find_audit(AuditFilter(actor="svc"))] == [
        "admin.auth_failed"]
    assert [e.action for e in await store.find_audit(AuditFilter(actor=ACTOR.principal))] == [
        "key.created", "key.revoked"]
    window = AuditFilter(since=NOW + MINUTE, until=NOW + 2 * MINUTE)
    assert [e.action for e in await store.find_audit(window)] == ["key.revoked"]
    first = await store.find_audit(AuditFilter(), limit=2)
    rest = await store.find_audit(AuditFilter(), limit=2, after=first[-1].id)
    assert [e.action for e in first + rest] == ["key.created", "key.revoked",
                                                "admin.auth_failed"]
    assert await store.list_audit(action="key.revoked") == [by_key[1]]


async def test_count_keys_by_status(store: Store, manager: KeyManager) -> None:
    a = await manager.create(NewKey(principal="p1"), actor=ACTOR, now=NOW)
    await manager.create(NewKey(principal="p2"), actor=ACTOR, now=NOW)
    await manager.revoke(a.record.key_id, actor=ACTOR, now=NOW)
    counts = {s: await store.count_keys(KeyFilter(status=s), now=NOW + MINUTE,
                                        inactivity=manager.policy.inactivity)
              for s in ("active", "revoked", "expired")}
    assert counts == {"active": 1, "revoked": 1, "expired": 0}
    assert await store.count_keys(KeyFilter(), now=NOW, inactivity=0) == 2


async def test_kek_rotation_rewraps_mfa_seeds_too(store: Store, manager: KeyManager,
                                                  keyring: Keyring) -> None:
    await manager.create(NewKey(principal="svc"), actor=ACTOR, now=NOW)
    async with store.transaction() as tx:
        await tx.insert_mfa(MfaEnrolment("ops", keyring.wrap_totp_seed("ops", b"z" * 20), NOW))
    assert await store.count_by_kek_version() == {1: 2}  # a key secret and a seed
    ring = keyring.with_new_version(NOW).activated(2)
    assert await rewrap_all(store, ring, actor=ACTOR, now=lambda: NOW) == 2
    assert await store.count_by_kek_version() == {2: 2}  # so `kek retire 1` may proceed
    retired = ring.without(1)
    enrolment = await store.get_mfa("ops")
    assert retired.unwrap_totp_seed("ops", enrolment.wrapped) == b"z" * 20
