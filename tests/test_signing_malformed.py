"""Malformed and hostile input: each gets a specific catalogue code, and nothing but a
``SignatureError`` ever leaves the signing module (hypothesis throws garbage at it)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import SignatureError
from gateway.signing import Body, Policy, Request, parse
from gateway.signing.sfv import SFVError, parse_dictionary
from gateway.signing.signer import presign_sigv4, sign_rfc9421, sign_sigv4

KEY_ID = "gwk_7fXyQ2bLpR9sT4vW1zA3cD5eFg0H1j"
SECRET = b"gws_Zq8Rk1LmN3pQ5sT7vX9yB2dF4hJ6kM8nP0rS2uW4xY6zA8cE0gI2"
NOW = 1_800_000_000
HOST = ("Host", "gw.local")
POLICY = Policy()


def sigv4(method: str = "GET", target: str = "/api/x", body: bytes = b"",
          headers: tuple[tuple[str, str], ...] = (), now: float = NOW,
          **kw: object) -> list[tuple[str, str]]:
    return sign_sigv4(method, target, "gw.local", list(headers), body, key_id=KEY_ID,
                      secret=SECRET, now=now, **kw)  # type: ignore[arg-type]


def request(*headers: tuple[str, str], method: str = "GET", target: str = "/api/x") -> Request:
    return Request(method, target, (HOST, *headers))


def code_of(req: Request, body: bytes = b"", policy: Policy = POLICY, now: float = NOW) -> str:
    with pytest.raises(SignatureError) as err:
        parse(req, policy, now).verify(SECRET, Body(body))
    assert SECRET.decode() not in err.value.message
    return err.value.code


def replace(headers: list[tuple[str, str]], name: str, value: str) -> list[tuple[str, str]]:
    return [(n, value if n == name else v) for n, v in headers]


def authz(headers: list[tuple[str, str]]) -> str:
    return dict(headers)["Authorization"]


GOOD = sigv4()
GOOD_AUTHZ = authz(GOOD)
GOOD_SIG = GOOD_AUTHZ.rsplit("Signature=", 1)[1]


@pytest.mark.parametrize(("authorization", "code"), [
    ("AWS4-HMAC-SHA256", "malformed_auth"),
    ("AWS4-HMAC-SHA256 Credential=" + KEY_ID, "malformed_auth"),
    (GOOD_AUTHZ[: len(GOOD_AUTHZ) // 2], "malformed_auth"),
    (GOOD_AUTHZ.replace(GOOD_SIG, "zz" * 32), "malformed_auth"),          # bad hex
    (GOOD_AUTHZ.replace(GOOD_SIG, GOOD_SIG.upper()), "malformed_auth"),   # upper-case hex
    (GOOD_AUTHZ.replace(GOOD_SIG, GOOD_SIG[:-2]), "malformed_auth"),      # short
    (GOOD_AUTHZ.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512"), "malformed_auth"),
    (GOOD_AUTHZ.replace("AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256"), "malformed_auth"),
    ("Bearer abc.def", "malformed_auth"),
    ("AWS4-HMAC-SHA256 Credential=\u00e9\u00e8/\ud83d/x, SignedHeaders=host, Signature=00",
     "malformed_auth"),
    (GOOD_AUTHZ + ", Signature=" + GOOD_SIG, "malformed_auth"),          # repeated field
    (GOOD_AUTHZ.replace("/aws4_request", "/aws5_request"), "malformed_auth"),
    (GOOD_AUTHZ.replace("/local/", "/eu-west-1/"), "signature_invalid"),  # region not accepted
    (GOOD_AUTHZ.replace("/gateway/", "/s3/"), "signature_invalid"),       # other service
    (GOOD_AUTHZ.replace("SignedHeaders=host;x-amz-date", "SignedHeaders=x-amz-date;host"),
     "malformed_auth"),                                                   # not sorted
    (GOOD_AUTHZ.replace("SignedHeaders=host;x-amz-date", "SignedHeaders=host"),
     "signature_invalid"),                                                # x-amz-date unsigned
    ("AWS4-HMAC-SHA256 " + "A" * 100_000, "malformed_auth"),             # huge value
])
def test_bad_authorization_header(authorization: str, code: str) -> None:
    headers = replace(GOOD, "Authorization", authorization)
    assert code_of(request(*headers)) == code


def test_scope_date_must_match_x_amz_date() -> None:
    headers = replace(GOOD, "X-Amz-Date", "20270114T080000Z")
    assert code_of(request(*headers), now=NOW - 86400) == "malformed_auth"


@pytest.mark.parametrize("value", ["20271315T080000Z", "2027-01-15T08:00:00Z", "", "20270115",
                                   "２０２７0115T080000Z"])
def test_bad_x_amz_date(value: str) -> None:
    assert code_of(request(*replace(GOOD, "X-Amz-Date", value))) == "malformed_auth"


@pytest.mark.parametrize("offset", [-301, 301, -86400 * 365, 86400 * 365])
def test_clock_window(offset: int) -> None:
    assert code_of(request(*sigv4(now=NOW + offset))) == "request_expired"


@pytest.mark.parametrize("offset", [-300, 0, 300])
def test_clock_window_edges_pass(offset: int) -> None:
    parse(request(*sigv4(now=NOW + offset)), POLICY, NOW).verify(SECRET, Body())


def test_no_auth_at_all() -> None:
    assert code_of(request()) == "missing_auth"


def test_duplicate_authorization() -> None:
    assert code_of(request(*GOOD, ("Authorization", GOOD_AUTHZ))) == "ambiguous_auth"


def test_duplicate_x_amz_date() -> None:
    assert code_of(request(*GOOD, ("X-Amz-Date", dict(GOOD)["X-Amz-Date"]))) == "ambiguous_auth"


def test_header_and_query_auth_together() -> None:
    target = presign_sigv4("GET", "/api/x", "gw.local", key_id=KEY_ID, secret=SECRET, now=NOW,
                           expires=60)
    assert code_of(request(*GOOD, target=target)) == "ambiguous_auth"


def test_sigv4_and_rfc9421_together() -> None:
    rfc = sign_rfc9421("GET", "/api/x", "gw.local", [], b"", key_id=KEY_ID, secret=SECRET,
                       now=NOW)
    assert code_of(request(*GOOD, *rfc)) == "ambiguous_auth"


def test_unsigned_x_amz_header_is_refused() -> None:
    assert code_of(request(*GOOD, ("X-Amz-Copy-Source", "/other/object"))) == "signature_invalid"


def test_body_must_match_declared_sha256() -> None:
    body = b'{"a": 1}'
    declared = (("X-Amz-Content-Sha256", hashlib.sha256(body).hexdigest()),)
    headers = [*declared, *sigv4("POST", body=body, headers=declared)]
    parse(request(*headers, method="POST"), POLICY, NOW).verify(SECRET, Body(body))
    assert code_of(request(*headers, method="POST"), body + b" ") == "signature_invalid"


def test_streaming_payload_is_refused() -> None:
    headers = [*GOOD, ("X-Amz-Content-Sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")]
    assert code_of(request(*headers)) == "unsupported_payload"


def test_aws_chunked_is_refused() -> None:
    assert code_of(request(*GOOD, ("Content-Encoding", "aws-chunked"))) == "unsupported_payload"


def test_unsigned_payload_only_where_allowed() -> None:
    headers = sigv4("PUT", body=b"data", unsigned_payload=True)
    assert code_of(request(*headers, method="PUT"), b"data") == "unsupported_payload"
    facts = parse(request(*headers, method="PUT"), Policy(allow_unsigned_payload=True),
                  NOW).verify(SECRET, Body(b"anything"))
    assert not facts.body_signed and "@body" not in facts.components


# -- presigned URLs ------------------------------------------------------------------------

def presigned(expires: int = 600, method: str = "GET", now: float = NOW) -> str:
    return presign_sigv4(method, "/api/x?a=1", "gw.local", key_id=KEY_ID, secret=SECRET,
                         now=now, expires=expires)


def test_presigned_url_verifies_inside_its_window() -> None:
    facts = parse(request(target=presigned()), POLICY, NOW + 599).verify(SECRET, Body())
    assert facts.scheme == "sigv4-query" and facts.expires_at == NOW + 600


@pytest.mark.parametrize(("target", "now", "code"), [
    (presigned(600), NOW + 601, "request_expired"),
    (presigned(600), NOW - 301, "request_expired"),
    (presigned(7200), NOW, "malformed_auth"),                  # over max_presign_expires
    (presigned(604801), NOW, "malformed_auth"),                # over the protocol's 7 days
    (presigned().replace("X-Amz-Expires=600", "X-Amz-Expires=-5"), NOW, "malformed_auth"),
    (presigned().replace("X-Amz-Expires=600", "X-Amz-Expires=1e3"), NOW, "malformed_auth"),
    (presigned() + "&X-Amz-Signature=" + "0" * 64, NOW, "ambiguous_auth"),
    (presigned().replace("&X-Amz-SignedHeaders=host", ""), NOW, "malformed_auth"),
    (presigned().replace("X-Amz-Algorithm=AWS4-HMAC-SHA256", "X-Amz-Algorithm=MD5"), NOW,
     "malformed_auth"),
])
def test_bad_presigned_urls(target: str, now: float, code: str) -> None:
    assert code_of(request(target=target), now=now) == code


def test_presigned_post_is_refused_unless_the_route_opts_in() -> None:
    target = presigned(method="POST")
    assert code_of(request(target=target, method="POST")) == "malformed_auth"
    parse(request(target=target, method="POST"),
          Policy(presigned_methods=frozenset({"GET", "POST"})), NOW).verify(SECRET, Body())


# -- RFC 9421 ------------------------------------------------------------------------------

def rfc(method: str = "GET", target: str = "/api/x", body: bytes = b"",
        **kw: object) -> list[tuple[str, str]]:
    return sign_rfc9421(method, target, "gw.local", [], body, key_id=KEY_ID, secret=SECRET,
                        now=NOW, **kw)  # type: ignore[arg-type]


GOOD_RFC = rfc()
GOOD_INPUT = dict(GOOD_RFC)["Signature-Input"]


@pytest.mark.parametrize(("signature_input", "code"), [
    (GOOD_INPUT.replace('alg="hmac-sha256"', 'alg="hmac-sha512"'), "malformed_auth"),
    (GOOD_INPUT.replace('alg="hmac-sha256"', 'alg="ed25519"'), "malformed_auth"),
    (GOOD_INPUT.replace(f'keyid="{KEY_ID}"', "keyid=abc"), "malformed_auth"),      # token
    (GOOD_INPUT.replace(f';keyid="{KEY_ID}"', ""), "malformed_auth"),
    (GOOD_INPUT.replace(f"created={NOW}", ""), "malformed_auth"),
    (GOOD_INPUT.replace(f"created={NOW}", f'created="{NOW}"'), "malformed_auth"),
    (GOOD_INPUT + f";expires={NOW - 10}", "malformed_auth"),                      # < created
    (GOOD_INPUT.replace(f"created={NOW}", f"created={NOW + 3600}"), "request_expired"),
    (GOOD_INPUT.replace(f"created={NOW}", f"created={NOW - 3600}"), "request_expired"),
    (GOOD_INPUT + ";foo=1", "malformed_auth"),                                    # unknown
    (GOOD_INPUT.replace('"@method"', '"@bogus"'), "malformed_auth"),
    (GOOD_INPUT.replace('"@method"', '"@method" "@method"'), "malformed_auth"),
    (GOOD_INPUT.replace('"@method"', '"@method";sf'), "malformed_auth"),
    (GOOD_INPUT.replace('"@method"', '"@Method"'), "malformed_auth"),
    (GOOD_INPUT.replace('"@method" ', ""), "signature_invalid"),                  # policy
    (GOOD_INPUT[:-5], "malformed_auth"),                                          # truncated
    ("sig1=" + "(" * 5000, "malformed_auth"),
    ("\u00e9\u00e8\u00ff", "malformed_auth"),
    ("sig2=" + GOOD_INPUT[5:], "malformed_auth"),                                 # label mismatch
    (GOOD_INPUT + ", sig2=" + GOOD_INPUT[5:], "ambiguous_auth"),
])
def test_bad_signature_input(signature_input: str, code: str) -> None:
    assert code_of(request(*replace(GOOD_RFC, "Signature-Input", signature_input))) == code


@pytest.mark.parametrize(("signature", "code"), [
    ("sig1=:" + base64.b64encode(b"\x00" * 32).decode() + ":", "signature_invalid"),
    ("sig1=abc", "malformed_auth"),
    ("sig1=:!!!:", "malformed_auth"),
    ("sig1=:" + "A" * 200_000 + ":", "signature_invalid"),
])
def test_bad_signature(signature: str, code: str) -> None:
    assert code_of(request(*replace(GOOD_RFC, "Signature", signature))) == code


def test_expired_rfc9421_signature() -> None:
    headers = rfc(expires=NOW + 10)
    parse(request(*headers), POLICY, NOW + 10).verify(SECRET, Body())
    assert code_of(request(*headers), now=NOW + 11) == "request_expired"


def test_body_requires_covered_content_digest() -> None:
    headers = rfc("POST", body=b"payload", components=["@method", "@authority", "@path"])
    assert code_of(request(*headers, method="POST"), b"payload") == "signature_invalid"


def test_content_digest_mismatch() -> None:
    headers = rfc("POST", body=b"payload")
    assert code_of(request(*headers, method="POST"), b"payloaD") == "signature_invalid"


def test_content_digest_with_sha512() -> None:
    headers = rfc("POST", body=b"payload", digest="sha-512")
    parse(request(*headers, method="POST"), POLICY, NOW).verify(SECRET, Body(b"payload"))
    assert code_of(request(*headers, method="POST"), b"other") == "signature_invalid"


def test_content_digest_without_a_supported_algorithm() -> None:
    headers = replace(rfc("POST", body=b"payload"), "Content-Digest", "md5=:AAAA:")
    assert code_of(request(*headers, method="POST"), b"payload") == "signature_invalid"


def test_errors_never_reveal_the_expected_signature() -> None:
    headers = replace(GOOD, "X-Amz-Date", dict(GOOD)["X-Amz-Date"])
    bad = replace(headers, "Authorization", GOOD_AUTHZ.replace(GOOD_SIG, "0" * 64))
    with pytest.raises(SignatureError) as err:
        parse(request(*bad), POLICY, NOW).verify(SECRET, Body())
    assert GOOD_SIG not in str(err.value) and GOOD_SIG not in repr(err.value)


# -- garbage at every parser ---------------------------------------------------------------

# what aiohttp can hand over: any text, undecodable bytes as surrogate escapes
garbage = st.text(alphabet=st.one_of(
    st.characters(codec="utf-8", exclude_categories=("Cs",)),
    st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF)), max_size=200)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def only_signature_errors(req: Request, body: bytes = b"") -> None:
    try:
        parse(req, POLICY, NOW).verify(SECRET, Body(body))
    except SignatureError:
        pass


@FUZZ
@given(garbage)
def test_garbage_authorization(value: str) -> None:
    only_signature_errors(request(("Authorization", value), ("X-Amz-Date", "20270115T080000Z")))
    only_signature_errors(request(("Authorization", "AWS4-HMAC-SHA256 " + value),
                                  ("X-Amz-Date", "20270115T080000Z")))


@FUZZ
@given(garbage, garbage)
def test_garbage_around_a_valid_signature(date: str, extra: str) -> None:
    only_signature_errors(request(*replace(GOOD, "X-Amz-Date", date)))
    only_signature_errors(request(*GOOD, (extra.lower() or "x", extra)))


@FUZZ
@given(garbage, garbage)
def test_garbage_targets(path: str, query: str) -> None:
    only_signature_errors(request(*GOOD, target="/" + path))
    only_signature_errors(request(target=presigned() + "&" + query))
    only_signature_errors(request(target="/?" + query + "&X-Amz-Credential=" + query))


@FUZZ
@given(garbage, garbage, garbage)
def test_garbage_rfc9421_fields(signature_input: str, signature: str, digest: str) -> None:
    only_signature_errors(request(("Signature-Input", signature_input),
                                  ("Signature", signature)))
    only_signature_errors(request(*replace(GOOD_RFC, "Signature-Input", "sig1=" +
                                           signature_input)))
    post = rfc("POST", body=b"x")
    only_signature_errors(request(*replace(post, "Content-Digest", digest), method="POST"), b"x")


@FUZZ
@given(garbage)
def test_structured_field_parser_raises_only_its_own_error(text: str) -> None:
    try:
        parse_dictionary(text)
    except SFVError:
        pass


QUERY_PARAM = ["@method", "@authority", "@path", "@query", '"@query-param";name="a"']


@FUZZ
@given(garbage)
def test_garbage_query_under_query_param(query: str) -> None:
    headers = rfc(target="/api/x?a=1", components=QUERY_PARAM)
    only_signature_errors(request(*headers, target="/api/x?" + query))


def test_an_x_amz_auth_parameter_beside_rfc9421_is_ambiguous() -> None:
    headers = rfc(target="/api/x?X-Amz-Date=1")
    assert code_of(request(*headers, target="/api/x?X-Amz-Date=1")) == "ambiguous_auth"
