"""The store's one async interface (DESIGN.md §3, §3.2), shared by SQLite and PostgreSQL.

Every lifecycle change goes through :meth:`Store.transaction`: the key rows, their
audit rows and their ``key_changes`` rows commit together or not at all. Reads
outside a transaction are what the gateway needs on its hot path and for listings.
"""

from __future__ import annotations

import base64
import binascii
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from gateway.errors import GatewayError
from gateway.events.model import Delivery, Event, EventFilter, StoredEvent, Webhook
from gateway.keys.record import (
    AuditEntry,
    KeyChange,
    KeyRecord,
    RateLimit,
    Status,
    WrappedSecret,
)

log = logging.getLogger("gateway.store")

__all__ = [
    "ChangeListener",
    "Activity",
    "AuditFilter",
    "KeyFilter",
    "MfaEnrolment",
    "Page",
    "Rewrap",
    "Store",
    "StoreError",
    "Transaction",
    "UsageCount",
]

# key_id -> its record's wrapped secret -> the same secret wrapped under the target version
Rewrap = Callable[[str, WrappedSecret], WrappedSecret]

KEY_COLUMNS = (
    "key_id", "principal", "name", "scopes", "created_at", "expires_at", "last_used_at",
    "revoked_at", "revoke_reason", "revoked_by", "issued_with_mfa", "created_by",
    "rate_limit", "source_cidrs", "rotated_from", "rotated_to", "kek_version", "nonce",
    "ciphertext", "secret_sha256",
)
# columns a lifecycle change may alter (never key_id, principal, created_*, the secret hash)
MUTABLE_COLUMNS = (
    "name", "scopes", "expires_at", "revoked_at", "revoke_reason", "revoked_by",
    "rate_limit", "source_cidrs", "rotated_to",
)


class StoreError(GatewayError):
    """The store cannot be reached or refused the operation; the message names no secret."""

    def __init__(self, message: str) -> None:
        super().__init__("store_unavailable", message)


@dataclass(frozen=True, slots=True)
class KeyFilter:
    """Listing filters (admin API ``GET /v1/keys`` and ``gateway keys list``)."""

    principal: str | None = None
    status: Status | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    expires_before: datetime | None = None
    deadline_before: datetime | None = None  # earlier of expiry and inactivity deadline
    unused_since: datetime | None = None  # last used (or, never used, created) before this
    issued_with_mfa: bool | None = None


@dataclass(frozen=True, slots=True)
class Page:
    items: list[KeyRecord]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """``GET /v1/audit`` and ``gateway audit list``: ``key_id`` matches the target or the
    acting key, ``actor`` the acting principal or key ID; ``since`` ≤ at < ``until``."""

    target: str | None = None
    action: str | None = None
    key_id: str | None = None
    actor: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class UsageCount:
    """Requests of one key in one minute, by route prefix, status and client address."""

    key_id: str
    minute: datetime
    route: str
    status: int
    source: str
    count: int


@dataclass(frozen=True, slots=True)
class Activity:
    """``GET /v1/keys/{id}/activity``: counts per (route, status) and per source address."""

    routes: list[tuple[str, int, int]]
    sources: list[tuple[str, int]]

    @property
    def total(self) -> int:
        return sum(n for _, _, n in self.routes)


@dataclass(frozen=True, slots=True)
class MfaEnrolment:
    """A principal's TOTP seed, wrapped under the KEK; ``last_step`` is the highest
    RFC 6238 time step accepted so far (a code is never accepted twice)."""

    principal: str
    wrapped: WrappedSecret
    created_at: datetime
    last_step: int = 0


