"""Forwarding behind a small interface (DESIGN §7): the pipeline hands over a
verified request; a ``Forwarder`` sends it upstream and streams the answer back.

``SessionForwarder`` uses one pooled aiohttp ``ClientSession`` with every automatic
behaviour that would alter what was verified turned off (DESIGN §3.4).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import aiohttp
from aiohttp import web
from yarl import URL

from ..errors import GatewayError
from .headers import response_headers
from .routes import Route

__all__ = ["Forwarder", "SessionForwarder", "UpstreamRequest"]

CHUNK = 64 * 1024


class UpstreamRequest:
    """What goes upstream: exactly the verified method, target and body."""

    __slots__ = ("method", "target", "headers", "body")

    def __init__(self, method: str, target: str, headers: list[tuple[str, str]],
                 body: bytes) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body


class Forwarder(Protocol):
    async def forward(self, client: web.BaseRequest, route: Route, upstream: UpstreamRequest,
                      extra_headers: list[tuple[str, str]]) -> web.StreamResponse:
        """Send ``upstream`` to ``route`` and answer ``client`` (adding ``extra_headers``).
        Raises ``GatewayError`` (502/504) when nothing has been sent to the client yet."""

    async def close(self) -> None: ...


class SessionForwarder:
    def __init__(self, *, limit_per_host: int = 100) -> None:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=limit_per_host,
                                         enable_cleanup_closed=True)
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"))

    async def close(self) -> None:
        await self._session.close()

    async def forward(self, client: web.BaseRequest, route: Route, upstream: UpstreamRequest,
                      extra_headers: list[tuple[str, str]]) -> web.StreamResponse:
        timeout = aiohttp.ClientTimeout(total=route.timeout, connect=route.connect_timeout)
        url = URL(route.upstream + upstream.target, encoded=True)  # never re-encoded
        try:
            async with self._session.request(
                    upstream.method, url, headers=upstream.headers,
                    data=upstream.body if upstream.body or upstream.method not in (
                        "GET", "HEAD") else None,
                    allow_redirects=False, timeout=timeout) as answer:
                response = web.StreamResponse(status=answer.status, reason=answer.reason)
                for name, value in response_headers(
                        (k.decode("latin-1"), v.decode("latin-1"))
                        for k, v in answer.raw_headers):
                    response.headers.add(name, value)
                for name, value in extra_headers:
                    response.headers[name] = value
                if "Content-Length" not in response.headers and client.method != "HEAD":
                    response.enable_chunked_encoding()
                await response.prepare(client)
                try:
                    async for chunk in answer.content.iter_chunked(CHUNK):
                        await response.write(chunk)  # waits while the client is slow
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    # the answer has begun: all we can do is cut the connection
                    if client.transport is not None:
                        client.transport.close()
                    return response
                await response.write_eof()
                return response
        except asyncio.TimeoutError:
            raise GatewayError("upstream_timeout",
                               "the upstream did not answer in time") from None
        except aiohttp.ClientError:
            raise GatewayError("upstream_unreachable",
                               "the upstream could not be reached") from None
