"""``/v1/audit``, ``/v1/whoami`` and ``/v1/mfa/enroll`` (DESIGN §4.1)."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from ..errors import GatewayError
from ..keys.record import AuditEntry
from ..proxy.routes import scope_allows
from ..store import AuditFilter
from . import schema
from .auth import ADMIN_SCOPE, ADMIN_SCOPES, audit, require_scope
from .keys import WRITE, json_response
from .mfa import enrol
from .state import CALLER_KEY, GATEWAY_KEY, Caller

__all__ = ["routes"]

AUDIT_PARAMS = ("key_id", "actor", "action", "since", "until", "limit", "cursor")


async def list_audit(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    await require_scope(gateway, request, request[CALLER_KEY], "admin:audit:read")
    q = schema.query(request.query, AUDIT_PARAMS)
    where = AuditFilter(
        key_id=q.get("key_id"), actor=q.get("actor"), action=q.get("action"),
        since=schema.instant(q["since"], "since") if "since" in q else None,
        until=schema.instant(q["until"], "until") if "until" in q else None)
    return json_response(await schema.numbered_page(
        q, lambda n, after: gateway.store.find_audit(where, limit=n, after=after),
        lambda entry: entry.id))


async def whoami(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    caller: Caller = request[CALLER_KEY]
    if not any(scope_allows(caller.record.scopes, s) for s in ADMIN_SCOPES):
        await require_scope(gateway, request, caller, ADMIN_SCOPE)  # audits, then refuses
    return json_response(caller.record.to_api(datetime.now(UTC),
                                              gateway.config.policy.inactivity))


async def enroll_mfa(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    caller: Caller = request[CALLER_KEY]
    await require_scope(gateway, request, caller, WRITE)
    principal = caller.record.principal
    now = datetime.now(UTC)
    entry = AuditEntry(at=now, actor_key_id=caller.record.key_id, actor_principal=principal,
                       action="mfa.enrolled", target=principal, source=caller.source,
                       outcome="success", details={})
    uri = await enrol(gateway.store, gateway.keyring, principal, now, entry)
    if uri is None:
        await audit(gateway, caller.record, "mfa.enrolled", principal, caller.source,
                    "failure", error="policy_violation")
        raise GatewayError("policy_violation", f"principal {principal!r} is already enrolled "
                                               "(one enrolment per principal)")
    return json_response({"otpauth_uri": uri}, 201)


def routes() -> list[web.RouteDef]:
    return [web.get("/v1/audit", list_audit, allow_head=False),
            web.get("/v1/whoami", whoami, allow_head=False),
            web.post("/v1/mfa/enroll", enroll_mfa)]
