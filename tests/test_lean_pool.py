"""The lean forwarder's per-upstream limit on exchanges at once: never exceeded,
first come first served, and a waiter that gives up (a client that went away) takes
no slot with it. Its timeouts: each exchange ends at its own route's deadline, whatever
else is in flight to the same upstream."""

from __future__ import annotations

import asyncio

from gateway.config import AuthConfig, RouteConfig
from gateway.errors import GatewayError
from gateway.proxy.forward import UpstreamRequest
from gateway.proxy.lean import LeanForwarder, _Pool
from gateway.proxy.routes import build_route


def pool(limit: int) -> _Pool:
    route = build_route(RouteConfig(prefix="/api/", upstream="http://127.0.0.1:9"),
                        AuthConfig())
    return _Pool(route, max_idle=4, idle_timeout=30.0, limit=limit)


async def test_the_limit_holds_and_waiters_are_served_in_order() -> None:
    p, loop = pool(2), asyncio.get_running_loop()
    active, peak, order = 0, 0, []

    async def exchange(i: int) -> None:
        nonlocal active, peak
        await p.acquire(loop)
        try:
            active += 1
            peak = max(peak, active)
            order.append(i)
            await asyncio.sleep(0.01)
        finally:
            active -= 1
            p.release()

    await asyncio.gather(*(exchange(i) for i in range(7)))
    assert peak == 2 and order == list(range(7))


async def test_a_cancelled_waiter_leaves_no_slot_taken() -> None:
    p, loop = pool(1), asyncio.get_running_loop()
    await p.acquire(loop)  # the only slot
    waiter = asyncio.ensure_future(p.acquire(loop))
    await asyncio.sleep(0)
    waiter.cancel()  # gives up while queued
    await asyncio.gather(waiter, return_exceptions=True)
    handed = asyncio.ensure_future(p.acquire(loop))
    await asyncio.sleep(0)
    p.release()  # handed to the next waiter...
    handed.cancel()  # ...which is cancelled in the same tick, after the hand-over
    await asyncio.gather(handed, return_exceptions=True)
    await p.acquire(loop)  # the slot again
    skipped = asyncio.ensure_future(p.acquire(loop))
    await asyncio.sleep(0)
    skipped.cancel()  # cancelled, and in the same tick release() passes over it
    p.release()
    (outcome,) = await asyncio.gather(skipped, return_exceptions=True)
    assert isinstance(outcome, asyncio.CancelledError)  # cancelled, not some other error
    # every slot is free again: a new exchange gets one at once
    await asyncio.wait_for(p.acquire(loop), 1)
    p.release()
    assert p._busy == 0 and not p._queue


async def test_each_exchange_ends_at_its_own_routes_deadline() -> None:
    # an upstream that answers /fast at once and never answers anything else
    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        while line := await reader.readline():
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
            if b" /fast " in line:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    upstream = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    patient, hasty = (build_route(RouteConfig(prefix=f"/{name}/", upstream=upstream,
                                              timeout=timeout), AuthConfig())
                      for name, timeout in (("patient", 3.0), ("hasty", 0.3)))
    forwarder = LeanForwarder()
    ended: list[str] = []

    async def exchange(route, path: str) -> str:  # type: ignore[no-untyped-def]
        try:
            response = await forwarder.forward(
                None, route, UpstreamRequest("GET", path, [], b""), [])  # type: ignore[arg-type]
            outcome = str(response.status)
        except GatewayError as exc:
            outcome = exc.code
        ended.append(path)
        return outcome

    try:
        # the long deadline is watched first; the short one, later, must not wait for it
        slow = asyncio.ensure_future(exchange(patient, "/patient"))
        await asyncio.sleep(0.05)
        assert await exchange(hasty, "/hasty") == "upstream_timeout"
        assert not slow.done()
        # a quick exchange meanwhile is not cut by anyone's deadline
        assert await exchange(hasty, "/fast") == "200"
        assert await slow == "upstream_timeout"
        assert ended == ["/hasty", "/fast", "/patient"]
    finally:
        await forwarder.close()
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()