class Transaction(ABC):
    """Writes inside one database transaction."""

    @abstractmethod
    async def lock_principals(self, principals: Sequence[str]) -> None:
        """Serialise creations for these principals until the transaction ends."""

    @abstractmethod
    async def live_keys(self, principals: Sequence[str], now: datetime) -> list[KeyRecord]:
        """Keys of these principals neither revoked nor expired at ``now``."""

    @abstractmethod
    async def get_key(self, key_id: str) -> KeyRecord | None:
        """The record, locked against concurrent change until the transaction ends."""

    @abstractmethod
    async def insert_keys(self, records: Sequence[KeyRecord]) -> None: ...

    @abstractmethod
    async def update_key(self, record: KeyRecord) -> None:
        """Write the record's mutable fields (:data:`MUTABLE_COLUMNS`)."""

    @abstractmethod
    async def add_audit(self, entries: Sequence[AuditEntry]) -> None: ...

    @abstractmethod
    async def add_changes(self, changes: Sequence[tuple[str, str, datetime]]) -> None:
        """Append ``(key_id, kind, at)`` rows to ``key_changes``."""

    @abstractmethod
    async def insert_mfa(self, enrolment: MfaEnrolment) -> bool:
        """Enrol a principal; False (and nothing written) when it is already enrolled."""

    @abstractmethod
    async def add_events(self, events: Sequence[Event]) -> list[Event]:
        """Append to the ``events`` outbox, with a pending delivery per subscribed
        webhook; an event whose ``dedup`` key is already stored is skipped. The events
        written."""

    @abstractmethod
    async def insert_webhook(self, webhook: Webhook) -> None: ...

    @abstractmethod
    async def delete_webhook(self, webhook_id: str) -> bool:
        """Remove a webhook and its deliveries; False when there was none."""

    @abstractmethod
    async def redeliver(self, event_id: str, now: datetime) -> bool:
        """Make the event due now, at every webhook subscribed to its type (attempts
        from 0, delivered or failed ones too); False when there is no such event."""


ChangeListener = Callable[[list[str]], Awaitable[None]]


class Store(ABC):
    """Source of truth for keys, audit, the change log and the events outbox."""

    applied_migrations: tuple[int, ...] = ()  # what opening the store applied (for `store migrate`)
    # told the key IDs of every committed transaction that logged changes (the Redis
    # tier publishes them); the key_changes poll remains the guarantee if it fails
    change_listener: ChangeListener | None = None

    async def _changes_committed(self, key_ids: list[str]) -> None:
        if key_ids and self.change_listener is not None:
            try:
                await self.change_listener(key_ids)
            except Exception as exc:  # the change is committed: never fail it now
                log.warning("change notification failed: %s", exc)

    @abstractmethod
    async def migrate(self) -> list[int]:
        """Apply pending schema migrations; the versions applied (empty when current)."""

    @abstractmethod
    async def schema_version(self) -> int: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Transaction]: ...

    @abstractmethod
    async def get_key(self, key_id: str) -> KeyRecord | None: ...

    @abstractmethod
    async def get_key_by_secret_sha256(self, digest: bytes) -> KeyRecord | None: ...

    @abstractmethod
    async def list_keys(self, where: KeyFilter, *, now: datetime, inactivity: float,
                        limit: int = 100, cursor: str | None = None) -> Page:
        """Keys in (created_at, key_id) order; ``next_cursor`` continues after the last."""

    @abstractmethod
    async def count_keys(self, where: KeyFilter, *, now: datetime, inactivity: float) -> int:
        """How many keys match (``/metrics``: keys by status)."""

    async def list_audit(self, *, target: str | None = None, action: str | None = None,
                         limit: int = 100) -> list[AuditEntry]:
        """Audit items, oldest first."""
        return await self.find_audit(AuditFilter(target=target, action=action), limit=limit)

    @abstractmethod
    async def find_audit(self, where: AuditFilter, *, limit: int = 100,
                         after: int | None = None) -> list[AuditEntry]:
        """Audit items matching ``where`` with ``id`` above ``after``, oldest first."""

    @abstractmethod
    async def add_usage(self, counts: Sequence[UsageCount]) -> None:
        """Add the counts to ``key_usage`` (rows with the same key are summed)."""

    @abstractmethod
    async def activity(self, key_id: str, since: datetime) -> Activity:
        """A key's usage from the minute containing ``since`` on."""

    @abstractmethod
    async def get_mfa(self, principal: str) -> MfaEnrolment | None: ...

    @abstractmethod
    async def use_mfa_step(self, principal: str, step: int) -> bool:
        """Record ``step`` as used if it is above the last one used; False otherwise
        (a reused or older code). Atomic, so two instances cannot both accept a code."""

    @abstractmethod
    async def max_change_seq(self) -> int:
        """The highest ``key_changes.seq`` (0 when empty)."""

    @abstractmethod
    async def changes_since(self, seq: int, limit: int = 1000) -> list[KeyChange]:
        """``key_changes`` rows with ``seq`` greater than ``seq``, in order."""

    @abstractmethod
    async def touch_last_used(self, uses: Mapping[str, datetime]) -> None:
        """Batch-advance ``last_used_at`` (never moves it backwards)."""

    @abstractmethod
    async def count_by_kek_version(self) -> dict[int, int]:
        """Wrapped records (key secrets, MFA seeds, webhook secrets) per KEK version."""

    @abstractmethod
    async def rewrap_mfa(self, target_version: int,
                         rewrap: Callable[[str, WrappedSecret], WrappedSecret]) -> int:
        """Re-wrap every MFA seed not under the target version (``rewrap(principal,
        wrapped)``), in one transaction; the number re-wrapped. Seeds are few: one per
        admin principal."""

    @abstractmethod
    async def rewrap_webhooks(self, target_version: int, rewrap: Rewrap) -> int:
        """Re-wrap every webhook secret not under the target version (``rewrap(id,
        wrapped)``), in one transaction; the number re-wrapped."""

    @abstractmethod
    async def existing_dedups(self, dedups: Sequence[str]) -> set[str]:
        """Which of these scheduled-event keys are already in the outbox."""

    @abstractmethod
    async def list_events(self, where: EventFilter, *, limit: int = 100,
                          after: int | None = None) -> list[StoredEvent]:
        """Events matching ``where`` with ``seq`` above ``after``, oldest first."""

    @abstractmethod
    async def get_event(self, event_id: str) -> StoredEvent | None: ...

    @abstractmethod
    async def list_webhooks(self) -> list[Webhook]: ...

    @abstractmethod
    async def claim_deliveries(self, now: datetime, lease_until: datetime, claim: str,
                               limit: int) -> list[tuple[Delivery, Event, Webhook]]:
        """Take up to ``limit`` pending deliveries due at ``now``: each is leased to
        ``claim`` until ``lease_until`` (its ``next_attempt_at``), so no other
        instance sends it meanwhile, and a sender that dies leaves it due again."""

    @abstractmethod
    async def finish_delivery(self, delivery: Delivery, claim: str) -> bool:
        """Record an attempt's outcome (``delivery`` as it should now read) if the
        lease is still ``claim``'s; False when it was lost."""

    @abstractmethod
    async def acquire_lease(self, name: str, holder: str, now: datetime,
                            until: datetime) -> bool:
        """Hold the named lease until ``until`` if it is free, expired or ours."""

    @abstractmethod
    async def rewrap_batch(self, target_version: int, limit: int, rewrap: Rewrap,
                           at: datetime) -> int:
        """Re-wrap up to ``limit`` records whose ``kek_version`` differs from the target,
        logging each in ``key_changes``, in one transaction; the number re-wrapped."""


