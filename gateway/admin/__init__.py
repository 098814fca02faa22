"""The admin listener (DESIGN §3 "admin API", §4.1): ``/v1`` JSON calls, each signed
by an admin key; the OpenAPI document; unsigned ``/healthz``, ``/readyz``, ``/metrics``.

Every answer, refusals included, is JSON with the catalogue's codes (DESIGN §5);
nothing a client sends produces a 500.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from ..errors import GatewayError
from ..keys.lifecycle import KeyManager
from ..proxy.pipeline import error_response
from . import calls, events, keys, leaks
from .auth import authenticate
from .health import KeyCounts, healthz, metrics, readyz
from .openapi import render
from .state import CALLER_KEY, GATEWAY_KEY

if TYPE_CHECKING:
    from ..proxy.server import Gateway

__all__ = ["admin_app"]

log = logging.getLogger("gateway.admin")

UNSIGNED = frozenset({"/healthz", "/readyz", "/metrics", "/v1/openapi.json"})


@web.middleware
async def _signed_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate, run the call, answer every refusal in JSON, and count the call in
    ``gateway_requests`` and the calling key's activity under the route label ``admin``."""
    answer: list[tuple[str, str]] = []
    outcome = "ok"
    try:
        if request.path not in UNSIGNED:
            request[CALLER_KEY] = await authenticate(request.app[GATEWAY_KEY], request, answer)
        response: web.StreamResponse = await handler(request)
        for name, value in answer:
            response.headers[name] = value
    except (GatewayError, web.HTTPException) as exc:
        if isinstance(exc, web.HTTPException):  # the router's 404 / 405
            if exc.status not in (404, 405):
                raise
            exc = GatewayError("route_not_found", "no such call" if exc.status == 404
                               else "no such call (wrong method for this path)")
        outcome = exc.code
        response = error_response(exc, answer)
    except Exception:  # a bug: logged, answered in JSON, never a traceback to the client
        log.exception("admin call %s %s failed", request.method, request.path[:200])
        outcome = "internal_error"
        response = web.Response(status=500, content_type="application/json", body=orjson.dumps(
            {"error": "internal_error", "message": "the admin call failed"}))
    gateway = request.app[GATEWAY_KEY]
    gateway.data_plane.counters.count("admin", response.status, outcome)
    caller = request.get(CALLER_KEY)
    if caller is not None:  # in the key's activity too, under the route label "admin"
        gateway.usage.count(caller.record.key_id, "admin", response.status, caller.source,
                            time.time())
    return response


def admin_app(gateway: Gateway) -> web.Application:
    app = web.Application(middlewares=[_signed_json], client_max_size=64 * 1024)
    app[GATEWAY_KEY] = gateway
    app[keys.MANAGER_KEY] = KeyManager(gateway.store, gateway.keyring, gateway.config.policy)
    document = render()

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=document, content_type="application/json")

    app.router.add_get("/healthz", healthz, allow_head=False)
    app.router.add_get("/readyz", readyz, allow_head=False)
    app.router.add_get("/metrics", metrics(KeyCounts()), allow_head=False)
    app.router.add_get("/v1/openapi.json", openapi, allow_head=False)
    app.router.add_routes(keys.routes())
    app.router.add_routes(calls.routes())
    app.router.add_routes(leaks.routes())
    app.router.add_routes(events.routes())
    return app
