"""The reserved data-plane endpoints (DESIGN §4.1): ``GET /_gateway/whoami`` and
``POST /_gateway/self/rotate``. They are never forwarded, and they run only after
the request passed every check a proxied request passes (signature, replay, key
status, MFA and source policy: :meth:`DataPlane.authenticate`).

Self-rotation is not a back door (DESIGN §4.1 "Rules the table leaves open"): the
key needs scope ``self:rotate`` and ``[policy] allow_self_rotate``; the new key
inherits principal, name, scopes, rate limit, source CIDRs and ``issued_with_mfa``
from its parent — never more — and gets ``default_lifetime`` unless the body asks for
less. The rules of rotation itself (grace within policy, only an active key) are
:meth:`KeyManager.rotate`'s.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import orjson

from ..config import PolicyConfig, parse_duration
from ..errors import GatewayError
from ..keys.errors import PolicyViolation
from ..keys.lifecycle import Actor, Issued, KeyManager, format_duration
from ..keys.record import AuditEntry, KeyRecord, rfc3339
from ..store import StoreError
from .routes import scope_allows

__all__ = ["SELF_ROTATE_SCOPE", "may_self_rotate", "self_rotate", "whoami"]

SELF_ROTATE_SCOPE = "self:rotate"
log = logging.getLogger("gateway")

_BODY_FIELDS = frozenset({"grace", "expires_in"})
_MAX_DURATION = 100_000 * 86400.0  # as the admin API's duration pattern: five digits of days


def may_self_rotate(policy: PolicyConfig, record: KeyRecord) -> bool:
    return policy.allow_self_rotate and scope_allows(record.scopes, SELF_ROTATE_SCOPE)


def whoami(policy: PolicyConfig, record: KeyRecord, now: datetime) -> dict[str, Any]:
    """The calling key's record, its inactivity deadline and whether it may rotate itself."""
    body = record.to_api(now, policy.inactivity)
    body["inactive_after"] = rfc3339(record.inactive_after(policy.inactivity))
    body["may_self_rotate"] = may_self_rotate(policy, record)
    return body


def _invalid(message: str) -> GatewayError:
    return GatewayError("invalid_request", message)


def _duration(doc: dict[str, Any], name: str) -> float | None:
    value = doc.get(name)
    if value is None and name not in doc:
        return None
    if not isinstance(value, str):
        raise _invalid(f"{name}: expected a duration like 90s, 5m, 12h or 30d")
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise _invalid(f"{name}: expected a duration like 90s, 5m, 12h or 30d") from None
    if seconds >= _MAX_DURATION:
        raise _invalid(f"{name}: too long")
    return seconds


def parse_body(raw: bytes) -> tuple[float | None, float | None]:
    """``(grace, expires_in)`` in seconds from ``{"grace": "24h", "expires_in": "30d"}``,
    both optional (an empty body is ``{}``); 400 ``invalid_request`` otherwise."""
    if not raw.strip():
        return None, None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _invalid("the body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise _invalid("the body must be a JSON object")
    unknown = sorted(set(doc) - _BODY_FIELDS)
    if unknown:
        raise _invalid(f"body: unknown member {unknown[0][:40]!r} (allowed: grace, expires_in)")
    return _duration(doc, "grace"), _duration(doc, "expires_in")


async def self_rotate(manager: KeyManager, record: KeyRecord, raw: bytes, *, source: str,
                      now: datetime) -> Issued:
    """Rotate the calling key (already authenticated: ``record``) into a new one.

    403 ``scope_denied`` without ``self:rotate``; 422 ``policy_violation`` when policy
    turns self-rotation off, for a lifetime longer than ``default_lifetime`` or a grace
    over ``max_rotation_grace``; 403 ``mfa_required`` when issuance needs MFA and the
    key was issued without it; 400 ``invalid_request`` for a body that is not
    ``{"grace": D, "expires_in": D}``. Refusals are audited as ``key.rotated``
    failures; a success is audited by the rotation's own transaction."""
    policy = manager.policy
    actor = Actor(principal=record.principal, key_id=record.key_id, source=source,
                  mfa=record.issued_with_mfa)  # inherited, never claimed
    try:
        if not scope_allows(record.scopes, SELF_ROTATE_SCOPE):
            raise GatewayError("scope_denied", f"the key needs scope {SELF_ROTATE_SCOPE} "
                                               "to rotate itself")
        if not policy.allow_self_rotate:
            raise PolicyViolation("self-rotation is turned off by policy "
                                  "(policy.allow_self_rotate = false)")
        if policy.require_mfa_for_issuance and not record.issued_with_mfa:
            raise GatewayError("mfa_required", "issuing keys needs MFA, and this key was "
                                               "issued without it")
        grace, lifetime = parse_body(raw)
        if lifetime is not None and lifetime > policy.default_lifetime:
            raise PolicyViolation("a self-rotated key lives at most default_lifetime "
                                  f"({format_duration(policy.default_lifetime)})")
        return await manager.rotate(record.key_id, actor=actor, now=now, grace=grace,
                                    expiry=lifetime)
    except GatewayError as exc:
        if not isinstance(exc, StoreError):
            await _audit_refusal(manager, actor, record.key_id, now, exc)
        raise


async def _audit_refusal(manager: KeyManager, actor: Actor, key_id: str, now: datetime,
                         exc: GatewayError) -> None:
    entry = AuditEntry(at=now, actor_key_id=actor.key_id, actor_principal=actor.principal,
                       action="key.rotated", target=key_id, source=actor.source,
                       outcome="failure", details={"error": exc.code, "via": "self"})
    try:
        async with manager.store.transaction() as tx:
            await tx.add_audit([entry])
    except StoreError as failed:  # the refusal stands; the operator learns from the log
        log.error("cannot write audit key.rotated: %s", failed)
