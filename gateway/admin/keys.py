"""``/v1/keys``: create, list, get, update, rotate, renew, revoke, activity (DESIGN §4.1).

Every rule lives in :class:`gateway.keys.lifecycle.KeyManager`, which writes the key,
its audit row and its ``key_changes`` row in one transaction; here are only the HTTP
shapes, the scope of each call, MFA step-up for issuance, and the audit of refusals.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson
from aiohttp import web

from ..errors import GatewayError
from ..keys.lifecycle import UNCHANGED, Actor, KeyManager, NewKey, check_key_id
from ..keys.record import KeyRecord
from ..store import KeyFilter
from . import schema
from .auth import audit, require_grant, require_scope
from .mfa import MFA_HEADER, verify_code
from .state import CALLER_KEY, GATEWAY_KEY, Caller

__all__ = ["MANAGER_KEY", "actor_of", "json_response", "routes"]

T = TypeVar("T")
MANAGER_KEY: web.AppKey[KeyManager] = web.AppKey("key_manager")
READ, WRITE = "admin:keys:read", "admin:keys:write"
HOUR = 3600.0
LIST_PARAMS = ("principal", "status", "created_after", "created_before", "expires_before",
               "unused_since", "limit", "cursor")


def json_response(doc: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(doc), content_type="application/json")


def _api(request: web.Request, record: KeyRecord, now: datetime) -> dict[str, Any]:
    return record.to_api(now, request.app[GATEWAY_KEY].config.policy.inactivity)


async def _caller(request: web.Request, scope: str) -> Caller:
    caller: Caller = request[CALLER_KEY]
    await require_scope(request.app[GATEWAY_KEY], request, caller, scope)
    return caller


async def _step_up(request: web.Request, caller: Caller) -> bool:
    """Whether this call carries a valid, unused one-time code (403 if it carries a bad
    one, or none while ``require_mfa_for_issuance`` is set)."""
    gateway = request.app[GATEWAY_KEY]
    code = request.headers.get(MFA_HEADER)
    if code is None:
        if gateway.config.policy.require_mfa_for_issuance:
            raise GatewayError("mfa_required", f"issuing keys needs a one-time code in "
                                               f"{MFA_HEADER}")
        return False
    await verify_code(gateway.store, gateway.keyring, caller.record.principal, code.strip(),
                      time.time())
    return True


async def _audited(request: web.Request, caller: Caller, action: str, target: str | None,
                   run: Callable[[], Awaitable[T]]) -> T:
    """Run a change; a refusal is audited (a success is, by the lifecycle transaction)."""
    try:
        return await run()
    except GatewayError as exc:
        await audit(request.app[GATEWAY_KEY], caller.record, action, target, caller.source,
                    "failure", error=exc.code)
        raise


def actor_of(caller: Caller, mfa: bool = False) -> Actor:
    return Actor(principal=caller.record.principal, key_id=caller.record.key_id,
                 source=caller.source, mfa=mfa)


async def create(request: web.Request) -> web.Response:
    caller = await _caller(request, WRITE)
    manager = request.app[MANAGER_KEY]

    async def run() -> web.Response:
        doc = schema.body(caller.body, "CreateKey")
        spec = NewKey(principal=doc["principal"], name=doc.get("name", ""),
                      scopes=tuple(doc.get("scopes", ())), expiry=schema.expiry(doc),
                      rate_limit=schema.rate_limit(doc.get("rate_limit")),
                      source_cidrs=None if doc.get("source_cidrs") is None
                      else tuple(doc["source_cidrs"]))
        require_grant(caller, spec.scopes)
        mfa = await _step_up(request, caller)
        now = datetime.now(UTC)
        issued = await manager.create(spec, actor=actor_of(caller, mfa), now=now)
        _dropped(request, issued.record.key_id)  # a negative entry from before it existed
        return json_response(issued.to_api(now, manager.policy.inactivity), 201)
    return await _audited(request, caller, "key.created", None, run)


async def list_keys(request: web.Request) -> web.Response:
    await _caller(request, READ)
    q = schema.query(request.query, LIST_PARAMS)

    def at(name: str) -> datetime | None:
        return schema.instant(q[name], name) if name in q else None

    where = KeyFilter(principal=q.get("principal"), status=schema.status(q.get("status")),
                      created_after=at("created_after"), created_before=at("created_before"),
                      expires_before=at("expires_before"), unused_since=at("unused_since"))
    gateway = request.app[GATEWAY_KEY]
    now = datetime.now(UTC)
    page = await gateway.store.list_keys(where, now=now,
                                         inactivity=gateway.config.policy.inactivity,
                                         limit=schema.limit(q.get("limit")),
                                         cursor=q.get("cursor"))
    return json_response({"items": [_api(request, r, now) for r in page.items],
                          "next_cursor": page.next_cursor})


async def get_key(request: web.Request) -> web.Response:
    await _caller(request, READ)
    key_id = request.match_info["key_id"]
    record = await request.app[MANAGER_KEY].get(key_id)
    now = datetime.now(UTC)
    activity = await request.app[GATEWAY_KEY].store.activity(key_id,
                                                             now - timedelta(seconds=HOUR))
    return json_response({**_api(request, record, now), "requests_last_hour": activity.total})


async def update_key(request: web.Request) -> web.Response:
    caller = await _caller(request, WRITE)
    key_id = request.match_info["key_id"]

    async def run() -> web.Response:
        check_key_id(key_id)
        doc = schema.body(caller.body, "UpdateKey")
        require_grant(caller, doc.get("scopes", ()))
        now = datetime.now(UTC)
        record = await request.app[MANAGER_KEY].update(
            key_id, actor=actor_of(caller), now=now, name=doc.get("name", UNCHANGED),
            scopes=doc.get("scopes", UNCHANGED),
            rate_limit=schema.rate_limit(doc["rate_limit"]) if "rate_limit" in doc
            else UNCHANGED,
            source_cidrs=doc.get("source_cidrs", UNCHANGED))
        _dropped(request, key_id)
        return json_response(_api(request, record, now))
    return await _audited(request, caller, "key.updated", key_id, run)


async def rotate_key(request: web.Request) -> web.Response:
    caller = await _caller(request, WRITE)
    key_id = request.match_info["key_id"]
    manager = request.app[MANAGER_KEY]

    async def run() -> web.Response:
        check_key_id(key_id)
        doc = schema.body(caller.body, "RotateKey")
        grace = schema.duration(doc["grace"], "grace") if "grace" in doc else None
        lifetime = schema.duration(doc["expires_in"], "expires_in") if "expires_in" in doc \
            else None
        old = await manager.get(key_id)  # the new key inherits its scopes
        require_grant(caller, old.scopes)
        mfa = await _step_up(request, caller)
        now = datetime.now(UTC)
        issued = await manager.rotate(key_id, actor=actor_of(caller, mfa), now=now, grace=grace,
                                      expiry=lifetime)
        _dropped(request, key_id, issued.record.key_id)
        return json_response(issued.to_api(now, manager.policy.inactivity), 201)
    return await _audited(request, caller, "key.rotated", key_id, run)


async def renew_key(request: web.Request) -> web.Response:
    caller = await _caller(request, WRITE)
    key_id = request.match_info["key_id"]

    async def run() -> web.Response:
        check_key_id(key_id)
        doc = schema.body(caller.body, "RenewKey")
        lifetime = schema.expiry(doc)
        mfa = await _step_up(request, caller)
        now = datetime.now(UTC)
        record = await request.app[MANAGER_KEY].renew(key_id, actor=actor_of(caller, mfa),
                                                      now=now, expiry=lifetime)
        _dropped(request, key_id)
        return json_response(_api(request, record, now))
    return await _audited(request, caller, "key.renewed", key_id, run)


async def revoke_key(request: web.Request) -> web.Response:
    caller = await _caller(request, WRITE)
    key_id = request.match_info["key_id"]

    async def run() -> web.Response:
        check_key_id(key_id)
        doc = schema.body(caller.body, "RevokeKey")
        now = datetime.now(UTC)
        record = await request.app[MANAGER_KEY].revoke(
            key_id, actor=actor_of(caller), now=now, reason=doc.get("reason", "unspecified"))
        _dropped(request, key_id)
        return json_response(_api(request, record, now))
    return await _audited(request, caller, "key.revoked", key_id, run)


async def activity(request: web.Request) -> web.Response:
    await _caller(request, READ)
    key_id = request.match_info["key_id"]
    q = schema.query(request.query, ("since",))
    seconds = schema.duration(q["since"], "since") if "since" in q else HOUR
    await request.app[MANAGER_KEY].get(key_id)  # 400 malformed / 404 unknown
    start = schema.since(datetime.now(UTC), seconds, "since")
    got = await request.app[GATEWAY_KEY].store.activity(key_id, start)
    return json_response({
        "routes": [{"route": r, "status": s, "count": n} for r, s, n in got.routes],
        "sources": [{"address": a, "count": n} for a, n in got.sources]})


def _dropped(request: web.Request, *key_ids: str) -> None:
    """This instance forgets the keys at once; the others within one change poll."""
    request.app[GATEWAY_KEY].cache.drop(key_ids)


def routes() -> list[web.RouteDef]:
    return [
        web.post("/v1/keys", create),
        web.get("/v1/keys", list_keys, allow_head=False),
        web.get("/v1/keys/{key_id}", get_key, allow_head=False),
        web.patch("/v1/keys/{key_id}", update_key),
        web.post("/v1/keys/{key_id}/rotate", rotate_key),
        web.post("/v1/keys/{key_id}/renew", renew_key),
        web.post("/v1/keys/{key_id}/revoke", revoke_key),
        web.get("/v1/keys/{key_id}/activity", activity, allow_head=False),
    ]
