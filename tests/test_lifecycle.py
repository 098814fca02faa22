"""Lifecycle rules: policy bounds, limits, state changes, and their atomicity under load."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from .keystore_fixtures import ACTOR, NOW

from gateway.config import PolicyConfig
from gateway.kek import Keyring
from gateway.keys.errors import (
    KeyLifecycleError,
    KeyLimitReached,
    KeyNotFound,
    MalformedKeyId,
    PolicyViolation,
)
from gateway.keys.formats import generate_key_id
from gateway.keys.idle import revoke_when_idle
from gateway.keys.lifecycle import (
    NEVER,
    Actor,
    KeyManager,
    NewKey,
    resolve_expiry,
    resolve_grace,
)
from gateway.keys.record import KeyRecord, RateLimit
from gateway.store import KeyFilter, Store
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SQLiteStore

DAY = timedelta(days=1)
POLICY = PolicyConfig()


def test_expiry_defaults_and_bounds() -> None:
    assert resolve_expiry(POLICY, None, NOW) == NOW + 90 * DAY
    assert resolve_expiry(POLICY, 86400.0, NOW) == NOW + DAY
    assert resolve_expiry(POLICY, NOW + 365 * DAY, NOW) == NOW + 365 * DAY
    for too_short_or_long in (86399.0, 366 * 86400.0, NOW + DAY / 2, NOW - DAY):
        with pytest.raises(PolicyViolation, match="between 1d and 365d"):
            resolve_expiry(POLICY, too_short_or_long, NOW)
    with pytest.raises(PolicyViolation, match="allow_no_expiry"):
        resolve_expiry(POLICY, NEVER, NOW)
    assert resolve_expiry(replace(POLICY, allow_no_expiry=True), NEVER, NOW) is None
    short = replace(POLICY, min_lifetime=1.0, default_lifetime=1.0)
    assert resolve_expiry(short, None, NOW) == NOW + timedelta(seconds=1)


def test_grace_bounds() -> None:
    assert resolve_grace(POLICY, None) == 86400.0
    assert resolve_grace(POLICY, 0.0) == 0.0
    with pytest.raises(PolicyViolation, match="between 0s and 30d"):
        resolve_grace(POLICY, 31 * 86400.0)


@pytest.mark.parametrize("spec, message", [
    (NewKey(principal=""), "principal must not be empty"),
    (NewKey(principal="svc", name="bad\nname"), "name must be printable"),
    (NewKey(principal="svc", scopes=("api read",)), "scope 'api read' is not valid"),
    (NewKey(principal="svc", source_cidrs=("10.0.0.1/8",)), "host bits set"),
    (NewKey(principal="svc", source_cidrs=("nonsense",)), "source CIDR"),
    (NewKey(principal="svc", rate_limit=RateLimit(0, 1)), "rate limit"),
], ids=["principal", "name", "scope", "cidr-host-bits", "cidr", "rate"])
async def test_bad_requests_are_refused_before_any_write(
        manager: KeyManager, spec: NewKey, message: str) -> None:
    with pytest.raises(PolicyViolation, match=message):
        await manager.create(spec, actor=ACTOR, now=NOW)
    assert await manager.store.max_change_seq() == 0


async def test_self_rotate_scope_obeys_policy(store: Store, keyring: Keyring) -> None:
    strict = KeyManager(store, keyring, replace(POLICY, allow_self_rotate=False))
    with pytest.raises(PolicyViolation, match="allow_self_rotate"):
        await strict.create(NewKey(principal="svc", scopes=("self:rotate",)), actor=ACTOR, now=NOW)
    ok = await KeyManager(store, keyring, POLICY).create(
        NewKey(principal="svc", scopes=("self:rotate",)), actor=ACTOR, now=NOW)
    assert ok.record.scopes == ("self:rotate",)


async def test_key_limit_counts_a_rotating_key_and_its_successor_once(
        manager: KeyManager) -> None:
    a = await manager.create(NewKey(principal="svc"), actor=ACTOR, now=NOW)
    b = await manager.create(NewKey(principal="svc"), actor=ACTOR, now=NOW)
    with pytest.raises(KeyLimitReached, match="already has 2 active"):
        await manager.create(NewKey(principal="svc"), actor=ACTOR, now=NOW)
    await manager.create(NewKey(principal="other"), actor=ACTOR, now=NOW)  # per principal
    a2 = await manager.rotate(a.record.key_id, actor=ACTOR, now=NOW)  # at the limit: allowed
    with pytest.raises(KeyLimitReached):
        await manager.create(NewKey(principal="svc"), actor=ACTOR, now=NOW + timedelta(hours=1))
    await manager.revoke(b.record.key_id, actor=ACTOR, now=NOW + timedelta(hours=2))
    await manager.create(NewKey(principal="svc"), actor=ACTOR, now=NOW + timedelta(hours=2))
    assert (await manager.get(a2.record.key_id)).status(NOW, POLICY.inactivity) == "active"


async def test_only_active_keys_rotate_or_renew_and_revoking_twice_is_refused(
        manager: KeyManager) -> None:
    k = await manager.create(NewKey(principal="svc", expiry=86400.0), actor=ACTOR, now=NOW)
    key_id = k.record.key_id
    with pytest.raises(PolicyViolation, match="it is expired"):
        await manager.renew(key_id, actor=ACTOR, now=NOW + DAY)
    with pytest.raises(PolicyViolation, match="it is expired"):
        await manager.rotate(key_id, actor=ACTOR, now=NOW + 2 * DAY)
    new = await manager.rotate(key_id, actor=ACTOR, now=NOW + DAY / 2)
    with pytest.raises(PolicyViolation, match="it is rotating"):
        await manager.rotate(key_id, actor=ACTOR, now=NOW + DAY / 2)
    # revoking a rotating key ends its grace now
    revoked = await manager.revoke(key_id, actor=ACTOR, now=NOW + DAY / 2, reason="leaked")
    assert revoked.status(NOW + DAY / 2, POLICY.inactivity) == "revoked"
    assert revoked.revoke_reason == "leaked" and revoked.rotated_to == new.record.key_id
    with pytest.raises(PolicyViolation, match="already revoked"):
        await manager.revoke(key_id, actor=ACTOR, now=NOW + DAY)
    renewed = await manager.renew(new.record.key_id, actor=ACTOR, now=NOW + DAY,
                                  expiry=NOW + 100 * DAY)
    assert renewed.expires_at == NOW + 100 * DAY


async def test_inactivity_expires_unused_keys_unless_turned_off(manager: KeyManager) -> None:
    k = await manager.create(NewKey(principal="svc", expiry=365 * 86400.0), actor=ACTOR, now=NOW)
    rec = await manager.get(k.record.key_id)
    inactivity = 30 * 86400.0
    assert rec.status(NOW + timedelta(days=29), inactivity) == "active"
    assert rec.status(NOW + timedelta(days=30), inactivity) == "inactive"
    assert rec.status(NOW + timedelta(days=300), 0) == "active"
    assert rec.deadline(inactivity) == NOW + timedelta(days=30)
    assert rec.deadline(0) == NOW + 365 * DAY
    await manager.store.touch_last_used({rec.key_id: NOW + timedelta(days=20)})
    rec = await manager.get(rec.key_id)
    assert rec.status(NOW + timedelta(days=40), inactivity) == "active"
    assert rec.inactive_after(inactivity) == NOW + timedelta(days=50)
    page = await manager.store.list_keys(KeyFilter(deadline_before=NOW + timedelta(days=51)),
                                         now=NOW, inactivity=inactivity)
    assert [r.key_id for r in page.items] == [rec.key_id]
    page = await manager.store.list_keys(KeyFilter(deadline_before=NOW + timedelta(days=49)),
                                         now=NOW, inactivity=inactivity)
    assert page.items == []


class CountingSQLiteStore(SQLiteStore):
    """A real SQLite store that counts every read and every transaction."""

    calls = 0

    async def get_key(self, key_id: str) -> KeyRecord | None:
        self.calls += 1
        return await super().get_key(key_id)

    def transaction(self) -> Any:
        self.calls += 1
        return super().transaction()


@pytest.mark.parametrize("bad", ["", "gwk_short", "GWK_" + generate_key_id()[4:],
                                 generate_key_id()[:-1] + "!", "gwk_" + "é" * 28,
                                 generate_key_id() + "0"])
async def test_malformed_key_ids_never_reach_the_store(tmp_path: Path, keyring: Keyring,
                                                       bad: str) -> None:
    store = await CountingSQLiteStore.open(str(tmp_path / "keys.db"))
    try:
        manager = KeyManager(store, keyring, POLICY)
        for call in (manager.get(bad), manager.get_with_secret(bad),
                     manager.rotate(bad, actor=ACTOR, now=NOW),
                     manager.renew(bad, actor=ACTOR, now=NOW),
                     manager.revoke(bad, actor=ACTOR, now=NOW)):
            with pytest.raises(MalformedKeyId, match="malformed key ID"):
                await call
        assert store.calls == 0
        with pytest.raises(KeyNotFound):  # the counter does count: a well-formed ID is looked up
            await manager.get(generate_key_id())
        assert store.calls == 1
    finally:
        await store.close()


async def test_concurrent_creates_for_one_principal_respect_the_limit(
        pg_dsn: str, keyring: Keyring) -> None:
    store = await PostgresStore.open(pg_dsn, max_size=10)
    try:
        manager = KeyManager(store, keyring, POLICY)
        results = await asyncio.gather(
            *(manager.create(NewKey(principal="race"), actor=ACTOR, now=NOW) for _ in range(12)),
            return_exceptions=True)
        assert sum(not isinstance(r, BaseException) for r in results) == 2
        assert all(isinstance(r, KeyLimitReached) for r in results if isinstance(r, BaseException))
    finally:
        await store.close()


async def test_concurrent_lifecycle_leaves_no_half_written_key(
        pg_dsn: str, keyring: Keyring) -> None:
    """Several tasks create, rotate and revoke at once, some cancelled mid-flight; afterwards
    every key has its audit trail and change-log rows, and every secret decrypts."""
    store = await PostgresStore.open(pg_dsn, max_size=8)
    policy = replace(POLICY, max_active_keys_per_principal=50)
    manager = KeyManager(store, keyring, policy)
    rng = random.Random(7)
    known: list[str] = []

    async def worker(n: int) -> None:
        for i in range(12):
            op = rng.choice(["create", "create", "rotate", "revoke"]) if known else "create"
            try:
                if op == "create":
                    issued = await manager.create(NewKey(principal=f"p{(n + i) % 3}"),
                                                  actor=ACTOR, now=NOW)
                    known.append(issued.record.key_id)
                elif op == "rotate":
                    issued = await manager.rotate(rng.choice(known), actor=ACTOR, now=NOW)
                    known.append(issued.record.key_id)
                else:
                    await manager.revoke(rng.choice(known), actor=ACTOR, now=NOW)
            except KeyLifecycleError:  # lost a race: already rotating or revoked
                pass

    try:
        tasks = [asyncio.create_task(worker(n)) for n in range(8)]
        victims = [asyncio.create_task(manager.create(NewKey(principal="v"), actor=ACTOR,
                                                      now=NOW)) for _ in range(6)]
        for _ in range(3):
            await asyncio.sleep(0)
        for v in victims:
            v.cancel()
        await asyncio.gather(*tasks)
        await asyncio.gather(*victims, return_exceptions=True)
        assert any(v.cancelled() for v in victims)

        keys = (await store.list_keys(KeyFilter(), now=NOW, inactivity=0, limit=10_000)).items
        audit = await store.list_audit(limit=100_000)
        changes = await store.changes_since(0, limit=100_000)
        created = {e.target for e in audit if e.action == "key.created"}
        assert len(keys) > 50 and {k.key_id for k in keys} == created
        assert len(created) == sum(1 for e in audit if e.action == "key.created")
        changed = {(c.key_id, c.kind) for c in changes}
        by_id = {k.key_id: k for k in keys}
        for k in keys:
            assert (k.key_id, "created") in changed
            assert keyring.unwrap_secret(k.key_id, k.wrapped)  # wrapped secret written with it
            if k.rotated_to is not None:
                assert by_id[k.rotated_to].rotated_from == k.key_id
                assert (k.key_id, "rotated") in changed
            if k.revoke_reason not in (None, "rotated"):
                assert (k.key_id, "revoked") in changed
        revoked_audit = {e.target for e in audit if e.action == "key.revoked"}
        assert revoked_audit == {k.key_id for k in keys if k.revoke_reason == "unspecified"}
        assert len(changes) == len(audit)  # one change-log row per audited change
        assert [c.seq for c in changes] == sorted(c.seq for c in changes)
    finally:
        await store.close()


async def test_update_changes_only_what_is_given_and_is_audited(manager: KeyManager) -> None:
    k = await manager.create(NewKey(principal="svc", name="a", scopes=("api:read",),
                                    source_cidrs=("10.0.0.0/8",)), actor=ACTOR, now=NOW)
    key_id = k.record.key_id
    seq = await manager.store.max_change_seq()
    new = await manager.update(key_id, actor=ACTOR, now=NOW, scopes=["api:read", "api:write"],
                               source_cidrs=None)
    assert new.scopes == ("api:read", "api:write") and new.source_cidrs is None
    assert new.name == "a" and new == await manager.get(key_id)
    assert await manager.update(key_id, actor=ACTOR, now=NOW, name="a") == new  # no-op
    with pytest.raises(PolicyViolation, match="scope"):
        await manager.update(key_id, actor=ACTOR, now=NOW, scopes=["bad scope"])
    audit = await manager.store.list_audit(action="key.updated")
    assert [(e.target, e.details) for e in audit] == [
        (key_id, {"scopes": ["api:read", "api:write"], "source_cidrs": None})]
    assert [(c.key_id, c.kind) for c in await manager.store.changes_since(seq)] == [
        (key_id, "updated")]
    await manager.revoke(key_id, actor=ACTOR, now=NOW)
    with pytest.raises(PolicyViolation, match="revoked"):
        await manager.update(key_id, actor=ACTOR, now=NOW, name="b")


async def test_wait_idle_revokes_only_after_idle_plus_flush(manager: KeyManager) -> None:
    old = await manager.create(NewKey(principal="svc"), actor=ACTOR, now=NOW)
    await manager.rotate(old.record.key_id, actor=ACTOR, now=NOW)
    clock = [NOW]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += timedelta(seconds=seconds)
        if len(slept) == 1:  # the old key is still in use during the first wait
            await manager.store.touch_last_used({old.record.key_id: clock[0]})

    revoked = await revoke_when_idle(manager, old.record.key_id, idle=600.0, flush=5.0,
                                     actor=ACTOR, clock=lambda: clock[0], sleep=sleep,
                                     since=NOW)
    used_at = NOW + timedelta(seconds=slept[0])
    assert revoked.revoked_at == used_at + timedelta(seconds=605)  # idle + flush after last use
    assert revoked.revoke_reason == "rotated"
    assert all(s > 0 for s in slept)
    # an already revoked key ends the wait at once
    again = await revoke_when_idle(manager, old.record.key_id, idle=600.0, flush=5.0,
                                   actor=ACTOR, clock=lambda: clock[0], sleep=sleep, since=NOW)
    assert again.revoked_at == revoked.revoked_at


async def test_revoking_a_key_as_leaked_revokes_what_it_minted_by_self_rotation(
        manager: KeyManager, store: Store) -> None:
    a = (await manager.create(NewKey(principal="ci", scopes=("self:rotate",)), actor=ACTOR,
                              now=NOW)).record

    def itself(record: KeyRecord) -> Actor:  # as POST /_gateway/self/rotate acts
        return Actor(principal=record.principal, key_id=record.key_id, source="127.0.0.1")

    b = (await manager.rotate(a.key_id, actor=itself(a), now=NOW, grace=3600)).record
    c = (await manager.rotate(b.key_id, actor=itself(b), now=NOW, grace=3600)).record
    operator = Actor(principal="ops", key_id="gwk_operatorKeyIdIsNotCheckedHere0")
    d = (await manager.rotate(c.key_id, actor=operator, now=NOW, grace=3600)).record
    later = NOW + timedelta(minutes=1)
    await manager.revoke(a.key_id, actor=ACTOR, now=later, reason="leaked")
    status = {k: (await store.get_key(k)).status(later, 0) for k in  # type: ignore[union-attr]
              (a.key_id, b.key_id, c.key_id, d.key_id)}
    assert status == {a.key_id: "revoked", b.key_id: "revoked", c.key_id: "revoked",
                      d.key_id: "active"}  # d came from an operator: its secret never leaked
    revoked = {e.target: e.details for e in await store.list_audit(action="key.revoked")}
    assert revoked == {a.key_id: {"reason": "leaked"},
                       b.key_id: {"reason": "leaked", "minted_by": a.key_id},
                       c.key_id: {"reason": "leaked", "minted_by": a.key_id}}


async def test_revoking_for_another_reason_leaves_the_successors_alone(
        manager: KeyManager, store: Store) -> None:
    a = (await manager.create(NewKey(principal="ci"), actor=ACTOR, now=NOW)).record
    b = (await manager.rotate(a.key_id, actor=Actor(principal="ci", key_id=a.key_id), now=NOW,
                              grace=3600)).record
    await manager.revoke(a.key_id, actor=ACTOR, now=NOW, reason="offboarded")
    assert (await store.get_key(b.key_id)).status(NOW, 0) == "active"  # type: ignore[union-attr]
