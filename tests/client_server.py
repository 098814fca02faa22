"""A small verifying HTTP server for the client SDK's end-to-end tests.

It is a stand-in for the gateway until its authenticated proxy lands: a real
aiohttp server on a free 127.0.0.1 port, in a thread of its own (so sync and
async clients can both call it), that verifies each request with
``gateway.signing`` as the gateway's pipeline does — raw target, every header
line, the exact body bytes, the replay rule of DESIGN §2.1 — and answers with
the catalogue's JSON errors or with what it received.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import string
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes
from email.policy import HTTP
from urllib.parse import parse_qsl

from aiohttp import web

from gateway.errors import SignatureError
from gateway.signing import Body, Policy, Request, parse

BASE62 = string.ascii_letters + string.digits


def new_key() -> tuple[str, str]:
    """A key ID and secret in the gateway's formats (prefix + base62; no checksum here)."""
    return ("gwk_" + "".join(secrets.choice(BASE62) for _ in range(28)),
            "gws_" + "".join(secrets.choice(BASE62) for _ in range(49)))


def _form(content_type: str, body: bytes) -> list[list[str]] | None:
    """What a server makes of a form body: [name, value] or [name, filename, content]."""
    if content_type.startswith("application/x-www-form-urlencoded"):
        return [list(p) for p in parse_qsl(body.decode(), keep_blank_values=True)]
    if content_type.startswith("multipart/form-data"):
        msg = message_from_bytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body,
                                 policy=HTTP)
        out = []
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True).decode()
            filename = part.get_filename()
            out.append([name, filename, payload] if filename else [name, payload])
        return out
    return None


class VerifyingServer:
    """``accept({key_id: secret})`` sets the keys that verify; ``revoke(key_id)``
    makes a verified key answer 401 ``key_revoked``. ``served`` counts 2xx
    answers per key ID."""

    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy or Policy()
        self._keys: dict[str, bytes] = {}
        self._revoked: frozenset[str] = frozenset()
        self._seen: set[bytes] = set()
        self.served: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.url = ""

    def accept(self, keys: dict[str, str]) -> None:
        self._keys = {k: v.encode() for k, v in keys.items()}

    def revoke(self, *key_ids: str) -> None:
        self._revoked = frozenset(key_ids)

    def _reject(self, code: str, message: str) -> web.Response:
        self.rejected[code] += 1
        return web.json_response({"error": code, "message": message},
                                 status=SignatureError(code, message).status)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        wire = Request(request.method, request.raw_path, tuple(request.headers.items()),
                       scheme="http")
        try:
            auth = parse(wire, self.policy, time.time())
            keys = self._keys
            secret = keys.get(auth.key_id, b"unknown key: verify against a dummy")
            verified = auth.verify(secret, Body(body))
            if auth.key_id not in keys:
                raise SignatureError("signature_invalid", "the signature does not match")
        except SignatureError as exc:
            return self._reject(exc.code, exc.message)
        if verified.replay_token in self._seen:
            return self._reject("replayed", "this signature was seen before")
        self._seen.add(verified.replay_token)
        if verified.key_id in self._revoked:
            return self._reject("key_revoked", "the key is revoked")
        self.served[verified.key_id] += 1
        content_type = request.headers.get("Content-Type", "")
        return web.json_response({
            "key_id": verified.key_id,
            "scheme": verified.scheme,
            "body_signed": verified.body_signed,
            "components": list(verified.components),
            "method": request.method,
            "raw_path": request.raw_path,
            "path": request.path,
            "query": [list(kv) for kv in request.query.items()],
            "content_type": content_type,
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "body_b64": base64.b64encode(body).decode(),
            "json": json.loads(body) if content_type.startswith("application/json") else None,
            "form": _form(content_type, body),
        })


@contextmanager
def running(server: VerifyingServer) -> Iterator[VerifyingServer]:
    """Serve on a free 127.0.0.1 port from a thread with its own event loop."""
    loop = asyncio.new_event_loop()
    runner: web.ServerRunner | None = None

    async def start() -> None:
        nonlocal runner
        runner = web.ServerRunner(web.Server(server.handle, auto_decompress=False))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        server.url = f"http://127.0.0.1:{port}"

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    try:
        yield server
    finally:
        if runner is not None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
