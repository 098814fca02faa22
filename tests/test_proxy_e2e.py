"""End to end: real clients → ``gateway serve`` (a real process) → a recording upstream.

Positive paths are signed by clients we did not write (curl, botocore,
http-message-signatures); the upstream's own log proves what arrived.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import secrets
import shutil
import time
from typing import Any

import aiohttp
import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from http_message_signatures import HTTPMessageSigner, MappingKeyResolver
from http_message_signatures.algorithms import HMAC_SHA256
from http_message_signatures.structures import CaseInsensitiveDict
from multidict import CIMultiDict
from yarl import URL

from gateway.keys.lifecycle import Issued
from gateway.signing.signer import sign_rfc9421, sign_sigv4

from .gateway_fixtures import GatewayProcess, days_ago


AUTH_HEADERS = {"authorization", "x-amz-date", "x-amz-content-sha256", "signature",
                "signature-input"}


async def send(gw: GatewayProcess, method: str, target: str, headers: list[tuple[str, str]],
               body: bytes = b"") -> tuple[int, dict[str, Any], CIMultiDict[str]]:
    """Send exactly this target and these headers; the JSON answer and response headers."""
    async with aiohttp.ClientSession(skip_auto_headers=("User-Agent", "Accept-Encoding",
                                                        "Accept", "Content-Type")) as s:
        async with s.request(method, URL(gw.url + target, encoded=True), headers=headers,
                             data=body or None) as r:
            text = await r.read()
            return r.status, (json.loads(text) if text else {}), CIMultiDict(r.headers)


def ours(gw: GatewayProcess, key: Issued, method: str, target: str, body: bytes = b"",
         headers: tuple[tuple[str, str], ...] = (), now: float | None = None
         ) -> list[tuple[str, str]]:
    # a signed nonce, as the SDK sends: identical requests in one second are not replays
    headers = (*headers, ("X-Gateway-Nonce", secrets.token_hex(8)))
    added = sign_sigv4(method, target, gw.host, list(headers), body,
                       key_id=key.record.key_id, secret=key.secret.hmac_key(),
                       now=time.time() if now is None else now)
    return [("Host", gw.host), *headers, *added]


def botocore_signed(gw: GatewayProcess, key: Issued, method: str, target: str,
                    body: bytes = b"", headers: dict[str, str] | None = None) -> AWSRequest:
    aws = AWSRequest(method=method, url=gw.url + target, headers=headers or {}, data=body)
    SigV4Auth(Credentials(key.record.key_id, key.secret.reveal()), "gateway",
              "local").add_auth(aws)
    return aws


def upstream_saw(gw: GatewayProcess, target: str) -> dict[str, Any]:
    seen = [r for r in gw.upstream.records() if r["target"] == target]
    assert seen, f"the upstream never received {target}"
    return seen[-1]


def header(record: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in record["headers"] if k.lower() == name]


def assert_clean(record: dict[str, Any], key: Issued) -> None:
    names = {k.lower() for k, _ in record["headers"]}
    assert not names & AUTH_HEADERS, names & AUTH_HEADERS
    assert header(record, "x-gateway-key-id") == [key.record.key_id]
    assert header(record, "x-gateway-principal") == [key.record.principal]
    assert header(record, "x-forwarded-for") == ["127.0.0.1"]


@pytest.fixture(scope="module")
def key(gateway: GatewayProcess) -> Issued:
    return asyncio.run(gateway.create_key(principal="svc-orders"))


# -- real clients --------------------------------------------------------------------------

async def curl(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        shutil.which("curl") or "curl", "-sS", "-o", "-", "-w", "\n%{http_code}", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    text, _, status = out.decode().rpartition("\n")
    return int(status), text


async def test_curl_get_and_post_reach_the_upstream(gateway: GatewayProcess, key: Issued) -> None:
    creds = ["--aws-sigv4", "aws:amz:local:gateway", "--user",
             f"{key.record.key_id}:{key.secret.reveal()}"]
    status, text = await curl(*creds, f"{gateway.url}/api/curl/items?a=1&b=2")
    assert status == 200, text
    assert_clean(upstream_saw(gateway, "/api/curl/items?a=1&b=2"), key)
    body = '{"name": "widget"}'
    status, text = await curl(*creds, "-H", "Content-Type: application/json", "-d", body,
                              f"{gateway.url}/api/curl/items")
    assert status == 200, text
    seen = upstream_saw(gateway, "/api/curl/items")
    assert seen["method"] == "POST"
    assert seen["body_sha256"] == hashlib.sha256(body.encode()).hexdigest()
    assert_clean(seen, key)


async def test_botocore_request_reaches_upstream_exactly(gateway: GatewayProcess,
                                                         key: Issued) -> None:
    target = "/api/bc/%E2%82%AC%20items/x-1?tag=a&tag=b&q=caf%C3%A9"
    body = json.dumps({"n": 1}).encode()
    aws = botocore_signed(gateway, key, "POST", target, body,
                          {"Content-Type": "application/json"})
    status, answer, _ = await send(gateway, "POST", target, list(aws.headers.items()), body)
    assert status == 200, answer
    seen = upstream_saw(gateway, target)
    assert seen["target"] == target and seen["body_bytes"] == len(body)
    assert_clean(seen, key)


async def test_botocore_presigned_url(gateway: GatewayProcess, key: Issued) -> None:
    aws = AWSRequest(method="GET", url=f"{gateway.url}/api/presigned/report?format=csv")
    SigV4QueryAuth(Credentials(key.record.key_id, key.secret.reveal()), "gateway", "local",
                   expires=300).add_auth(aws)
    target = aws.url[len(gateway.url):]
    status, answer, _ = await send(gateway, "GET", target, [])
    assert status == 200, answer
    # the six auth parameters never reach the upstream; the rest of the query does
    seen = upstream_saw(gateway, "/api/presigned/report?format=csv")
    assert_clean(seen, key)


async def test_http_message_signatures_request(gateway: GatewayProcess, key: Issued) -> None:
    class Message:
        method = "PUT"
        url = f"{gateway.url}/api/hms/doc?v=2"
        headers = CaseInsensitiveDict([("Content-Type", "text/plain")])

    msg = Message()
    body = b"hello from an RFC 9421 library"
    secret = key.secret.hmac_key()
    HTTPMessageSigner(signature_algorithm=HMAC_SHA256, key_resolver=MappingKeyResolver(
        public_keys={}, private_keys={key.record.key_id: secret})).sign(
        msg, key_id=key.record.key_id, created=dt.datetime.now(dt.timezone.utc),
        covered_component_ids=["@method", "@authority", "@path", "@query", "content-type"],
        body=body)
    status, answer, _ = await send(gateway, "PUT", "/api/hms/doc?v=2",
                                   list(msg.headers.items()), body)
    assert status == 200, answer
    seen = upstream_saw(gateway, "/api/hms/doc?v=2")
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert_clean(seen, key)


async def test_forged_identity_and_forwarding_headers_are_replaced(gateway: GatewayProcess,
                                                                   key: Issued) -> None:
    forged = (("X-Gateway-Key-Id", "gwk_someone_else"), ("X-Gateway-Principal", "root"),
              ("X-Forwarded-For", "10.0.0.1"), ("Forwarded", "for=10.0.0.1"))
    status, answer, headers = await send(gateway, "GET", "/api/forged", ours(
        gateway, key, "GET", "/api/forged", headers=forged))
    assert status == 200, answer
    seen = upstream_saw(gateway, "/api/forged")
    assert_clean(seen, key)
    assert not header(seen, "forwarded")
    assert headers["X-Request-Id"] and header(seen, "x-request-id") == [headers["X-Request-Id"]]
    # hop-by-hop headers of the upstream's answer (named in its Connection) stay behind
    assert "X-Upstream-Hop" not in headers and headers.get("X-Upstream") == "yes"


async def test_rfc9421_with_our_signer_and_strip_prefix(gateway: GatewayProcess,
                                                        key: Issued) -> None:
    added = sign_rfc9421("POST", "/strip/v1/echo", gateway.host, [], b"{}",
                         key_id=key.record.key_id, secret=key.secret.hmac_key(),
                         now=time.time())
    status, answer, _ = await send(gateway, "POST", "/strip/v1/echo",
                                   [("Host", gateway.host), *added], b"{}")
    assert status == 200, answer
    assert answer["target"] == "/v1/echo"


async def test_whoami(gateway: GatewayProcess, key: Issued) -> None:
    status, answer, _ = await send(gateway, "GET", "/_gateway/whoami",
                                   ours(gateway, key, "GET", "/_gateway/whoami"))
    assert status == 200, answer
    assert answer["key_id"] == key.record.key_id and answer["principal"] == "svc-orders"
    assert answer["scopes"] == ["api:*"] and answer["expires_at"]
    assert "secret" not in answer and answer["may_self_rotate"] is False


# -- refusals ------------------------------------------------------------------------------

def untouched(gw: GatewayProcess, target: str) -> None:
    assert not [r for r in gw.upstream.records() if r["target"] == target], \
        f"a refused request reached the upstream: {target}"


async def refused(gw: GatewayProcess, method: str, target: str, headers: list[tuple[str, str]],
                  body: bytes = b"") -> tuple[int, str]:
    status, answer, _ = await send(gw, method, target, headers, body)
    assert set(answer) == {"error", "message"}, answer
    untouched(gw, target)
    return status, answer["error"]


async def test_wrong_secret_unknown_and_malformed_key_look_the_same(gateway: GatewayProcess,
                                                                    key: Issued) -> None:
    target = "/api/neg/wrong"
    bad = sign_sigv4("GET", target, gateway.host, [], b"", key_id=key.record.key_id,
                     secret=b"gws_not_the_secret", now=time.time())
    assert await refused(gateway, "GET", target, [("Host", gateway.host), *bad]) == (
        401, "signature_invalid")
    for key_id in ("gwk_0000000000000000000000000000", "not-a-key-id"):
        forged = sign_sigv4("GET", target, gateway.host, [], b"", key_id=key_id,
                            secret=key.secret.hmac_key(), now=time.time())
        assert await refused(gateway, "GET", target, [("Host", gateway.host), *forged]) == (
            401, "signature_invalid")


@pytest.mark.parametrize("part", ["body", "path", "query", "header"])
async def test_tampering_is_refused(gateway: GatewayProcess, key: Issued, part: str) -> None:
    target, body = f"/api/neg/tamper-{part}?x=1", b'{"amount": 10}'
    headers = ours(gateway, key, "POST", target, body, (("Content-Type", "application/json"),))
    if part == "body":
        body = b'{"amount": 99}'
    elif part == "path":
        target = f"/api/neg/tamper-{part}x?x=1"
    elif part == "query":
        target = f"/api/neg/tamper-{part}?x=2"
    else:
        headers = [(n, "text/plain" if n == "Content-Type" else v) for n, v in headers]
    assert await refused(gateway, "POST", target, headers, body) == (401, "signature_invalid")


async def test_replay_is_refused(gateway: GatewayProcess, key: Issued) -> None:
    headers = ours(gateway, key, "GET", "/api/neg/replay")
    status, _, _ = await send(gateway, "GET", "/api/neg/replay", headers)
    assert status == 200
    status, answer, _ = await send(gateway, "GET", "/api/neg/replay", headers)
    assert (status, answer["error"]) == (401, "replayed")
    assert len([r for r in gateway.upstream.records() if r["target"] == "/api/neg/replay"]) == 1


async def test_clock_skew_is_refused(gateway: GatewayProcess, key: Issued) -> None:
    headers = ours(gateway, key, "GET", "/api/neg/skew", now=time.time() - 600)
    assert await refused(gateway, "GET", "/api/neg/skew", headers) == (401, "request_expired")


async def test_revoked_key_stops_within_a_poll(gateway: GatewayProcess) -> None:
    victim = await gateway.create_key()
    status, _, _ = await send(gateway, "GET", "/api/neg/revoke-before",
                              ours(gateway, victim, "GET", "/api/neg/revoke-before"))
    assert status == 200  # now cached in the gateway
    done = gateway.cli("keys", "revoke", victim.record.key_id, "--reason", "test")
    assert done.returncode == 0, done.stderr
    for _ in range(50):  # change_poll is 100 ms here
        status, answer, _ = await send(gateway, "GET", "/api/neg/revoke-after", ours(
            gateway, victim, "GET", "/api/neg/revoke-after"))
        if status != 200:
            break
        await asyncio.sleep(0.05)
    assert (status, answer["error"]) == (401, "key_revoked")


async def test_expired_and_inactive_keys(gateway: GatewayProcess) -> None:
    expired = await gateway.create_key(now=days_ago(3), expiry=86400.0)
    assert await refused(gateway, "GET", "/api/neg/expired", ours(
        gateway, expired, "GET", "/api/neg/expired")) == (401, "key_expired")
    idle = await gateway.create_key(now=days_ago(31), expiry=60 * 86400.0)  # inactivity 30d
    assert await refused(gateway, "GET", "/api/neg/idle", ours(
        gateway, idle, "GET", "/api/neg/idle")) == (401, "key_inactive")


async def test_scope_route_and_auth_presence(gateway: GatewayProcess) -> None:
    reader = await gateway.create_key(scopes=("api:read",))
    assert await refused(gateway, "POST", "/api/neg/scope", ours(
        gateway, reader, "POST", "/api/neg/scope", b"{}"), b"{}") == (403, "scope_denied")
    assert await refused(gateway, "GET", "/nowhere", []) == (404, "route_not_found")
    assert await refused(gateway, "GET", "/api/neg/anon", []) == (401, "missing_auth")
    assert await refused(gateway, "GET", "/api/../open/x", []) == (400, "path_not_normalized")


async def test_oversized_body_is_refused_before_it_is_read(gateway: GatewayProcess,
                                                           key: Issued) -> None:
    # declare 8 MiB on a 1 MiB route, send only the head: the 413 must come anyway
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    head = "\r\n".join(["POST /api/neg/big HTTP/1.1", f"Host: {gateway.host}",
                        "Content-Length: 8388608", "Content-Type: application/octet-stream",
                        *[f"{n}: {v}" for n, v in ours(gateway, key, "POST", "/api/neg/big")
                          if n != "Host"], "", ""])
    writer.write(head.encode())
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    assert b" 413 " in status_line
    rest = await asyncio.wait_for(reader.read(4096), 5)
    assert b'"body_too_large"' in rest
    writer.close()
    untouched(gateway, "/api/neg/big")


async def test_upstream_down_and_slow(gateway: GatewayProcess, key: Issued) -> None:
    status, answer, _ = await send(gateway, "GET", "/dead/x", ours(gateway, key, "GET", "/dead/x"))
    assert (status, answer["error"]) == (502, "upstream_unreachable")
    status, answer, _ = await send(gateway, "GET", "/slow/slow/3",
                                   ours(gateway, key, "GET", "/slow/slow/3"))
    assert (status, answer["error"]) == (504, "upstream_timeout")


@pytest.mark.parametrize(("raw", "status", "code"), [
    (b"GET /api/x HTTP/1.1\r\nHost: a\r\nBad\x01Header: x\r\n\r\n", 400, "malformed_request"),
    (b"GET /api/x HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n", 431,
     "headers_too_large"),
    (b"GET /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400,
     "malformed_request"),
    (b"GET http://evil/api/x HTTP/1.1\r\nHost: a\r\n\r\n", 400, "malformed_request"),
])
async def test_framing_errors_are_json(gateway: GatewayProcess, raw: bytes, status: int,
                                       code: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(raw)
    await writer.drain()
    response = await asyncio.wait_for(reader.read(65536), 5)
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == str(status).encode(), response[:200]
    assert json.loads(body)["error"] == code


async def test_streamed_200_mb_response_keeps_memory_flat(gateway: GatewayProcess,
                                                          key: Issued) -> None:
    size = 200 * 1024 * 1024
    before = gateway.rss_peak_kib()
    headers = ours(gateway, key, "GET", f"/api/big/{size}")
    received = 0
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        async with s.get(URL(f"{gateway.url}/api/big/{size}", encoded=True),
                         headers=headers) as r:
            assert r.status == 200
            async for chunk in r.content.iter_chunked(1 << 20):
                received += len(chunk)
    growth_mib = (gateway.rss_peak_kib() - before) / 1024
    print(f"200 MiB streamed; gateway peak RSS grew {growth_mib:.1f} MiB")
    assert received == size
    assert growth_mib < 32
