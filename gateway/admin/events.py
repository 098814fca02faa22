"""``/v1/events`` and ``/v1/events/{id}/redeliver`` (DESIGN §4.1): lifecycle events and
their delivery state. Reading needs ``admin:audit:read`` (events are part of the
trail); redelivering changes what is sent, so it needs ``admin:keys:write``."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from ..errors import GatewayError
from ..events.manage import redeliver
from ..events.model import DELIVERY_STATES, EVENT_TYPES, EventFilter
from . import schema
from .auth import require_scope
from .keys import WRITE, actor_of, json_response
from .state import CALLER_KEY, GATEWAY_KEY

__all__ = ["routes"]

READ = "admin:audit:read"
EVENT_PARAMS = ("type", "target", "status", "since", "limit", "cursor")


def _choice(value: str | None, choices: tuple[str, ...], what: str) -> str | None:
    if value is not None and value not in choices:
        raise GatewayError("invalid_request", f"{what}: one of {', '.join(choices)}")
    return value


async def list_events(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    await require_scope(gateway, request, request[CALLER_KEY], READ)
    q = schema.query(request.query, EVENT_PARAMS)
    where = EventFilter(
        type=_choice(q.get("type"), EVENT_TYPES, "type"), target=q.get("target"),
        status=_choice(q.get("status"), DELIVERY_STATES, "status"),  # type: ignore[arg-type]
        since=schema.instant(q["since"], "since") if "since" in q else None)
    return json_response(await schema.numbered_page(
        q, lambda n, after: gateway.store.list_events(where, limit=n, after=after),
        lambda event: event.seq))


async def redeliver_event(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    caller = request[CALLER_KEY]
    await require_scope(gateway, request, caller, WRITE)
    event = await redeliver(gateway.store, request.match_info["event_id"],
                            actor=actor_of(caller), now=datetime.now(UTC))
    return json_response(event.to_api())


def routes() -> list[web.RouteDef]:
    return [web.get("/v1/events", list_events, allow_head=False),
            web.post("/v1/events/{event_id}/redeliver", redeliver_event)]