def record_values(rec: KeyRecord) -> dict[str, Any]:
    """A record as column values (times as datetimes; JSON columns as Python objects)."""
    return {
        "key_id": rec.key_id, "principal": rec.principal, "name": rec.name,
        "scopes": list(rec.scopes), "created_at": rec.created_at, "expires_at": rec.expires_at,
        "last_used_at": rec.last_used_at, "revoked_at": rec.revoked_at,
        "revoke_reason": rec.revoke_reason, "revoked_by": rec.revoked_by,
        "issued_with_mfa": rec.issued_with_mfa, "created_by": rec.created_by,
        "rate_limit": rec.rate_limit.to_json() if rec.rate_limit else None,
        "source_cidrs": list(rec.source_cidrs) if rec.source_cidrs is not None else None,
        "rotated_from": rec.rotated_from, "rotated_to": rec.rotated_to,
        "kek_version": rec.wrapped.kek_version, "nonce": rec.wrapped.nonce,
        "ciphertext": rec.wrapped.ciphertext, "secret_sha256": rec.secret_sha256,
    }


def record_from_values(v: Mapping[str, Any]) -> KeyRecord:
    """The inverse of :func:`record_values`."""
    rate = v["rate_limit"]
    cidrs = v["source_cidrs"]
    return KeyRecord(
        key_id=v["key_id"], principal=v["principal"], name=v["name"],
        scopes=tuple(v["scopes"]), created_at=v["created_at"], expires_at=v["expires_at"],
        last_used_at=v["last_used_at"], revoked_at=v["revoked_at"],
        revoke_reason=v["revoke_reason"], revoked_by=v["revoked_by"],
        issued_with_mfa=bool(v["issued_with_mfa"]), created_by=v["created_by"],
        rate_limit=RateLimit(rps=rate["rps"], burst=rate["burst"]) if rate else None,
        source_cidrs=tuple(cidrs) if cidrs is not None else None,
        rotated_from=v["rotated_from"], rotated_to=v["rotated_to"],
        wrapped=WrappedSecret(kek_version=v["kek_version"], nonce=bytes(v["nonce"]),
                              ciphertext=bytes(v["ciphertext"])),
        secret_sha256=bytes(v["secret_sha256"]),
    )


