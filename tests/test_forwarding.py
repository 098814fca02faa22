"""Forwarding conformance, against a real upstream process, for both forwarders
(the ``gateway`` fixture runs each test once per forwarder): the framing cases a
stock client and router handle for free and a raw upstream pool must get right."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
from yarl import URL

from gateway.keys.lifecycle import Issued
from gateway.signing.signer import sign_sigv4

from .gateway_fixtures import GatewayProcess
from .test_proxy_e2e import ours, send


async def signed_key(gw: GatewayProcess) -> Issued:
    return await gw.create_key(scopes=("api:*",))


async def fetch(gw: GatewayProcess, key: Issued, method: str, target: str,
                body: bytes = b"", headers: tuple[tuple[str, str], ...] = ()
                ) -> tuple[int, bytes, aiohttp.ClientResponse]:
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        async with s.request(method, URL(gw.url + target, encoded=True),
                             headers=ours(gw, key, method, target, body, headers),
                             data=body or None) as r:
            return r.status, await r.read(), r


async def test_chunked_response_and_chunked_request_body(gateway: GatewayProcess) -> None:
    key = await signed_key(gateway)
    status, body, r = await fetch(gateway, key, "GET", "/api/c/chunked/300")
    assert status == 200 and body == b"x" * 300_000
    # a chunked request body is read whole, verified, and sent on with a length
    payload = b"0123456789" * 5000
    target = "/api/c/upload"

    async def chunks():  # type: ignore[no-untyped-def]
        for i in range(0, len(payload), 4096):
            yield payload[i:i + 4096]

    async with aiohttp.ClientSession() as s:
        async with s.post(URL(gateway.url + target, encoded=True),
                          headers=ours(gateway, key, "POST", target, payload),
                          data=chunks()) as r:
            echo = await r.json()
    assert r.status == 200 and echo["body_bytes"] == len(payload)
    assert ["Content-Length", str(len(payload))] in echo["headers"]


async def test_head_204_304_and_early_hints(gateway: GatewayProcess) -> None:
    key = await signed_key(gateway)
    status, body, r = await fetch(gateway, key, "HEAD", "/api/c/big/5000")
    assert (status, body, r.headers["Content-Length"]) == (200, b"", "5000")
    for code in (204, 304):
        status, body, r = await fetch(gateway, key, "GET", f"/api/c/status/{code}")
        assert (status, body, r.headers.get("ETag")) == (code, b"", '"v1"')
    status, body, _ = await fetch(gateway, key, "GET", "/api/c/hints/1")
    assert status == 200 and json.loads(body)["target"] == "/api/c/hints/1"
    # and the connections are still good for the next request
    status, _, _ = await fetch(gateway, key, "GET", "/api/c/after")
    assert status == 200


async def test_repeated_and_large_response_headers(gateway: GatewayProcess) -> None:
    key = await signed_key(gateway)
    _, _, r = await fetch(gateway, key, "GET", "/api/c/cookies/3")
    assert r.headers.getall("Set-Cookie") == ["c0=v0; Path=/", "c1=v1; Path=/", "c2=v2; Path=/"]
    _, _, r = await fetch(gateway, key, "GET", "/api/c/bigheader/7000")
    assert r.headers["X-Big"] == "b" * 7000


async def test_upstream_closing_mid_response(gateway: GatewayProcess) -> None:
    key = await signed_key(gateway)
    async with aiohttp.ClientSession() as s:
        target = "/api/c/abort/200000"
        async with s.get(URL(gateway.url + target, encoded=True),
                         headers=ours(gateway, key, "GET", target)) as r:
            assert r.status == 200
            try:
                await r.read()
                raise AssertionError("a truncated body was passed off as complete")
            except aiohttp.ClientPayloadError:
                pass  # the client sees the cut, not a wrong answer
    # the broken upstream connection is not handed to the next request
    status, body, _ = await fetch(gateway, key, "GET", "/api/c/after-abort")
    assert status == 200 and json.loads(body)["target"] == "/api/c/after-abort"


async def test_slow_client_gets_backpressure_not_buffering(gateway: GatewayProcess) -> None:
    key = await signed_key(gateway)
    size = 100 * 1024 * 1024
    before = gateway.rss_peak_kib()
    received = 0
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        async with s.get(URL(f"{gateway.url}/api/c/big/{size}", encoded=True),
                         headers=ours(gateway, key, "GET", f"/api/c/big/{size}")) as r:
            async for chunk in r.content.iter_chunked(256 * 1024):
                received += len(chunk)
                await asyncio.sleep(0.004)  # ~60 MB/s: far slower than the upstream
    growth_mib = (gateway.rss_peak_kib() - before) / 1024
    print(f"100 MiB to a slow reader; gateway peak RSS grew {growth_mib:.1f} MiB")
    assert received == size and growth_mib < 32


async def test_pipelined_client_requests(gateway: GatewayProcess) -> None:
    key = await signed_key(gateway)
    raw = b""
    for target in ("/api/c/pipe-1", "/api/c/pipe-2"):
        lines = [f"GET {target} HTTP/1.1"] + [f"{n}: {v}" for n, v in
                                              ours(gateway, key, "GET", target)]
        raw += ("\r\n".join(lines) + "\r\n\r\n").encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(raw)  # both at once, before any answer
    await writer.drain()
    answers = []
    for _ in range(2):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")))
        answers.append(json.loads(await reader.readexactly(length))["target"])
    writer.close()
    assert answers == ["/api/c/pipe-1", "/api/c/pipe-2"]


async def test_upstream_connections_are_reused(gateway: GatewayProcess) -> None:
    key = await signed_key(gateway)
    ports = set()
    for i in range(10):  # one after the other: one pooled connection serves them all
        _, body, _ = await fetch(gateway, key, "GET", f"/api/c/seq-{i}")
        ports.add(json.loads(body)["peer_port"])
    assert len(ports) == 1

    async def one(i: int) -> int:
        target = f"/api/c/conc-{i}"
        status, answer, _ = await send(gateway, "GET", target, sign_sigv4(
            "GET", target, gateway.host, [], b"", key_id=key.record.key_id,
            secret=key.secret.hmac_key(), now=time.time()) + [("Host", gateway.host)])
        assert status == 200 and answer["target"] == target  # nobody gets another's answer
        return int(answer["peer_port"])

    concurrent = await asyncio.gather(*(one(i) for i in range(40)))
    again = await asyncio.gather(*(one(100 + i) for i in range(40)))
    # the second wave rides (mostly) on connections the first one opened
    assert len(set(again) - set(concurrent)) < 40


async def test_an_upstream_that_answers_twice_is_not_believed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Two responses in one read for one request: the second must not be merged into
    the first, nor left on a pooled connection for the next client (lean forwarder)."""
    from .conftest import free_port
    from .gateway_fixtures import Upstream, start_gateway, stop

    async def twice(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
                     b"HTTP/1.1 404 Nope\r\nContent-Length: 5\r\nX-Evil: 1\r\n\r\nevil!")
        await writer.drain()
        writer.close()

    port = free_port()
    server = await asyncio.start_server(twice, "127.0.0.1", port)
    fake = Upstream(port, tmp_path / "none.jsonl", None)  # type: ignore[arg-type]
    gw = await asyncio.to_thread(start_gateway, tmp_path, fake)
    try:
        key = await gw.create_key()
        status, body, r = await fetch(gw, key, "GET", "/api/twice")
        assert status == 502 and json.loads(body)["error"] == "upstream_unreachable"
        assert "X-Evil" not in r.headers
    finally:
        stop(gw.proc)
        server.close()
        await server.wait_closed()


