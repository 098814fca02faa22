"""``POST /v1/leaks`` (DESIGN §4.1 "Leak reports"): a secret scanner reports tokens it
found, with where it found them; every one that is the secret of a key not yet
revoked is revoked at once (reason ``leaked``, the URL in the audit details).

The answer per token is ``revoked``, ``already_revoked`` or ``not_ours`` — the last for
anything else, malformed or not, so the endpoint never says whether an unknown token
"looks like" a key. Scope ``leaks:report`` (or ``admin``): a scanning service's key
can do nothing else.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from ..keys.leaks import revoke_leaked
from ..keys.lifecycle import Actor
from . import schema
from .auth import require_scope
from .keys import MANAGER_KEY, json_response
from .state import CALLER_KEY, GATEWAY_KEY, Caller

__all__ = ["SCOPE", "routes"]

SCOPE = "leaks:report"


async def report_leaks(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    caller: Caller = request[CALLER_KEY]
    await require_scope(gateway, request, caller, SCOPE)
    doc = schema.body(caller.body, "LeakReport")
    actor = Actor(principal=caller.record.principal, key_id=caller.record.key_id,
                  source=caller.source)
    results = []
    for index, item in enumerate(doc["tokens"]):
        verdict, record = await revoke_leaked(request.app[MANAGER_KEY], item["token"],
                                              source=item["url"], actor=actor,
                                              now=datetime.now(UTC))
        if verdict == "revoked" and record is not None:
            gateway.cache.drop([record.key_id])  # here at once; elsewhere by the change log
        results.append({"index": index, "verdict": verdict})
    return json_response({"results": results})


def routes() -> list[web.RouteDef]:
    return [web.post("/v1/leaks", report_leaks)]
