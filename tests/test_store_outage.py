"""The store goes away (a fault proxy of the test's own cuts the way to the shared
PostgreSQL): cached keys keep working, unknown keys fail closed with 503, readiness
says degraded, and everything recovers when the store is back."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from .faultproxy import FaultProxy
from .gateway_fixtures import start_gateway, start_upstream, stop
from .test_proxy_e2e import ours, send


async def readiness(admin_url: str) -> tuple[int, dict[str, str]]:
    async with aiohttp.ClientSession() as s:
        async with s.get(admin_url + "/readyz") as r:
            return r.status, await r.json()


async def test_store_outage(tmp_path: Path, postgres_url: str) -> None:
    parts = urlsplit(postgres_url)
    proxy = FaultProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    via_proxy = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
    up = start_upstream(tmp_path)
    gw = start_gateway(tmp_path, up, store_url=via_proxy)
    try:
        cached, uncached = await gw.create_key(), await gw.create_key()
        await asyncio.sleep(0.3)  # the change poll has seen both creations
        status, _, _ = await send(gw, "GET", "/api/s/warm", ours(gw, cached, "GET", "/api/s/warm"))
        assert status == 200
        proxy.sever()
        await asyncio.sleep(0.3)  # a change poll (100 ms) notices
        status, _, _ = await send(gw, "GET", "/api/s/cached", ours(gw, cached, "GET", "/api/s/cached"))
        assert status == 200  # served from the cache while the store is down
        status, answer, _ = await send(gw, "GET", "/api/s/new", ours(gw, uncached, "GET", "/api/s/new"))
        assert (status, answer["error"]) == (503, "store_unavailable")  # fails closed
        assert await readiness(gw.admin_url) == (200, {"status": "degraded",
                                                       "store": "unreachable"})
        proxy.restore()
        for _ in range(50):
            status, _, _ = await send(gw, "GET", "/api/s/back", ours(gw, uncached, "GET",
                                                                       "/api/s/back"))
            if status == 200:
                break
            await asyncio.sleep(0.1)
        assert status == 200
        for _ in range(100):  # the next successful change poll restores readiness
            if (await readiness(gw.admin_url))[1] == {"status": "ok"}:
                break
            await asyncio.sleep(0.1)
        assert (await readiness(gw.admin_url)) == (200, {"status": "ok"})
    finally:
        stop(gw.proc)
        stop(up.proc)
        proxy.close()
