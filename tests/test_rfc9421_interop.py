"""RFC 9421 against the independent ``http-message-signatures`` library, both ways:
its signatures verify here, and our signer's verify under it."""

from __future__ import annotations

import datetime as dt
import time
from urllib.parse import quote, urlsplit

import pytest
from http_message_signatures import HTTPMessageSigner, HTTPMessageVerifier, MappingKeyResolver
from http_message_signatures.algorithms import HMAC_SHA256
from http_message_signatures.structures import CaseInsensitiveDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import SignatureError
from gateway.signing import Body, Policy, Request, parse
from gateway.signing.signer import sign_rfc9421

KEY_ID = "gwk_7fXyQ2bLpR9sT4vW1zA3cD5eFg0H1j"
SECRET = b"gws_Zq8Rk1LmN3pQ5sT7vX9yB2dF4hJ6kM8nP0rS2uW4xY6zA8cE0gI2"
HOST = "api.example:8443"
RESOLVER = MappingKeyResolver(public_keys={KEY_ID: SECRET}, private_keys={KEY_ID: SECRET})
PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Message:
    """The request interface the library reads: method, encoded absolute url, headers."""

    def __init__(self, method: str, url: str, headers: list[tuple[str, str]]) -> None:
        self.method = method
        self.url = url
        self.headers = CaseInsensitiveDict(headers)


text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=10)
paths = st.lists(text.filter(bool).map(lambda s: quote(s, safe="")), max_size=4).map(
    lambda segs: "/" + "/".join(segs))
# (a query naming one of SigV4's X-Amz-* auth parameters is a SigV4 attempt: ambiguous_auth)
queries = st.one_of(st.none(), st.lists(st.tuples(
    text.filter(lambda k: bool(k) and not k.startswith("X-Amz-")), text), max_size=4).map(
    lambda kv: "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in kv)))
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"])
bodies = st.binary(max_size=300)
content_types = st.sampled_from([None, "application/json", "text/plain; charset=utf-8"])


def components_for(query: str | None, body: bytes, content_type: str | None,
                   target_uri: bool) -> list[str]:
    if target_uri:  # what requests-http-signature covers by default
        return ["@method", "@authority", "@target-uri"]
    out = ["@method", "@authority", "@path"] + (["@query"] if query is not None else [])
    return out + (["content-type"] if content_type else [])


def gateway_view(msg: Message) -> Request:
    url = urlsplit(msg.url)
    target = (url.path or "/") + (f"?{url.query}" if "?" in msg.url else "")
    return Request(msg.method, target, (("Host", url.netloc), *msg.headers.items()),
                   scheme=url.scheme)


def their_signature(method: str, path: str, query: str | None, body: bytes,
                    content_type: str | None, target_uri: bool, nonce: str | None) -> Message:
    url = f"https://{HOST}{path}" + (f"?{query}" if query is not None else "")
    headers = [("Content-Type", content_type)] if content_type else []
    msg = Message(method, url, headers)
    HTTPMessageSigner(signature_algorithm=HMAC_SHA256, key_resolver=RESOLVER).sign(
        msg, key_id=KEY_ID, created=dt.datetime.now(dt.timezone.utc), nonce=nonce,
        covered_component_ids=components_for(query, body, content_type, target_uri),
        body=body if body else None, label="sig1")
    return msg


def verify(request: Request, body: bytes) -> None:
    parse(request, Policy(), time.time()).verify(SECRET, Body(body))


@PROPERTY
@given(methods, paths, queries, bodies, content_types, st.booleans(),
       st.one_of(st.none(), st.text(alphabet="abcdef0123456789", min_size=8, max_size=32)))
def test_their_signatures_verify_here(method: str, path: str, query: str | None, body: bytes,
                                      content_type: str | None, target_uri: bool,
                                      nonce: str | None) -> None:
    msg = their_signature(method, path, query, body, content_type, target_uri, nonce)
    verify(gateway_view(msg), body)


@PROPERTY
@given(methods, paths, queries, bodies, content_types, st.booleans(), st.data())
def test_changing_a_covered_part_fails(method: str, path: str, query: str | None, body: bytes,
                                       content_type: str | None, target_uri: bool,
                                       data: st.DataObject) -> None:
    msg = their_signature(method, path, query, body, content_type, target_uri, None)
    good = gateway_view(msg)
    choices = ["method", "path", "query", "authority"] + (["body"] if body else []) + (
        ["content-type"] if content_type and not target_uri else [])
    which = data.draw(st.sampled_from(choices))
    bad_body = body
    headers = good.headers
    target = good.target
    if which == "method":
        method = "PUT" if method != "PUT" else "POST"
    elif which == "path":
        target = good.path.rstrip("/") + "/x" + target[len(good.path):]
    elif which == "query":
        target += ("&" if good.query is not None else "?") + "x=1"
    elif which == "authority":
        headers = tuple((n, "evil.example" if n == "Host" else v) for n, v in headers)
    elif which == "body":
        bad_body = body + b"!"
    else:
        headers = tuple((n, "text/html" if n.lower() == "content-type" else v)
                        for n, v in headers)
    with pytest.raises(SignatureError) as err:
        verify(Request(method, target, headers, scheme=good.scheme), bad_body)
    assert err.value.code == "signature_invalid"


@PROPERTY
@given(methods, paths, queries, bodies, content_types,
       st.one_of(st.none(), st.text(alphabet="abcdef0123456789", min_size=8, max_size=32)))
def test_our_signatures_verify_under_their_library(method: str, path: str, query: str | None,
                                                   body: bytes, content_type: str | None,
                                                   nonce: str | None) -> None:
    target = path + (f"?{query}" if query is not None else "")
    headers = [("Content-Type", content_type)] if content_type else []
    added = sign_rfc9421(method, target, HOST, headers, body, key_id=KEY_ID, secret=SECRET,
                         now=time.time(), scheme="https", nonce=nonce)
    msg = Message(method, f"https://{HOST}{target}", headers + added)
    verifier = HTTPMessageVerifier(signature_algorithm=HMAC_SHA256, key_resolver=RESOLVER)
    results = verifier.verify(msg, body=body if body else None)
    covered = set(results[0].covered_components)
    assert {'"@method"', '"@authority"', '"@path"'} <= covered
    if body:
        assert '"content-digest"' in covered


@pytest.mark.parametrize("query", ["param=Value&Pet=dog", "Pet=a%20b%2Bc&x=", "Pet=%7E~*"])
def test_their_query_param_component_verifies_here(query: str) -> None:
    msg = Message("GET", f"https://{HOST}/foo?{query}", [])
    HTTPMessageSigner(signature_algorithm=HMAC_SHA256, key_resolver=RESOLVER).sign(
        msg, key_id=KEY_ID, created=dt.datetime.now(dt.timezone.utc),
        covered_component_ids=["@method", "@authority", "@path", "@query",
                               '"@query-param";name="Pet"'])
    verify(gateway_view(msg), b"")
