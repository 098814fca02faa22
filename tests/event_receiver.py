"""A webhook receiver for the lifecycle-event tests: a real HTTP server in the test's
event loop that verifies every delivery with the independent ``http-message-signatures``
library — the signature and, from the body received, ``Content-Digest``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from aiohttp import web
from http_message_signatures import HTTPMessageVerifier, MappingKeyResolver
from http_message_signatures.algorithms import HMAC_SHA256
from http_message_signatures.structures import CaseInsensitiveDict

# the minimum, plus @query (the URL has one) and the event ID header
REQUIRED = ("@method", "@authority", "@path", "@query", "content-digest", "content-type",
            "gateway-event-id")


class Message:
    """The request interface the library reads: method, absolute url, headers."""

    def __init__(self, method: str, url: str, headers: list[tuple[str, str]]) -> None:
        self.method = method
        self.url = url
        self.headers = CaseInsensitiveDict(headers)


@dataclass
class Delivery:
    event_id: str
    body: dict[str, Any]
    raw: bytes
    covered: set[str]
    params: dict[str, Any]
    answered: int


@dataclass
class Receiver:
    """Answers each delivery with the next of ``statuses`` (then 200). ``secrets`` maps a
    webhook ID (the signature's keyid) to its secret, set once the webhook exists."""

    port: int
    statuses: list[int] = field(default_factory=list)
    secrets: dict[str, bytes] = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/gateway?tenant=a"

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        headers = [(k, v) for k, v in request.headers.items()]
        message = Message(request.method, f"http://{request.host}{request.path_qs}", headers)
        verifier = HTTPMessageVerifier(signature_algorithm=HMAC_SHA256,
                                       key_resolver=MappingKeyResolver(
                                           public_keys=self.secrets, private_keys=self.secrets))
        try:
            (result,) = verifier.verify(message, body=raw, max_age=timedelta(minutes=5),
                                        require_components=REQUIRED)
        except Exception as exc:  # noqa: BLE001 - the test reports what failed
            self.refused.append(f"{type(exc).__name__}: {exc}")
            return web.json_response({"error": "bad signature"}, status=401)
        status = self.statuses.pop(0) if self.statuses else 200
        self.deliveries.append(Delivery(
            event_id=request.headers["Gateway-Event-Id"], body=json.loads(raw), raw=raw,
            covered=set(result.covered_components), params=dict(result.parameters),
            answered=status))
        return web.json_response({}, status=status)

    def received(self, event_id: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.event_id == event_id]

    def delivered(self, event_id: str) -> bool:
        return any(d.answered == 200 for d in self.received(event_id))

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hooks/gateway", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
