"""Admin authentication (DESIGN §4.1 "Admin listener"): every ``/v1`` call except the
OpenAPI document is signed like a data-plane request and goes through the data
plane's own steps 4-9 (signature, clock, key lookup, MAC, replay, key status, source
policy) — but not ``reject_keys_without_mfa``, so the CLI-made bootstrap key cannot
lock itself out. Then the operation's scope: ``admin`` grants every one.

Every failed authentication, and every refusal for want of scope, is audited as
``admin.auth_failed``; the acting key is named only once its signature verified.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiohttp import web

from ..errors import GatewayError
from ..keys.formats import is_well_formed_key_id
from ..keys.record import AuditEntry, KeyRecord
from ..proxy.pipeline import decoded_headers
from ..proxy.routes import SAFE_METHODS, check_target, scope_allows
from ..signing import Request, parse
from ..store import StoreError
from .state import Caller

if TYPE_CHECKING:
    from ..proxy.server import Gateway

__all__ = ["ADMIN_SCOPE", "ADMIN_SCOPES", "audit", "authenticate", "require_grant",
           "require_scope"]

log = logging.getLogger("gateway.admin")

ADMIN_SCOPE = "admin"
ADMIN_SCOPES = (ADMIN_SCOPE, "admin:keys:read", "admin:keys:write", "admin:audit:read",
                "leaks:report")
ADMIN_MAX_BODY = 64 * 1024
# refusals that come only after the MAC verified: the key is then known to be the caller
_AFTER_MAC = frozenset({"replayed", "key_revoked", "key_expired", "key_inactive",
                        "source_denied"})


def _replay_applies(gateway: Gateway, method: str) -> bool:
    mode = gateway.config.auth.replay
    return mode == "all" or (mode == "unsafe-methods" and method not in SAFE_METHODS)


async def authenticate(gateway: Gateway, request: web.Request,
                       answer: list[tuple[str, str]]) -> Caller:
    """The verified caller of a signed admin request; raises (and audits) a refusal."""
    now = time.time()
    headers: tuple[tuple[str, str], ...] = ()
    try:
        check_target(request.raw_path)
        headers = decoded_headers(request, gateway.config.server.max_headers)
        dp = gateway.data_plane
        auth = await dp.authenticate(
            request, headers, policy=dp.reserved_policy, max_body=ADMIN_MAX_BODY,
            replay=_replay_applies(gateway, request.method), now=now, answer=answer,
            data_plane=False)
    except GatewayError as exc:
        await _audit_failure(gateway, request, headers, exc, now)
        raise
    return Caller(auth.record, request.remote or "", auth.body)


async def require_scope(gateway: Gateway, request: web.Request, caller: Caller,
                        scope: str) -> None:
    """403 ``scope_denied`` unless the caller holds ``admin`` or ``scope``."""
    scopes = caller.record.scopes
    if scope_allows(scopes, ADMIN_SCOPE) or scope_allows(scopes, scope):
        return
    exc = GatewayError("scope_denied", f"this call needs scope {scope} (or {ADMIN_SCOPE})")
    await audit(gateway, caller.record, "admin.auth_failed", _target(request), caller.source,
                "failure", error=exc.code, required_scope=scope)
    raise exc


def require_grant(caller: Caller, scopes: Sequence[str]) -> None:
    """Only an ``admin`` caller may issue keys holding admin scopes (``admin``, the finer
    ``admin:*`` ones, ``leaks:report``, or a wildcard covering them): otherwise a key
    with ``admin:keys:write`` could mint itself a full ``admin`` key."""
    if scope_allows(caller.record.scopes, ADMIN_SCOPE):
        return
    granted = [s for s in scopes if any(scope_allows([s], a) for a in ADMIN_SCOPES)]
    if granted:
        raise GatewayError("scope_denied", f"only a key with scope {ADMIN_SCOPE} may issue "
                                           f"keys with scope {granted[0][:128]}")


async def audit(gateway: Gateway, actor: KeyRecord | None, action: str, target: str | None,
                source: str, outcome: str, **details: object) -> None:
    """One audit row outside a lifecycle transaction (refusals, enrolments)."""
    entry = AuditEntry(
        at=datetime.now(UTC), actor_key_id=actor.key_id if actor else None,
        actor_principal=actor.principal if actor else "unauthenticated", action=action,
        target=target, source=source, outcome=outcome, details=dict(details))
    try:
        async with gateway.store.transaction() as tx:
            await tx.add_audit([entry])
    except StoreError as exc:  # the refusal stands; the operator learns from the log
        log.error("cannot write audit %s: %s", action, exc)


def _target(request: web.Request) -> str:
    return f"{request.method[:16]} {request.path[:200]}"


async def _audit_failure(gateway: Gateway, request: web.Request,
                         headers: tuple[tuple[str, str], ...], exc: GatewayError,
                         now: float) -> None:
    claimed = None
    try:  # the key ID the request names (pure parsing, no lookup)
        signed = Request(request.method, request.raw_path, headers, scheme=request.scheme)
        claimed = parse(signed, gateway.data_plane.reserved_policy, now).key_id
    except GatewayError:
        pass
    actor = None
    if claimed is not None and is_well_formed_key_id(claimed) and exc.code in _AFTER_MAC:
        try:
            entry = await gateway.cache.get(claimed)
            actor = entry.record if entry else None
        except GatewayError:
            actor = None
    details: dict[str, object] = {"error": exc.code}
    if actor is None and claimed is not None:
        details["claimed_key_id"] = claimed[:64]  # unverified: anyone can name any key
    await audit(gateway, actor, "admin.auth_failed", _target(request), request.remote or "",
                "failure", **details)
