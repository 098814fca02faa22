"""Signed calls to the admin listener, as a script would make them: SigV4 with a fresh,
signed ``x-gateway-nonce`` per request (admin calls follow the replay rule)."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from gateway.keys.lifecycle import Issued
from gateway.signing.signer import sign_sigv4

from .gateway_fixtures import GatewayProcess


@dataclass(frozen=True)
class Key:
    key_id: str
    secret: str

    @classmethod
    def of(cls, issued: Issued) -> Key:
        return cls(issued.record.key_id, issued.secret.reveal())

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Key:
        return cls(doc["key_id"], doc["secret"])


def bootstrap_admin(gw: GatewayProcess, principal: str, *scopes: str) -> Key:
    """The first admin key, made with the CLI (DESIGN §4.1)."""
    args = ["keys", "create", "--principal", principal, "--json"]
    for scope in scopes or ("admin",):
        args += ["--scope", scope]
    done = gw.cli(*args)
    assert done.returncode == 0, done.stderr
    return Key.from_json(json.loads(done.stdout))


def signed(host: str, key: Key, method: str, target: str, body: bytes = b"",
           headers: tuple[tuple[str, str], ...] = (), now: float | None = None
           ) -> list[tuple[str, str]]:
    extra = (("x-gateway-nonce", secrets.token_hex(8)), *headers)
    if body:
        extra = (("Content-Type", "application/json"), *extra)
    added = sign_sigv4(method, target, host, list(extra), body, key_id=key.key_id,
                       secret=key.secret.encode(), now=time.time() if now is None else now)
    return [("Host", host), *extra, *added]


async def send(base: str, method: str, target: str, headers: list[tuple[str, str]],
               body: bytes = b"") -> tuple[int, Any, dict[str, str]]:
    skip = ("User-Agent", "Accept-Encoding", "Accept", "Content-Type")
    async with aiohttp.ClientSession(skip_auto_headers=skip) as s, s.request(
            method, URL(base + target, encoded=True), headers=headers, data=body or None) as r:
        raw = await r.read()
        doc = json.loads(raw) if raw and r.content_type == "application/json" else raw
        return r.status, doc, dict(r.headers)


async def admin(gw: GatewayProcess, key: Key, method: str, target: str,
                doc: Any = None, *, raw: bytes | None = None,
                headers: tuple[tuple[str, str], ...] = ()) -> tuple[int, Any]:
    """One signed admin call; the status and the JSON answer."""
    body = raw if raw is not None else (b"" if doc is None else json.dumps(doc).encode())
    host = f"127.0.0.1:{gw.admin_port}"
    status, answer, _ = await send(gw.admin_url, method, target,
                                   signed(host, key, method, target, body, headers), body)
    return status, answer


async def data(gw: GatewayProcess, key: Key, method: str, target: str,
               body: bytes = b"") -> tuple[int, Any]:
    """One signed data-plane call."""
    status, answer, _ = await send(gw.url, method, target,
                                   signed(gw.host, key, method, target, body), body)
    return status, answer


async def until(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 5.0) -> Any:
    """Poll ``check()`` until it returns something truthy: usage and lifecycle changes
    reach the store and the other instances in the background (``[usage] flush``,
    ``[cache] change_poll``)."""
    deadline = time.monotonic() + timeout
    while not (got := await check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
    return got