def encode_cursor(record: KeyRecord) -> str:
    raw = orjson.dumps([record.created_at.isoformat(), record.key_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        at, key_id = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return datetime.fromisoformat(at), str(key_id)
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise GatewayError("invalid_request", "malformed cursor") from None


def filter_sql(where: KeyFilter, now: datetime, inactivity: float,
               param: Callable[[Any], str]) -> list[str]:
    """SQL conditions for a filter. ``param`` binds a value and returns its placeholder.

    The status conditions restate :meth:`KeyRecord.status` (same order, same ``<=``);
    the contract tests check the two agree for every status."""
    conds: list[str] = []
    if where.principal is not None:
        conds.append(f"principal = {param(where.principal)}")
    if where.created_after is not None:
        conds.append(f"created_at > {param(where.created_after)}")
    if where.created_before is not None:
        conds.append(f"created_at < {param(where.created_before)}")
    if where.expires_before is not None:
        conds.append(f"expires_at < {param(where.expires_before)}")
    if where.unused_since is not None:
        conds.append(f"COALESCE(last_used_at, created_at) < {param(where.unused_since)}")
    if where.issued_with_mfa is not None:
        conds.append(f"issued_with_mfa = {param(where.issued_with_mfa)}")
    if where.deadline_before is not None:
        deadline = f"expires_at < {param(where.deadline_before)}"
        if inactivity > 0:
            cutoff = param(where.deadline_before - timedelta(seconds=inactivity))
            deadline = f"({deadline} OR COALESCE(last_used_at, created_at) < {cutoff})"
        conds.append(deadline)
    if where.status is not None:
        conds.append(_status_sql(where.status, now, inactivity, param))
    return conds


def event_sql(where: EventFilter, after: int | None, param: Callable[[Any], str]) -> list[str]:
    """SQL conditions on ``events e`` (``param`` as in :func:`filter_sql`); the status
    restates :attr:`StoredEvent.status`."""
    conds: list[str] = []
    if where.type is not None:
        conds.append(f"e.type = {param(where.type)}")
    if where.target is not None:
        conds.append(f"e.target = {param(where.target)}")
    if where.since is not None:
        conds.append(f"e.occurred_at >= {param(where.since)}")
    if after is not None:
        conds.append(f"e.seq > {param(after)}")
    if where.status is not None:
        def has(state: str) -> str:
            return (f"EXISTS (SELECT 1 FROM event_deliveries d WHERE d.event_seq = e.seq "
                    f"AND d.state = '{state}')")
        conds.append({"failed": has("failed"),
                      "pending": f"{has('pending')} AND NOT {has('failed')}",
                      "delivered": f"NOT {has('pending')} AND NOT {has('failed')}"
                      }[where.status])
    return conds


def audit_sql(where: AuditFilter, after: int | None, param: Callable[[Any], str]) -> list[str]:
    """SQL conditions for an audit filter (``param`` as in :func:`filter_sql`)."""
    conds: list[str] = []
    if where.target is not None:
        conds.append(f"target = {param(where.target)}")
    if where.action is not None:
        conds.append(f"action = {param(where.action)}")
    if where.key_id is not None:
        k = param(where.key_id)
        conds.append(f"(target = {k} OR actor_key_id = {k})")
    if where.actor is not None:
        a = param(where.actor)
        conds.append(f"(actor_principal = {a} OR actor_key_id = {a})")
    if where.since is not None:
        conds.append(f"at >= {param(where.since)}")
    if where.until is not None:
        conds.append(f"at < {param(where.until)}")
    if after is not None:
        conds.append(f"id > {param(after)}")
    return conds


def _status_sql(status: Status, now: datetime, inactivity: float,
                param: Callable[[Any], str]) -> str:
    t = param(now)
    revoked = f"(revoked_at IS NOT NULL AND revoked_at <= {t})"
    expired = f"(expires_at IS NOT NULL AND expires_at <= {t})"
    if status == "revoked":
        return revoked
    if status == "expired":
        return f"NOT {revoked} AND {expired}"
    inactive = "(1 = 0)"
    if inactivity > 0:
        cutoff = param(now - timedelta(seconds=inactivity))
        inactive = f"(COALESCE(last_used_at, created_at) <= {cutoff})"
    if status == "inactive":
        return f"NOT {revoked} AND NOT {expired} AND {inactive}"
    if status == "rotating":
        return f"revoked_at > {t} AND NOT {expired} AND NOT {inactive}"
    return f"revoked_at IS NULL AND NOT {expired} AND NOT {inactive}"
