"""The SDK's adapters through a live ``gateway serve`` (both forwarders) in front of the
recording upstream: what the upstream receives is what the client meant to send."""

from __future__ import annotations

import asyncio
import hashlib
import json
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest

from gateway.client import Credentials

from .gateway_fixtures import GatewayProcess
from .test_client_e2e import call
from .test_client_two_keys import make_auth


@pytest.mark.parametrize("scheme", ["sigv4", "rfc9421"])
@pytest.mark.parametrize("adapter", ["requests", "httpx", "httpx-async", "aiohttp"])
def test_sdk_through_the_live_gateway(gateway: GatewayProcess, adapter: str,
                                      scheme: str) -> None:
    key = asyncio.run(gateway.create_key())
    auth = make_auth(adapter, Credentials(key.record.key_id, key.secret.reveal()), scheme)
    base = f"{gateway.url}/api/sdk-{adapter}-{scheme}"

    status, echo = call(adapter, auth, "GET", base + "/ünï cödé/ß",
                        params=[("tag", "a"), ("tag", "b"), ("q", "x y+z")])
    assert status == 200, echo
    target = urlsplit(echo["target"])
    assert unquote(target.path) == f"/api/sdk-{adapter}-{scheme}/ünï cödé/ß"
    assert parse_qsl(target.query) == [("tag", "a"), ("tag", "b"), ("q", "x y+z")]
    assert ["X-Gateway-Key-Id", key.record.key_id] in echo["headers"]

    document = {"name": "widget", "n": 3}
    status, echo = call(adapter, auth, "POST", base + "/json", json=document)
    assert status == 200, echo
    assert echo["body_sha256"] in {hashlib.sha256(json.dumps(document, separators=s).encode())
                                   .hexdigest() for s in ((",", ":"), (", ", ": "))}

    status, echo = call(adapter, auth, "POST", base + "/form", data={"a": "1", "b": "x y"})
    assert status == 200 and echo["body_bytes"] > 0, echo

    status, echo = call(adapter, auth, "POST", base + "/upload",
                        files={"file": ("report.csv", b"a,b\n1,2\n")})
    assert status == 200 and echo["body_bytes"] > len(b"a,b\n1,2\n"), echo
