"""The SDK's SigV4 signer against botocore's ``SigV4Auth``: for the same request
(method, SDK-style encoded path and query, headers, body, host, region, service)
at the same instant, both produce the same ``X-Amz-Date`` and ``Authorization``.

botocore reads the clock through ``botocore.auth.get_current_datetime``; the test
pins it to the instant our signer is given, and hands botocore our nonce header,
so everything else is computed independently by each signer.
"""

from __future__ import annotations

import datetime as dt
from unittest import mock
from urllib.parse import quote

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.client import Credentials, SigV4Signer

from .client_server import new_key

KEY_ID, SECRET = new_key()
KEY = Credentials(KEY_ID, SECRET)
BOTO = BotoCredentials(KEY_ID, SECRET)
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=10)
# the wire form an SDK sends: segments percent-encoded, now and then '.', '..' or empty
segment = st.one_of(text.filter(bool).map(lambda s: quote(s, safe="")),
                    st.sampled_from([".", "..", "", "~user", "a-b_c.d"]))
paths = st.lists(segment, max_size=5).map(lambda segs: "/" + "/".join(segs))
# SDK-style queries: percent-encoded with upper-case hex, repeated keys, sorted or not
pairs = st.lists(st.tuples(text.filter(bool), text), max_size=5)
header_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-",
                       min_size=1, max_size=12).filter(
    lambda n: n.lower() not in {"host", "authorization", "expect", "user-agent", "connection",
                                "transfer-encoding", "content-length", "keep-alive", "te",
                                "trailer", "upgrade", "proxy-authorization",
                                "proxy-authenticate", "x-amzn-trace-id", "x-gateway-nonce",
                                # the SDK replaces these (stale copies of an earlier attempt)
                                "signature", "signature-input", "content-digest"}
    and not n.lower().startswith("x-amz"))
header_values = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E),
                        min_size=1, max_size=20).filter(lambda v: v.strip())
headers = st.dictionaries(st.one_of(header_names, header_names.map(lambda n: "X-Amz-Meta-" + n)),
                          header_values, max_size=4).filter(
    lambda h: len({n.lower() for n in h}) == len(h))
hosts = st.sampled_from(["gw.example", "gw.example:8080", "GW.Example.COM:80", "10.0.0.7:443",
                         "127.0.0.1:9443"])
instants = st.integers(min_value=946684800, max_value=4102444800)  # 2000..2100
methods = st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
scopes = st.tuples(st.sampled_from(["local", "eu-west-1"]),
                   st.sampled_from(["gateway", "execute-api"]))
nonces = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_",
                 min_size=22, max_size=22)


def encode_query(items: list[tuple[str, str]], sort: bool) -> str:
    encoded = [f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in items]
    return "&".join(sorted(encoded) if sort else encoded)


def botocore_signs(method: str, url: str, hdrs: dict[str, str], body: bytes, now: int,
                   region: str, service: str, *, unsigned: bool = False) -> AWSRequest:
    aws = AWSRequest(method=method, url=url, headers=dict(hdrs), data=body)
    if unsigned:
        aws.context["payload_signing_enabled"] = False
    instant = dt.datetime.fromtimestamp(now, dt.UTC).replace(tzinfo=None)
    with mock.patch("botocore.auth.get_current_datetime", return_value=instant):
        SigV4Auth(BOTO, service, region).add_auth(aws)
    return aws


@PROPERTY
@given(methods, hosts, paths, pairs, st.booleans(), headers, st.binary(max_size=300),
       instants, scopes, nonces)
def test_same_signature_as_botocore(method: str, host: str, path: str,
                                    items: list[tuple[str, str]], sort: bool,
                                    hdrs: dict[str, str], body: bytes, now: int,
                                    scope: tuple[str, str], nonce: str) -> None:
    region, service = scope
    query = encode_query(items, sort)
    url = f"http://{host}{path}" + (f"?{query}" if query else "")
    ours = dict(SigV4Signer(region=region, service=service).sign(
        KEY, method, url, list(hdrs.items()), body, now=now, nonce=nonce))
    theirs = botocore_signs(method, url, {**hdrs, "X-Gateway-Nonce": nonce}, body, now,
                            region, service)
    assert ours["X-Gateway-Nonce"] == nonce
    assert ours["X-Amz-Date"] == theirs.headers["X-Amz-Date"]
    assert ours["Authorization"] == theirs.headers["Authorization"]
    assert "x-gateway-nonce" in ours["Authorization"].split("SignedHeaders=")[1]


@PROPERTY
@given(paths, pairs, instants, nonces)
def test_unsigned_payload_same_as_botocore(path: str, items: list[tuple[str, str]], now: int,
                                           nonce: str) -> None:
    url = f"https://gw.example{path}" + (f"?{encode_query(items, False)}" if items else "")
    ours = dict(SigV4Signer(unsigned_payload=True).sign(KEY, "PUT", url, [], None, now=now,
                                                        nonce=nonce))
    theirs = botocore_signs("PUT", url, {"X-Gateway-Nonce": nonce}, b"", now, "local",
                            "gateway", unsigned=True)
    assert ours["X-Amz-Content-Sha256"] == theirs.headers["X-Amz-Content-SHA256"] \
        == "UNSIGNED-PAYLOAD"
    assert ours["Authorization"] == theirs.headers["Authorization"]
