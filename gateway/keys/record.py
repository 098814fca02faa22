"""The key record (DESIGN.md §4.1) and its status, derived from stored state and ``now``.

Stored state never says "expired" or "inactive": those follow from the clock. A
rotated key keeps ``revoked_at`` = the end of its grace period (reason ``rotated``):
before that instant it is ``rotating``, from it on ``revoked``.

Precedence when several apply: revoked, expired, inactive, rotating, active. Every
deadline is the first instant at which the key no longer works.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

__all__ = [
    "API_FIELDS",
    "AuditEntry",
    "KeyChange",
    "KeyRecord",
    "RateLimit",
    "Status",
    "WrappedSecret",
    "rfc3339",
]

Status = Literal["active", "rotating", "revoked", "expired", "inactive"]
STATUSES: tuple[Status, ...] = ("active", "rotating", "revoked", "expired", "inactive")

API_FIELDS = (
    "key_id", "principal", "name", "scopes", "status", "created_at", "expires_at",
    "last_used_at", "revoked_at", "revoke_reason", "issued_with_mfa", "created_by",
    "rate_limit", "source_cidrs", "rotated_from", "rotated_to",
)


def rfc3339(t: datetime | None) -> str | None:
    """UTC, ``Z`` suffix, microseconds only when present."""
    if t is None:
        return None
    return t.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class RateLimit:
    rps: float
    burst: int

    def to_json(self) -> dict[str, float | int]:
        return {"rps": self.rps, "burst": self.burst}


@dataclass(frozen=True, slots=True)
class WrappedSecret:
    """A secret encrypted under one KEK version (DESIGN.md §3.3)."""

    kek_version: int
    nonce: bytes
    ciphertext: bytes

    def __repr__(self) -> str:  # ciphertext is not secret, but it is noise in logs
        return f"WrappedSecret(kek_version={self.kek_version})"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One access key as stored. Times are aware UTC datetimes."""

    key_id: str
    principal: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    issued_with_mfa: bool
    created_by: str
    wrapped: WrappedSecret
    secret_sha256: bytes
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    revoke_reason: str | None = None
    revoked_by: str | None = None
    rate_limit: RateLimit | None = None
    source_cidrs: tuple[str, ...] | None = None
    rotated_from: str | None = None
    rotated_to: str | None = None

    def replace(self, **changes: Any) -> KeyRecord:
        return dataclasses.replace(self, **changes)

    def inactive_after(self, inactivity: float) -> datetime | None:
        """When the key stops working for want of use; None when inactivity is off (0s)."""
        if inactivity <= 0:
            return None
        return (self.last_used_at or self.created_at) + timedelta(seconds=inactivity)

    def deadline(self, inactivity: float) -> datetime | None:
        """The earlier of ``expires_at`` and the inactivity deadline (DESIGN.md §4.1)."""
        limits = [t for t in (self.expires_at, self.inactive_after(inactivity)) if t]
        return min(limits) if limits else None

    def status(self, now: datetime, inactivity: float) -> Status:
        if self.revoked_at is not None and self.revoked_at <= now:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        inactive_after = self.inactive_after(inactivity)
        if inactive_after is not None and inactive_after <= now:
            return "inactive"
        if self.revoked_at is not None:
            return "rotating"
        return "active"

    def to_api(self, now: datetime, inactivity: float) -> dict[str, Any]:
        """The record with the admin API's field names (no secret material)."""
        return {
            "key_id": self.key_id,
            "principal": self.principal,
            "name": self.name,
            "scopes": list(self.scopes),
            "status": self.status(now, inactivity),
            "created_at": rfc3339(self.created_at),
            "expires_at": rfc3339(self.expires_at),
            "last_used_at": rfc3339(self.last_used_at),
            "revoked_at": rfc3339(self.revoked_at),
            "revoke_reason": self.revoke_reason,
            "issued_with_mfa": self.issued_with_mfa,
            "created_by": self.created_by,
            "rate_limit": self.rate_limit.to_json() if self.rate_limit else None,
            "source_cidrs": list(self.source_cidrs) if self.source_cidrs is not None else None,
            "rotated_from": self.rotated_from,
            "rotated_to": self.rotated_to,
        }


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audit item (DESIGN.md §4.1). ``details`` never holds secret material."""

    at: datetime
    actor_key_id: str | None
    actor_principal: str
    action: str
    target: str | None
    source: str
    outcome: str
    details: dict[str, Any]
    id: int | None = None

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id, "at": rfc3339(self.at), "actor_key_id": self.actor_key_id,
            "actor_principal": self.actor_principal, "action": self.action,
            "target": self.target, "source": self.source, "outcome": self.outcome,
            "details": self.details,
        }


@dataclass(frozen=True, slots=True)
class KeyChange:
    """A row of the ``key_changes`` log (DESIGN.md §3.2)."""

    seq: int
    key_id: str
    kind: str
    at: datetime
