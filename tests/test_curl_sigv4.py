"""Live: real requests sent by ``curl --aws-sigv4`` reach a tiny aiohttp server in the
test and go through the verifier exactly as received (raw target, raw headers, body)."""

from __future__ import annotations

import asyncio
import json
import shutil
import time

import pytest
from aiohttp import web

from gateway.errors import SignatureError
from gateway.signing import Body, Policy, Request, parse

KEY_ID = "gwk_7fXyQ2bLpR9sT4vW1zA3cD5eFg0H1j"
SECRET = "gws_Zq8Rk1LmN3pQ5sT7vX9yB2dF4hJ6kM8nP0rS2uW4xY6zA8cE0gI2"
CURL = shutil.which("curl")


async def verifying_handler(request: web.Request) -> web.Response:
    body = await request.read()
    received = Request(
        request.method, request.raw_path,
        tuple((n.decode("latin-1"), v.decode("utf-8", "surrogateescape"))
              for n, v in request.raw_headers))
    try:
        facts = parse(received, Policy(), time.time()).verify(SECRET.encode(), Body(body))
    except SignatureError as exc:
        return web.json_response(exc.body(), status=exc.status)
    return web.json_response({"key_id": facts.key_id, "bytes": len(body),
                              "components": list(facts.components)})


@pytest.fixture
async def server(aiohttp_server):  # type: ignore[no-untyped-def]
    if CURL is None:
        pytest.fail("curl is not installed: run 'apt-get install -y curl' (.ci/run does this)")
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", verifying_handler)
    return await aiohttp_server(app)


async def curl(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        CURL, "-sS", "-o", "-", "-w", "\n%{http_code}", "--aws-sigv4", "aws:amz:local:gateway",
        "--user", f"{KEY_ID}:{SECRET}", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    text, _, status = out.decode().rpartition("\n")
    return int(status), text


async def test_curl_get_verifies(server) -> None:  # type: ignore[no-untyped-def]
    status, text = await curl(str(server.make_url("/api/items?a=1&b=two")))
    assert status == 200, text
    assert KEY_ID in text


async def test_curl_post_with_body_verifies(server) -> None:  # type: ignore[no-untyped-def]
    status, text = await curl("-H", "Content-Type: application/json",
                              "-d", '{"name": "widget", "count": 3}',
                              str(server.make_url("/api/items")))
    assert status == 200, text
    facts = json.loads(text)
    assert facts["bytes"] == 30
    assert {"content-type", "@body"} <= set(facts["components"])


async def test_curl_form_body_verifies(server) -> None:  # type: ignore[no-untyped-def]
    # curl adds its own Content-Type for -d and leaves it unsigned; the body is still hashed
    status, text = await curl("-d", "a=1&b=2", str(server.make_url("/api/form")))
    assert status == 200, text
    assert "content-type" not in json.loads(text)["components"]


async def test_curl_with_wrong_secret_is_refused(server) -> None:  # type: ignore[no-untyped-def]
    proc = await asyncio.create_subprocess_exec(
        CURL, "-sS", "--aws-sigv4", "aws:amz:local:gateway", "--user", f"{KEY_ID}:wrong",
        str(server.make_url("/api/items")), stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert json.loads(out)["error"] == "signature_invalid"
