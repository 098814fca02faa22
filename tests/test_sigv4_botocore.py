"""Property tests: requests signed by botocore (an independent signer) verify, and
flipping any signed byte makes them fail with ``signature_invalid``.

Queries are generated the way SDKs send them: percent-encoded with upper-case hex,
sorted or not (DESIGN §9). Raw ``+``, ``=`` inside a value and lower-case hex are
separate, documented cases at the end of this file.
"""

from __future__ import annotations

import calendar
import time
from urllib.parse import quote, urlsplit

import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import SignatureError
from gateway.signing import Body, Policy, Request, parse
from gateway.signing.sigv4 import canonical_query

KEY_ID = "gwk_7fXyQ2bLpR9sT4vW1zA3cD5eFg0H1j"
SECRET = "gws_Zq8Rk1LmN3pQ5sT7vX9yB2dF4hJ6kM8nP0rS2uW4xY6zA8cE0gI2"
HOST = "gw.example:8080"
POLICY = Policy(sigv4_service="gateway", sigv4_regions=frozenset({"local"}),
                presigned_methods=frozenset({"GET", "HEAD"}))
CREDS = Credentials(KEY_ID, SECRET)

segment_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
# the wire form an SDK sends: each segment percent-encoded; sometimes '.', '..' or an empty one
segment = st.one_of(segment_text.map(lambda s: quote(s, safe="")),
                    st.sampled_from([".", "..", ""]))
paths = st.lists(segment, min_size=0, max_size=5).map(lambda segs: "/" + "/".join(segs))
query_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)),
                     max_size=10)
# (an X-Amz-* auth parameter in the query beside an Authorization header is, by rule,
# ambiguous_auth: such keys are the presigned tests' business)
pairs = st.lists(st.tuples(query_text.filter(lambda k: bool(k) and not k.startswith("X-Amz-")),
                           query_text), max_size=5)
header_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1,
                       max_size=12).filter(
    lambda n: n not in {"host", "authorization", "signature", "signature-input", "expect",
                        "user-agent", "content-encoding", "transfer-encoding", "connection",
                        "content-length"} and not n.startswith(("x-amz", "x-amzn")))
header_values = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E),
                        min_size=1, max_size=20).filter(lambda v: v.strip())
headers = st.dictionaries(header_names, header_values, max_size=4)
bodies = st.binary(max_size=200)
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])


def encode_query(items: list[tuple[str, str]], sort: bool) -> str:
    encoded = [f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in items]
    return "&".join(sorted(encoded) if sort else encoded)


def wire(aws: AWSRequest, extra: dict[str, str] | None = None) -> Request:
    """What the gateway receives when botocore's request is sent."""
    url = urlsplit(aws.url)
    target = (url.path or "/") + (f"?{url.query}" if url.query else "")
    hdrs = [("Host", url.netloc)] + [(k, v) for k, v in aws.headers.items()]
    for name, value in (extra or {}).items():
        hdrs = [(n, value if n.lower() == name else v) for n, v in hdrs]
    return Request(aws.method, target, tuple(hdrs))


def botocore_header_signed(method: str, path: str, query: str, hdrs: dict[str, str],
                           body: bytes) -> AWSRequest:
    url = f"http://{HOST}{path}" + (f"?{query}" if query else "")
    aws = AWSRequest(method=method, url=url, headers=dict(hdrs), data=body)
    SigV4Auth(CREDS, "gateway", "local").add_auth(aws)
    return aws


def verify(request: Request, body: bytes) -> None:
    parse(request, POLICY, time.time()).verify(SECRET.encode(), Body(body))


def fails(request: Request, body: bytes) -> str:
    with pytest.raises(SignatureError) as err:
        verify(request, body)
    return err.value.code


PROPERTY = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(methods, paths, pairs, st.booleans(), headers, bodies)
def test_botocore_header_auth_verifies(method: str, path: str, items: list[tuple[str, str]],
                                       sort: bool, hdrs: dict[str, str], body: bytes) -> None:
    aws = botocore_header_signed(method, path, encode_query(items, sort), hdrs, body)
    verify(wire(aws), body)


def mutate_target(request: Request, target: str) -> Request:
    return Request(request.method, target, request.headers)


def other_path(request: Request) -> Request:
    # a segment more at the end: never the same resource after dot-segment removal
    query = request.target[len(request.path):]
    return mutate_target(request, request.path.rstrip("/") + "/x" + query)