async def test_http10_clients_and_an_upstream_that_sends_no_date(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The buffered answer writes its own head: an HTTP/1.0 client gets its connection
    closed unless it asked for keep-alive, and a response the origin left undated gets
    a Date (RFC 9110 §6.6.1), for both forwarders."""
    from .conftest import free_port
    from .gateway_fixtures import Upstream, start_gateway, stop

    upstream_writers: list[asyncio.StreamWriter] = []

    async def undated(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_writers.append(writer)
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Up: 1\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def exchange(gw: GatewayProcess, key: Issued, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter, target: str, *extra: str) -> bytes:
        lines = [f"GET {target} HTTP/1.0", *extra,
                 *(f"{n}: {v}" for n, v in ours(gw, key, "GET", target))]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert await reader.readexactly(2) == b"ok"
        return head.lower()

    port = free_port()
    server = await asyncio.start_server(undated, "127.0.0.1", port)
    fake = Upstream(port, tmp_path / "none.jsonl", None)  # type: ignore[arg-type]
    for forwarder in ("lean", "aiohttp"):
        (tmp_path / forwarder).mkdir()
        gw = await asyncio.to_thread(start_gateway, tmp_path / forwarder, fake,
                                     server=f'forwarder = "{forwarder}"')
        try:
            key = await gw.create_key()
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            head = await exchange(gw, key, reader, writer, "/api/ten-keep",
                                  "Connection: keep-alive")
            assert head.startswith(b"http/1.0 200") or head.startswith(b"http/1.1 200")
            assert b"\r\ndate: " in head and b"\r\nx-up: 1\r\n" in head
            assert b"\r\nconnection: keep-alive\r\n" in head
            head = await exchange(gw, key, reader, writer, "/api/ten-again")  # same socket
            assert b"\r\ndate: " in head
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed after 1.0
            writer.close()
        finally:
            stop(gw.proc)
    server.close()
    for w in upstream_writers:  # closed here, not garbage-collected after the loop ends
        w.close()
        await asyncio.gather(w.wait_closed(), return_exceptions=True)
    await server.wait_closed()
