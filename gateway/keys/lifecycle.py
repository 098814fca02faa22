"""Key lifecycle rules, in one place: create, rotate, renew, revoke (DESIGN.md §1, §4.1).

The CLI and (later) the admin API call :class:`KeyManager`; neither re-implements a
rule. The policy checks are pure functions of (policy, request, ``now``); the manager
adds the store transaction — the key row, its wrapped secret, its audit row, its
``key_changes`` row and its lifecycle event (the ``events`` outbox) commit together or
not at all (DESIGN.md §5).
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from gateway.config import PolicyConfig
from gateway.events.model import Event, key_event
from gateway.kek import KekError, Keyring
from gateway.keys.errors import KeyLimitReached, KeyNotFound, MalformedKeyId, PolicyViolation
from gateway.keys.formats import SecretStr, generate_key_id, generate_secret, is_well_formed_key_id
from gateway.keys.record import AuditEntry, KeyRecord, RateLimit, rfc3339
from gateway.store.base import AuditFilter, Store, Transaction

__all__ = [
    "LEAKED",
    "NEVER",
    "UNCHANGED",
    "Actor",
    "Expiry",
    "Issued",
    "KeyManager",
    "NewKey",
    "Unchanged",
    "check_key_id",
    "counted_keys",
    "format_duration",
    "resolve_expiry",
    "resolve_grace",
    "validate_new_key",
]


class NoExpiry:
    """The request for a key that never expires (only if ``policy.allow_no_expiry``)."""

    def __repr__(self) -> str:
        return "NEVER"


NEVER = NoExpiry()


class Unchanged:
    """A field :meth:`KeyManager.update` leaves as it is (None means "clear it")."""

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED = Unchanged()
# seconds from now | an instant | never | None: the policy's default lifetime
Expiry = float | datetime | NoExpiry | None

LEAKED = "leaked"  # the revoke reason that also revokes what the key minted itself
_SCOPE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._*-]{0,127}", re.ASCII)
_TEXT_MAX = 200


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: for the CLI ``actor_key_id`` is None and the principal ``cli:<user>``."""

    principal: str
    key_id: str | None = None
    source: str = "cli"
    mfa: bool = False


@dataclass(frozen=True, slots=True)
class NewKey:
    principal: str
    name: str = ""
    scopes: tuple[str, ...] = ()
    expiry: Expiry = None
    rate_limit: RateLimit | None = None
    source_cidrs: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Issued:
    """A key just created; ``secret`` is shown once and never again."""

    record: KeyRecord
    secret: SecretStr

    def to_api(self, now: datetime, inactivity: float) -> dict[str, Any]:
        doc = self.record.to_api(now, inactivity)
        return {"key_id": doc.pop("key_id"), "secret": self.secret.reveal(), **doc}


def format_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def check_key_id(key_id: str) -> None:
    """Refuse a malformed key ID before anything looks it up."""
    if not is_well_formed_key_id(key_id):
        raise MalformedKeyId()


def resolve_expiry(policy: PolicyConfig, expiry: Expiry, now: datetime) -> datetime | None:
    """The ``expires_at`` for a request, within [now + min_lifetime, now + max_lifetime]."""
    if isinstance(expiry, NoExpiry):
        if not policy.allow_no_expiry:
            raise PolicyViolation("keys without expiry are not allowed by policy "
                                  "(policy.allow_no_expiry = false)")
        return None
    if expiry is None:
        expiry = policy.default_lifetime
    at = expiry if isinstance(expiry, datetime) else now + timedelta(seconds=expiry)
    if not now + timedelta(seconds=policy.min_lifetime) <= at <= now + timedelta(
            seconds=policy.max_lifetime):
        raise PolicyViolation(f"expiry must lie between {format_duration(policy.min_lifetime)} "
                              f"and {format_duration(policy.max_lifetime)} from now")
    return at


def resolve_grace(policy: PolicyConfig, grace: float | None) -> float:
    grace = policy.rotation_grace if grace is None else grace
    if not 0 <= grace <= policy.max_rotation_grace:
        raise PolicyViolation("rotation grace must lie between 0s and "
                              f"{format_duration(policy.max_rotation_grace)}")
    return grace


def _text(value: str, what: str, *, required: bool) -> str:
    if required and not value:
        raise PolicyViolation(f"{what} must not be empty")
    if len(value) > _TEXT_MAX or not value.isprintable():
        raise PolicyViolation(f"{what} must be printable text of at most {_TEXT_MAX} characters")
    return value


