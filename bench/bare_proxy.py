"""Baseline (b): the plain, idiomatic aiohttp reverse proxy (DESIGN §9) — the floor of
our stack. ``web.Application`` with one catch-all route, one pooled ``ClientSession``,
``await request.read()``, and a ``web.Response`` with the upstream's status, body and
end-to-end headers. Nothing tuned, nothing slowed; no auth.

    python -m bench.bare_proxy PORT UPSTREAM_URL
"""

from __future__ import annotations

import sys

import aiohttp
import uvloop
from aiohttp import web

# RFC 9110 §7.6.1 hop-by-hop fields, plus the framing aiohttp recomputes itself
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "te", "trailer", "transfer-encoding", "upgrade", "host",
                        "content-length"})
SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)


async def proxy(request: web.Request) -> web.Response:
    body = await request.read()
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
    async with request.app[SESSION].request(
            request.method, request.app[UPSTREAM] + request.path_qs, headers=headers,
            data=body or None, allow_redirects=False) as answer:
        payload = await answer.read()
        return web.Response(status=answer.status, body=payload, headers={
            k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP})


async def _session(app: web.Application):  # type: ignore[no-untyped-def]
    app[SESSION] = aiohttp.ClientSession(
        auto_decompress=False, skip_auto_headers=("User-Agent", "Accept-Encoding"))
    yield
    await app[SESSION].close()


def make_app(upstream: str) -> web.Application:
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")
    app.cleanup_ctx.append(_session)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


def main() -> None:
    port, upstream = int(sys.argv[1]), sys.argv[2]
    web.run_app(make_app(upstream), host="127.0.0.1", port=port, print=None,
                loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
