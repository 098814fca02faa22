"""The SDK's RFC 9421 signer against the independent ``http-message-signatures``
library: what we sign verifies under its ``HTTPMessageVerifier`` (HMAC-SHA256),
covers what the gateway's default policy requires, and binds the nonce."""

from __future__ import annotations

import time
from urllib.parse import quote

import pytest
from http_message_signatures import HTTPMessageVerifier, InvalidSignature, MappingKeyResolver
from http_message_signatures.algorithms import HMAC_SHA256
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.client import Credentials, RFC9421Signer

from .client_server import new_key
from .test_rfc9421_interop import Message

KEY_ID, SECRET = new_key()
KEY = Credentials(KEY_ID, SECRET)
RESOLVER = MappingKeyResolver(public_keys={KEY_ID: SECRET.encode()}, private_keys={})
VERIFIER = HTTPMessageVerifier(signature_algorithm=HMAC_SHA256, key_resolver=RESOLVER)
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=10)
paths = st.lists(text.filter(bool).map(lambda s: quote(s, safe="")), max_size=4).map(
    lambda segs: "/" + "/".join(segs))
queries = st.one_of(st.none(), st.lists(st.tuples(text.filter(bool), text), max_size=4).map(
    lambda kv: "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in kv)))
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"])
content_types = st.sampled_from([None, "application/json", "multipart/form-data; boundary=x"])
hosts = st.sampled_from(["gw.example", "gw.example:8443", "127.0.0.1:9000"])


def sign(method: str, url: str, headers: list[tuple[str, str]], body: bytes,
         signer: RFC9421Signer | None = None) -> Message:
    added = (signer or RFC9421Signer()).sign(KEY, method, url, headers, body)
    return Message(method, url, headers + added)


@PROPERTY
@given(methods, st.sampled_from(["http", "https"]), hosts, paths, queries,
       st.binary(max_size=300), content_types, st.sampled_from(["sha-256", "sha-512"]),
       st.one_of(st.none(), st.integers(min_value=1, max_value=3600)))
def test_our_signatures_verify_under_their_library(
        method: str, scheme: str, host: str, path: str, query: str | None, body: bytes,
        content_type: str | None, digest: str, expires_in: int | None) -> None:
    url = f"{scheme}://{host}{path}" + (f"?{query}" if query is not None else "")
    headers = [("Content-Type", content_type)] if content_type else []
    msg = sign(method, url, headers, body, RFC9421Signer(digest=digest, expires_in=expires_in))
    (result,) = VERIFIER.verify(msg, body=body)
    covered = set(result.covered_components)
    assert {'"@method"', '"@authority"', '"@path"', '"x-gateway-nonce"'} <= covered
    assert ('"@query"' in covered) == (query is not None)
    if body:
        assert result.body == body
        assert '"content-digest"' in covered
        assert ('"content-type"' in covered) == bool(content_type)
        assert msg.headers["Content-Digest"].startswith(f"{digest}=:")
    params = result.parameters
    assert params["keyid"] == KEY_ID and params["alg"] == "hmac-sha256"
    assert params["nonce"] == msg.headers["X-Gateway-Nonce"]
    assert abs(params["created"] - time.time()) < 5
    if expires_in is not None:
        assert params["expires"] == params["created"] + expires_in


@pytest.mark.parametrize("tamper", ["nonce", "path", "body", "authority"])
def test_their_library_rejects_what_we_did_not_sign(tamper: str) -> None:
    url = "https://gw.example/api/items?b=2&a=1"
    msg = sign("POST", url, [("Content-Type", "application/json")], b'{"a": 1}')
    body = b'{"a": 1}'
    if tamper == "nonce":
        msg.headers["X-Gateway-Nonce"] = "another-nonce-value-xx"
    elif tamper == "path":
        msg.url = "https://gw.example/api/other?b=2&a=1"
    elif tamper == "authority":
        msg.url = "https://evil.example/api/items?b=2&a=1"
    else:
        body = b'{"a": 2}'
    with pytest.raises(InvalidSignature):
        VERIFIER.verify(msg, body=body)


def test_every_signature_has_a_fresh_nonce() -> None:
    url = "https://gw.example/api/same"
    nonces = {sign("GET", url, [], b"").headers["X-Gateway-Nonce"] for _ in range(50)}
    assert len(nonces) == 50