def validate_new_key(policy: PolicyConfig, spec: NewKey) -> NewKey:
    """Check and normalise what a caller asks for (expiry is checked by resolve_expiry)."""
    for scope in spec.scopes:
        if _SCOPE_RE.fullmatch(scope) is None:
            raise PolicyViolation(f"scope {scope!r} is not valid: letters, digits and :._*- "
                                  "only, at most 128 characters")
    if "self:rotate" in spec.scopes and not policy.allow_self_rotate:
        raise PolicyViolation("scope self:rotate is not allowed by policy "
                              "(policy.allow_self_rotate = false)")
    rate = spec.rate_limit
    if rate is not None and not (0 < rate.rps < math.inf and rate.burst >= 1):
        raise PolicyViolation("rate limit must be a positive number of requests per second")
    cidrs = None
    if spec.source_cidrs is not None:
        try:
            cidrs = tuple(dict.fromkeys(str(ipaddress.ip_network(c)) for c in spec.source_cidrs))
        except ValueError as exc:
            raise PolicyViolation(f"source CIDR: {exc}") from None
    return NewKey(
        principal=_text(spec.principal, "principal", required=True),
        name=_text(spec.name, "name", required=False),
        scopes=tuple(dict.fromkeys(spec.scopes)), expiry=spec.expiry,
        rate_limit=spec.rate_limit, source_cidrs=cidrs,
    )


def counted_keys(keys: Sequence[KeyRecord], now: datetime, inactivity: float) -> int:
    """Keys counting toward ``max_active_keys_per_principal``: the active ones, and the
    rotating ones whose successor is not active (a key and its successor count once)."""
    active = {k.key_id for k in keys if k.status(now, inactivity) == "active"}
    rotating = [k for k in keys if k.status(now, inactivity) == "rotating"]
    return len(active) + sum(1 for k in rotating if k.rotated_to not in active)


def _new_credentials() -> tuple[str, SecretStr]:
    return generate_key_id(), SecretStr(generate_secret())


