"""Every case of the public AWS SigV4 test suite (shared/vectors/sigv4) verifies,
and the canonical request and string to sign match the suite byte for byte."""

from __future__ import annotations

import calendar
import time
from pathlib import Path

import pytest

from gateway.errors import SignatureError
from gateway.signing import Body, Policy, Request, parse

from .conftest import VECTORS

SUITE = VECTORS / "sigv4"
SECRET = b"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
NOW = calendar.timegm(time.strptime("20150830T123600Z", "%Y%m%dT%H%M%SZ"))
POLICY = Policy(sigv4_service="service", sigv4_regions=frozenset({"us-east-1"}))
CASES = sorted(p.parent for p in SUITE.rglob("*.req"))


def read_http(path: Path) -> tuple[str, str, list[tuple[str, str]], bytes]:
    """Parse a suite .req/.sreq file: request line, headers (obs-fold joined), body."""
    text = path.read_text(encoding="utf-8")
    head, _, body = text.partition("\n\n")
    first, *lines = head.split("\n")
    method, rest = first.split(" ", 1)
    target = rest.rsplit(" ", 1)[0]
    headers: list[tuple[str, str]] = []
    for line in lines:
        if line[:1] in (" ", "\t"):  # obs-fold continuation: one space (RFC 9112 §5.2)
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
        elif line:
            name, value = line.split(":", 1)
            headers.append((name, value.strip(" \t")))  # as an HTTP parser hands it over
    return method, target, headers, body.encode("utf-8")


def case_request(case: Path) -> tuple[Request, bytes]:
    name = case.name
    method, target, headers, body = read_http(case / f"{name}.req")
    authz = (case / f"{name}.authz").read_text().strip()
    signed = authz.split("SignedHeaders=")[1].split(",")[0].split(";")
    present = {n.lower() for n, _ in headers}
    if "x-amz-security-token" in signed and "x-amz-security-token" not in present:
        # session-token cases: the token is in the signed request (.sreq)
        _, _, sreq_headers, _ = read_http(case / f"{name}.sreq")
        headers += [(n, v) for n, v in sreq_headers if n.lower() == "x-amz-security-token"]
    return Request(method, target, tuple(headers) + (("Authorization", authz),)), body


def test_suite_is_complete() -> None:
    # the issue requires all of them, including these two that some signers skip
    ids = {str(c.relative_to(SUITE)) for c in CASES}
    assert len(CASES) == 34
    assert {"get-vanilla-query-order-key", "normalize-path/get-space"} <= ids


@pytest.mark.parametrize("case", CASES, ids=lambda c: str(c.relative_to(SUITE)))
def test_vector_verifies(case: Path) -> None:
    request, body = case_request(case)
    auth = parse(request, POLICY, NOW)
    assert auth.canonical_request(Body(body)) == (case / f"{case.name}.creq").read_text()
    assert auth.string_to_sign(Body(body)) == (case / f"{case.name}.sts").read_text()
    facts = auth.verify(SECRET, Body(body))
    assert facts.key_id == "AKIDEXAMPLE"
    assert facts.signed_at == NOW


@pytest.mark.parametrize("case", CASES, ids=lambda c: str(c.relative_to(SUITE)))
def test_vector_with_wrong_secret_fails(case: Path) -> None:
    request, body = case_request(case)
    with pytest.raises(SignatureError) as err:
        parse(request, POLICY, NOW).verify(SECRET[:-1] + b"X", Body(body))
    assert err.value.code == "signature_invalid"


def test_unsigned_security_token_is_refused() -> None:
    # post-sts-header-after adds the token after signing: we require every x-amz-* signed
    case = SUITE / "post-sts-token" / "post-sts-header-after"
    method, target, headers, body = read_http(case / "post-sts-header-after.sreq")
    with pytest.raises(SignatureError) as err:
        parse(Request(method, target, tuple(headers)), POLICY, NOW)
    assert err.value.code == "signature_invalid"
    assert "x-amz-security-token" in err.value.message
