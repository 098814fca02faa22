"""Hostile input at the front door (issue 9): request smuggling shapes, oversized and
slow requests, path confusion, another host's signature. Each gets a precise 4xx JSON
answer and has no effect upstream. Runs against both forwarders."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from gateway.signing.signer import sign_sigv4

from .gateway_fixtures import GatewayProcess
from .test_proxy_e2e import ours, refused, untouched


async def raw_exchange(gw: GatewayProcess, data: bytes, *, pause: float = 0.0,
                       more: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(data)
    await writer.drain()
    if pause:
        await asyncio.sleep(pause)
        if more:
            writer.write(more)
    response = await asyncio.wait_for(reader.read(65536), 10)
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1]) if head else 0
    return status, json.loads(body) if body.startswith(b"{") else {}, head


def signed_head(gw: GatewayProcess, key, method: str, target: str,  # type: ignore[no-untyped-def]
                extra: list[str], body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1"] + [f"{n}: {v}" for n, v in
                                              ours(gw, key, method, target, body)] + extra
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize("head", [
    # both framings: a classic smuggling shape (llhttp refuses it)
    b"POST /api/h/te-cl HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /api/h/cl-cl HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcd",
    b"GET /api/h/fold HTTP/1.1\r\nHost: a\r\nX-A: b\r\n  folded\r\n\r\n",        # obs-fold
    b"GET /api/h/cr HTTP/1.1\r\nHost: a\r\nX-A: b\rX-B: c\r\n\r\n",             # bare CR
    b"GET /api/h/nul HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n",
    b"POST /api/h/te HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
    b"POST /api/h/chunk HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /api/h/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n",           # request line
    b"GET /api/h/many HTTP/1.1\r\nHost: a\r\n" + b"".join(
        b"X-%d: %s\r\n" % (i, b"v" * 200) for i in range(200)) + b"\r\n",    # headers
])
async def test_framing_attacks_get_json_4xx(gateway: GatewayProcess, head: bytes) -> None:
    status, body, _ = await raw_exchange(gateway, head)
    assert status in (400, 431) and body["error"] in ("malformed_request", "headers_too_large")
    assert not [r for r in gateway.upstream.records() if r["target"].startswith("/api/h/")]


@pytest.mark.parametrize("target", [
    "/api/%2e%2e/ops/x", "/api/%2E%2E/ops/x", "/api/..%2Fops/x", "/api/a%2fb", "//api/x",
    "/api//x", "/api/./x", "/api/x/..", "/api/x;jsessionid=1", "/api/a%5Cb", "/api/%00x",
    "/api/caf\u00e9",
])
async def test_path_confusion_is_refused_even_when_signed(gateway: GatewayProcess,
                                                          target: str) -> None:
    key = await gateway.create_key()
    head = signed_head(gateway, key, "GET", target, [])
    status, body, _ = await raw_exchange(gateway, head)
    # a raw non-ASCII byte never gets past the HTTP parser itself (malformed_request)
    expected = "malformed_request" if not target.isascii() else "path_not_normalized"
    assert (status, body.get("error")) == (400, expected)
    untouched(gateway, target)


async def test_a_signature_for_one_host_does_not_work_for_another(gateway: GatewayProcess
                                                                  ) -> None:
    key = await gateway.create_key()
    headers = sign_sigv4("GET", "/api/h/host", "billing.internal:8080", [], b"",
                         key_id=key.record.key_id, secret=key.secret.hmac_key(), now=time.time())
    assert await refused(gateway, "GET", "/api/h/host",
                         [("Host", gateway.host), *headers]) == (401, "signature_invalid")


async def test_two_signatures_are_ambiguous(gateway: GatewayProcess) -> None:
    key = await gateway.create_key()
    headers = ours(gateway, key, "GET", "/api/h/two")
    headers.append(("Signature-Input", 'sig1=("@method");created=1;keyid="x"'))
    headers.append(("Signature", "sig1=:AAAA:"))
    assert await refused(gateway, "GET", "/api/h/two", headers) == (400, "ambiguous_auth")


async def test_slow_request_head_is_cut_off(gateway: GatewayProcess) -> None:
    started = time.monotonic()
    status, body, _ = await raw_exchange(gateway, b"GET /api/h/slow HTTP/1.1\r\nHost: a\r\n",
                                         pause=0.1, more=b"X-Slow: 1\r\n")
    assert (status, body.get("error")) == (400, "malformed_request")  # header_timeout = 1s
    assert time.monotonic() - started < 5


async def test_slow_body_is_cut_off(gateway: GatewayProcess) -> None:
    key = await gateway.create_key()
    head = signed_head(gateway, key, "POST", "/api/h/slow-body", ["Content-Length: 100"],
                       b"x" * 100)
    status, body, _ = await raw_exchange(gateway, head + b"x" * 10, pause=0.1)
    assert (status, body.get("error")) == (400, "malformed_request")  # body_timeout = 2s
    untouched(gateway, "/api/h/slow-body")


async def test_an_undecodable_request_id_is_replaced_not_a_500(gateway: GatewayProcess) -> None:
    key = await gateway.create_key()
    head = signed_head(gateway, key, "GET", "/api/h/rid", []).replace(
        b"\r\n\r\n", b"\r\nX-Request-Id: \xff\xfe\r\n\r\n")
    status, _, raw = await raw_exchange(gateway, head)
    assert status == 200
    rid = next(line for line in raw.split(b"\r\n") if line.lower().startswith(b"x-request-id:"))
    assert b"\xff" not in rid
    seen = [r for r in gateway.upstream.records() if r["target"] == "/api/h/rid"]
    assert [v for k, v in seen[-1]["headers"] if k.lower() == "x-request-id"] == [
        rid.split(b":", 1)[1].strip().decode()]  # one ID upstream: the gateway's