class KeyManager:
    """Lifecycle operations against one store with one keyring and policy.

    ``keyring`` may be None for callers that only renew, revoke or read records (an
    emergency revocation needs no KEK). ``new_credentials`` is the randomness (a key
    ID and secret per call); tests may pass their own. Every method takes ``now``."""

    def __init__(self, store: Store, keyring: Keyring | None, policy: PolicyConfig, *,
                 new_credentials: Callable[[], tuple[str, SecretStr]] = _new_credentials
                 ) -> None:
        self.store = store
        self.keyring = keyring
        self.policy = policy
        self._new_credentials = new_credentials

    def _audit(self, actor: Actor, action: str, target: str, now: datetime,
               **details: Any) -> AuditEntry:
        return AuditEntry(at=now, actor_key_id=actor.key_id, actor_principal=actor.principal,
                          action=action, target=target, source=actor.source,
                          outcome="success", details=details)

    def _event(self, type_: str, record: KeyRecord, now: datetime, **extra: Any) -> Event:
        return key_event(type_, record, now, self.policy.inactivity, **extra)

    def _keyring(self) -> Keyring:
        if self.keyring is None:
            raise KekError("this operation needs the keyring (config setting kek.keyring)")
        return self.keyring

    def _issue(self, spec: NewKey, actor: Actor, now: datetime,
               rotated_from: str | None = None) -> Issued:
        keyring = self._keyring()
        key_id, secret = self._new_credentials()
        record = KeyRecord(
            key_id=key_id, principal=spec.principal, name=spec.name, scopes=spec.scopes,
            created_at=now, expires_at=resolve_expiry(self.policy, spec.expiry, now),
            issued_with_mfa=actor.mfa, created_by=actor.principal,
            wrapped=keyring.wrap_secret(key_id, secret),
            secret_sha256=hashlib.sha256(secret.hmac_key()).digest(),
            rate_limit=spec.rate_limit, source_cidrs=spec.source_cidrs,
            rotated_from=rotated_from,
        )
        return Issued(record, secret)

    async def create(self, spec: NewKey, *, actor: Actor, now: datetime) -> Issued:
        (issued,) = await self.create_many([spec], actor=actor, now=now)
        return issued

    async def create_many(self, specs: Sequence[NewKey], *, actor: Actor,
                          now: datetime) -> list[Issued]:
        """Create several keys in one transaction (the bulk path for benchmarks and imports)."""
        specs = [validate_new_key(self.policy, s) for s in specs]
        issued = [self._issue(s, actor, now) for s in specs]
        principals = sorted({s.principal for s in specs})
        async with self.store.transaction() as tx:
            await tx.lock_principals(principals)
            live = await tx.live_keys(principals, now)
            counts = {p: counted_keys([k for k in live if k.principal == p], now,
                                      self.policy.inactivity) for p in principals}
            for s in specs:
                counts[s.principal] += 1
                if counts[s.principal] > self.policy.max_active_keys_per_principal:
                    raise KeyLimitReached(s.principal, self.policy.max_active_keys_per_principal)
            await tx.insert_keys([i.record for i in issued])
            await tx.add_audit([self._audit(
                actor, "key.created", i.record.key_id, now, principal=i.record.principal,
                name=i.record.name, scopes=list(i.record.scopes),
                expires_at=rfc3339(i.record.expires_at)) for i in issued])
            await tx.add_changes([(i.record.key_id, "created", now) for i in issued])
            await tx.add_events([self._event("key.created", i.record, now) for i in issued])
        return issued

    async def _locked_key(self, tx: Transaction, key_id: str) -> KeyRecord:
        record = await tx.get_key(key_id)
        if record is None:
            raise KeyNotFound(key_id)
        return record

    def _require_active(self, record: KeyRecord, now: datetime, doing: str) -> None:
        status = record.status(now, self.policy.inactivity)
        if status != "active":
            raise PolicyViolation(f"cannot {doing} key {record.key_id}: it is {status}")

    async def rotate(self, key_id: str, *, actor: Actor, now: datetime,
                     grace: float | None = None, expiry: Expiry = None) -> Issued:
        """A new key with the same principal, name, scopes and limits; the old one stays
        valid (``rotating``) for the grace period, then is revoked with reason ``rotated``."""
        check_key_id(key_id)
        grace = resolve_grace(self.policy, grace)
        async with self.store.transaction() as tx:
            old = await self._locked_key(tx, key_id)
            self._require_active(old, now, "rotate")
            spec = NewKey(principal=old.principal, name=old.name, scopes=old.scopes,
                          expiry=expiry, rate_limit=old.rate_limit, source_cidrs=old.source_cidrs)
            new = self._issue(spec, actor, now, rotated_from=old.key_id)
            grace_until = now + timedelta(seconds=grace)
            await tx.insert_keys([new.record])
            rotated = old.replace(rotated_to=new.record.key_id, revoked_at=grace_until,
                                  revoke_reason="rotated", revoked_by=actor.principal)
            await tx.update_key(rotated)
            await tx.add_audit([
                self._audit(actor, "key.rotated", old.key_id, now,
                            new_key_id=new.record.key_id, grace_until=rfc3339(grace_until)),
                self._audit(actor, "key.created", new.record.key_id, now,
                            principal=new.record.principal, rotated_from=old.key_id,
                            expires_at=rfc3339(new.record.expires_at)),
            ])
            await tx.add_changes([(old.key_id, "rotated", now),
                                  (new.record.key_id, "created", now)])
            await tx.add_events([
                self._event("key.rotated", rotated, now, new_key_id=new.record.key_id,
                            grace_until=rfc3339(grace_until)),
                self._event("key.created", new.record, now)])
        return new

    async def renew(self, key_id: str, *, actor: Actor, now: datetime,
                    expiry: Expiry = None) -> KeyRecord:
        """A new ``expires_at`` within policy, counted from ``now``."""
        check_key_id(key_id)
        expires_at = resolve_expiry(self.policy, expiry, now)
        async with self.store.transaction() as tx:
            old = await self._locked_key(tx, key_id)
            self._require_active(old, now, "renew")
            new = old.replace(expires_at=expires_at)
            await tx.update_key(new)
            await tx.add_audit([self._audit(actor, "key.renewed", key_id, now,
                                            previous_expires_at=rfc3339(old.expires_at),
                                            expires_at=rfc3339(expires_at))])
            await tx.add_changes([(key_id, "renewed", now)])
            await tx.add_events([self._event("key.renewed", new, now,
                                             previous_expires_at=rfc3339(old.expires_at))])
        return new

    async def revoke(self, key_id: str, *, actor: Actor, now: datetime,
                     reason: str = "unspecified", source: str | None = None) -> KeyRecord:
        """Revoke now (a rotating key too, ending its grace early). ``source`` is where a
        leaked secret was found (``path:line``, a URL), kept in the audit details."""
        check_key_id(key_id)
        reason = _text(reason, "reason", required=True)
        details = {"reason": reason} if source is None else {"reason": reason, "source": source}
        minted = await self._minted_by(key_id) if reason == LEAKED else []
        async with self.store.transaction() as tx:
            old = await self._locked_key(tx, key_id)
            if old.status(now, self.policy.inactivity) == "revoked":
                raise PolicyViolation(f"key {key_id} is already revoked")
            new = old.replace(revoked_at=now, revoke_reason=reason, revoked_by=actor.principal)
            revoked = [(new, details)]
            for child_id in minted:  # what the leaked secret could mint is leaked too
                child = await tx.get_key(child_id)
                if child is not None and child.status(now, self.policy.inactivity) != "revoked":
                    revoked.append((child.replace(revoked_at=now, revoke_reason=LEAKED,
                                                  revoked_by=actor.principal),
                                    {"reason": LEAKED, "minted_by": key_id}))
            for record, why in revoked:
                await tx.update_key(record)
            await tx.add_audit([self._audit(actor, "key.revoked", r.key_id, now, **why)
                                for r, why in revoked])
            await tx.add_changes([(r.key_id, "revoked", now) for r, _ in revoked])
            await tx.add_events([self._event("key.revoked", r, now, **why)
                                 for r, why in revoked])
        return new

    async def _minted_by(self, key_id: str) -> list[str]:
        """The keys minted by rotations that ``key_id`` (then each of them) made with its
        own signature — self-rotation — down the ``rotated_to`` chain (DESIGN §4.1)."""
        chain: list[str] = []
        parent = await self.store.get_key(key_id)
        while parent is not None and parent.rotated_to is not None:
            made = await self.store.find_audit(
                AuditFilter(target=parent.rotated_to, action="key.created"), limit=1)
            if not made or made[0].actor_key_id != parent.key_id or parent.rotated_to in chain:
                break
            chain.append(parent.rotated_to)
            parent = await self.store.get_key(parent.rotated_to)
        return chain

    async def update(self, key_id: str, *, actor: Actor, now: datetime,
                     name: str | Unchanged = UNCHANGED,
                     scopes: Sequence[str] | Unchanged = UNCHANGED,
                     rate_limit: RateLimit | None | Unchanged = UNCHANGED,
                     source_cidrs: Sequence[str] | None | Unchanged = UNCHANGED) -> KeyRecord:
        """Change name, scopes, rate limit or source CIDRs (admin API ``PATCH``)."""
        check_key_id(key_id)
        async with self.store.transaction() as tx:
            old = await self._locked_key(tx, key_id)
            if old.status(now, self.policy.inactivity) == "revoked":
                raise PolicyViolation(f"cannot update key {key_id}: it is revoked")
            spec = validate_new_key(self.policy, NewKey(
                principal=old.principal,
                name=old.name if isinstance(name, Unchanged) else name,
                scopes=old.scopes if isinstance(scopes, Unchanged) else tuple(scopes),
                rate_limit=old.rate_limit if isinstance(rate_limit, Unchanged) else rate_limit,
                source_cidrs=old.source_cidrs if isinstance(source_cidrs, Unchanged)
                else None if source_cidrs is None else tuple(source_cidrs)))
            new = old.replace(name=spec.name, scopes=spec.scopes, rate_limit=spec.rate_limit,
                              source_cidrs=spec.source_cidrs)
            before, after = old.to_api(now, 0), new.to_api(now, 0)
            changed = {f: after[f] for f in ("name", "scopes", "rate_limit", "source_cidrs")
                       if before[f] != after[f]}
            if not changed:
                return old
            await tx.update_key(new)
            await tx.add_audit([self._audit(actor, "key.updated", key_id, now, **changed)])
            await tx.add_changes([(key_id, "updated", now)])
            await tx.add_events([self._event("key.updated", new, now, changed=sorted(changed))])
        return new

    async def get(self, key_id: str) -> KeyRecord:
        """The record; :class:`MalformedKeyId` before any lookup, :class:`KeyNotFound` after."""
        check_key_id(key_id)
        record = await self.store.get_key(key_id)
        if record is None:
            raise KeyNotFound(key_id)
        return record

    async def get_with_secret(self, key_id: str) -> tuple[KeyRecord, SecretStr]:
        """The record and its unwrapped secret (raises :class:`gateway.kek.UnwrapError`)."""
        record = await self.get(key_id)
        return record, self._keyring().unwrap_secret(key_id, record.wrapped)