@PROPERTY
@given(methods, paths, pairs, headers, bodies, st.data())
def test_flipping_a_signed_byte_fails(method: str, path: str, items: list[tuple[str, str]],
                                      hdrs: dict[str, str], body: bytes, data: st.DataObject
                                      ) -> None:
    aws = botocore_header_signed(method, path, encode_query(items, True), hdrs, body)
    good = wire(aws)
    mutations = ["method", "path", "query", "body", "date", "host"] + (["header"] if hdrs else [])
    which = data.draw(st.sampled_from(mutations))
    if which == "method":
        other = "PUT" if method != "PUT" else "POST"
        bad, bad_body = Request(other, good.target, good.headers), body
    elif which == "path":
        bad, bad_body = other_path(good), body
    elif which == "query":
        sep = "&" if good.query else "?"
        bad, bad_body = mutate_target(good, good.target + sep + "injected=1"), body
    elif which == "body":
        bad, bad_body = good, body + b"x"
    elif which == "date":
        # one second earlier: still inside the clock window, but not what was signed
        signed = calendar.timegm(time.strptime(aws.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ"))
        earlier = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(signed - 1 if signed % 86400
                                                              else signed + 1))
        bad, bad_body = wire(aws, {"x-amz-date": earlier}), body
    elif which == "host":
        bad, bad_body = wire(aws, {"host": "other.example:8080"}), body
    else:
        name = data.draw(st.sampled_from(sorted(hdrs)))
        bad, bad_body = wire(aws, {name: aws.headers[name] + "x"}), body
    assert fails(bad, bad_body) == "signature_invalid"


@PROPERTY
@given(st.sampled_from(["GET", "HEAD"]), paths,
       st.dictionaries(query_text.filter(lambda k: bool(k) and not k.startswith("X-Amz-")),
                       query_text, max_size=4),
       st.integers(min_value=60, max_value=3600))  # >= 60 s: a loaded machine is slow
def test_botocore_presigned_url_verifies(method: str, path: str, params: dict[str, str],
                                         expires: int) -> None:
    query = encode_query(list(params.items()), sort=False)
    url = f"http://{HOST}{path}" + (f"?{query}" if query else "")
    aws = AWSRequest(method=method, url=url)
    SigV4QueryAuth(CREDS, "gateway", "local", expires=expires).add_auth(aws)
    request = wire(aws)
    verify(request, b"")
    # and any change to the signed query or path breaks it
    assert fails(mutate_target(request, request.target + "&x=1"), b"") == "signature_invalid"
    assert fails(other_path(request), b"") == "signature_invalid"


# -- the documented cases where SDK-style encoding is not what was sent -------------------

@pytest.mark.parametrize(("raw", "canonical"), [
    ("a=1+2", "a=1%2B2"),             # '+' is a literal plus, not a space
    ("a=b=c", "a=b%3Dc"),             # only the first '=' separates key and value
    ("a=%2f", "a=%2F"),               # lower-case hex is normalised to upper case
    ("b=2&a=1&a=0", "a=0&a=1&b=2"),   # repeated keys are kept, sorted by value
    ("k", "k="),                      # a key alone has an empty value
    ("a=1&&b=2", "a=1&b=2"),          # empty pieces carry nothing
])
def test_query_canonicalisation_rules(raw: str, canonical: str) -> None:
    assert canonical_query(raw) == canonical


def test_plain_queries_sort_by_key_before_value() -> None:
    # the fast path for unescaped queries must order pairs, not strings ('-' < '=')
    assert canonical_query("a-b=1&a=2&a.c=0&a=1") == "a=1&a=2&a-b=1&a.c=0"


def test_a_long_target_verifies_and_a_changed_one_fails() -> None:
    # beyond the size whose canonical form the verifier keeps cached: worked out afresh
    path = "/api/" + "/".join(quote(f"segment-é-{i}", safe="") for i in range(120))
    query = encode_query([(f"k{i}", "v é " * 5) for i in range(60)], sort=False)
    assert len(path) + len(query) > 4000
    aws = botocore_header_signed("GET", path, query, {}, b"")
    request = wire(aws)
    verify(request, b"")
    verify(request, b"")  # and again: nothing kept from the first time changes the answer
    changed = mutate_target(request, request.target.replace("k59=", "k58=", 1))
    assert fails(changed, b"") == "signature_invalid"
