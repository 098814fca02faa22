"""Retroactive policy: a new rule applied to existing keys (issue 11, point 5).

A :class:`Rule` selects live keys (issued without MFA, unused for a while, of one
principal: every condition given must hold) and brings their expiry forward to at
most ``expire_within`` from now — "keys issued without MFA expire in 30 days", "keys
unused for 180 days stop working in 14". :func:`plan` is the dry run; :func:`apply`
changes exactly the keys :func:`affected` picks, re-checked under the row lock, each
in its own transaction with its audit row (``key.updated``, the rule in its details),
its ``key_changes`` row and a ``key.expiring`` event, so owners are told before
anything breaks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.events.model import key_event
from gateway.keys.errors import PolicyViolation
from gateway.keys.lifecycle import Actor, KeyManager, format_duration
from gateway.keys.record import AuditEntry, KeyRecord, rfc3339
from gateway.store import KeyFilter, Store

__all__ = ["Change", "Rule", "affected", "apply", "plan"]


@dataclass(frozen=True, slots=True)
class Rule:
    expire_within: float  # seconds from now: the latest expiry a selected key keeps
    issued_without_mfa: bool = False
    unused_for: float | None = None
    principal: str | None = None

    def describe(self) -> str:
        parts = (["issued-without-mfa"] if self.issued_without_mfa else []) + (
            [f"unused-for {format_duration(self.unused_for)}"] if self.unused_for else []) + (
            [f"principal {self.principal}"] if self.principal else [])
        return " ".join(parts + [f"expire-within {format_duration(self.expire_within)}"])


@dataclass(frozen=True, slots=True)
class Change:
    record: KeyRecord  # as it was
    expires_at: datetime  # what the rule sets


def affected(record: KeyRecord, rule: Rule, now: datetime, inactivity: float
             ) -> datetime | None:
    """The new ``expires_at`` when the rule changes this key; None when it does not
    (the key is not live, not selected, or already expires no later)."""
    if record.status(now, inactivity) not in ("active", "rotating"):
        return None
    if rule.issued_without_mfa and record.issued_with_mfa:
        return None
    if rule.unused_for is not None and (record.last_used_at or record.created_at) >= (
            now - timedelta(seconds=rule.unused_for)):
        return None
    if rule.principal is not None and record.principal != rule.principal:
        return None
    new = now + timedelta(seconds=rule.expire_within)
    if record.expires_at is not None and record.expires_at <= new:
        return None
    return new


async def plan(store: Store, rule: Rule, *, now: datetime, inactivity: float) -> list[Change]:
    """The dry run: every key the rule would change, and to what."""
    where = KeyFilter(
        principal=rule.principal, issued_with_mfa=False if rule.issued_without_mfa else None,
        unused_since=None if rule.unused_for is None
        else now - timedelta(seconds=rule.unused_for))
    changes: list[Change] = []
    cursor = None
    while True:
        page = await store.list_keys(where, now=now, inactivity=inactivity, limit=1000,
                                     cursor=cursor)
        changes += [Change(r, at) for r in page.items
                    if (at := affected(r, rule, now, inactivity)) is not None]
        cursor = page.next_cursor
        if cursor is None:
            return changes


async def apply(manager: KeyManager, rule: Rule, *, actor: Actor, now: datetime
                ) -> list[Change]:
    """Apply the rule; the changes made (those of :func:`plan`, unless a key changed
    in between)."""
    policy = manager.policy
    if rule.expire_within < policy.min_lifetime:
        raise PolicyViolation("expire-within must be at least policy.min_lifetime "
                              f"({format_duration(policy.min_lifetime)})")
    done: list[Change] = []
    for change in await plan(manager.store, rule, now=now, inactivity=policy.inactivity):
        key_id = change.record.key_id
        async with manager.store.transaction() as tx:
            old = await tx.get_key(key_id)
            at = None if old is None else affected(old, rule, now, policy.inactivity)
            if old is None or at is None:
                continue
            new = old.replace(expires_at=at)
            await tx.update_key(new)
            await tx.add_audit([AuditEntry(
                at=now, actor_key_id=actor.key_id, actor_principal=actor.principal,
                action="key.updated", target=key_id, source=actor.source, outcome="success",
                details={"policy": rule.describe(), "expires_at": rfc3339(at),
                         "previous_expires_at": rfc3339(old.expires_at)})])
            await tx.add_changes([(key_id, "updated", now)])
            await tx.add_events([key_event(
                "key.expiring", new, now, policy.inactivity, dedup=True,
                deadline=rfc3339(new.deadline(policy.inactivity)), cause="policy",
                policy=rule.describe())])
        done.append(Change(old, at))
    return done
