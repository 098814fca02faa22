"""RFC 9421 Appendix B.2.5 (hmac-sha256) from shared/vectors/rfc9421."""

from __future__ import annotations

import base64
import json

import pytest

from gateway.errors import SignatureError
from gateway.signing import Body, Policy, Request, parse
from gateway.signing.rfc9421 import RFC9421Auth

from .conftest import VECTORS

VECTOR = json.loads((VECTORS / "rfc9421" / "b25-hmac-sha256.json").read_text())
SECRET = base64.b64decode(VECTOR["secret_base64"])
NOW = 1618884473 + 10
PERMISSIVE = Policy(required_components=())


def vector_request(**replace: str) -> Request:
    req = VECTOR["request"]
    headers = [(n, replace.get(n.lower(), v)) for n, v in req["headers"]]
    headers += [("Signature-Input", replace.get("signature-input", VECTOR["signature_input"])),
                ("Signature", replace.get("signature", VECTOR["signature"]))]
    return Request(replace.get("@method", req["method"]), replace.get("@target", req["target"]),
                   tuple(headers), scheme=req["scheme"])


def parsed(request: Request, policy: Policy = PERMISSIVE) -> RFC9421Auth:
    auth = parse(request, policy, NOW)
    assert isinstance(auth, RFC9421Auth)
    return auth


def test_signature_base_matches_the_rfc() -> None:
    assert parsed(vector_request()).signature_base() == VECTOR["signature_base"]


def test_vector_verifies_cryptographically() -> None:
    auth = parsed(vector_request())
    auth.verify_mac(SECRET)
    assert auth.key_id == "test-shared-secret"


def test_default_policy_refuses_it_on_the_data_plane() -> None:
    # B.2.5 covers neither @method nor @path: a signature that works on any endpoint
    auth = parsed(vector_request(), Policy())
    with pytest.raises(SignatureError) as err:
        auth.verify(SECRET, Body(VECTOR["request"]["body"].encode()))
    assert err.value.code == "signature_invalid"
    assert "@method" in err.value.message


@pytest.mark.parametrize("change", [
    {"date": "Tue, 20 Apr 2021 02:07:56 GMT"},
    {"host": "example.org"},
    {"content-type": "application/json; charset=utf-8"},
    {"signature": "sig-b25=:" + base64.b64encode(b"\x00" * 32).decode() + ":"},
    {"signature": "sig-b25=:qxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:"},
    {"signature-input": VECTOR["signature_input"].replace("1618884473", "1618884474")},
    {"signature-input": VECTOR["signature_input"].replace(
        '"content-type")', '"content-type" "content-length")')},
], ids=["date", "authority", "content-type", "zero-signature", "one-bit-signature",
        "created", "extra-component"])
def test_any_change_to_what_is_covered_fails(change: dict[str, str]) -> None:
    with pytest.raises(SignatureError) as err:
        parsed(vector_request(**change)).verify_mac(SECRET)
    assert err.value.code == "signature_invalid"


def test_wrong_secret_fails() -> None:
    with pytest.raises(SignatureError) as err:
        parsed(vector_request()).verify_mac(SECRET[:-1] + b"\x00")
    assert err.value.code == "signature_invalid"


def test_content_digest_of_the_vector_matches_its_body() -> None:
    # The vector carries a sha-512 Content-Digest; signed with it covered, the body must match.
    req = VECTOR["request"]
    body = req["body"].encode()
    si = VECTOR["signature_input"].replace('"content-type")', '"content-type" "content-digest")')
    auth = parsed(vector_request(**{"signature-input": si}))
    auth.check_content_digest(Body(body))
    with pytest.raises(SignatureError) as err:
        auth.check_content_digest(Body(body + b" "))
    assert err.value.code == "signature_invalid"
