"""AWS Signature Version 4: header form and presigned-URL (query) form, non-S3 rules.

Canonical request (AWS SigV4 spec, the public test suite in shared/vectors/sigv4)::

    METHOD \\n CanonicalURI \\n CanonicalQuery \\n CanonicalHeaders \\n SignedHeaders \\n HashedPayload

The path is normalised (dot segments removed, ``//`` collapsed) and its already
percent-encoded form encoded once more; the query is decoded and re-encoded
(``A-Za-z0-9-_.~`` bare, ``+`` is a literal plus, pairs sorted by key then value);
header values are trimmed with inner runs of spaces collapsed, repeats joined by
``,`` in arrival order. Nothing here needs the secret until ``verify``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote_from_bytes, unquote_to_bytes

from ..errors import SignatureError
from .message import Body, Derived, Policy, Request, Verified, hmac_sha256, utf8

__all__ = [
    "ALGORITHM",
    "QUERY_AUTH_PARAMS",
    "SigV4Auth",
    "canonical_query",
    "canonical_uri",
    "parse_header_auth",
    "parse_query_auth",
    "signing_key",
]

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
TERMINATOR = "aws4_request"
MAX_PRESIGN_EXPIRES = 604800  # 7 days: the protocol's own ceiling
QUERY_AUTH_PARAMS = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                     "X-Amz-SignedHeaders", "X-Amz-Signature")
_HEX = frozenset("0123456789abcdef")
_DIGITS = frozenset("0123456789")
_TOKEN = r"[a-z0-9!#$%&'*+\-.^_`|~]+"
_SIGNED_HEADERS_RE = re.compile(f"{_TOKEN}(?:;{_TOKEN})*")
_SIGNATURE_RE = re.compile(r"[0-9a-f]{64}")
# the layout every SDK and curl send; anything else goes through the general parser
_AUTHORIZATION_RE = re.compile(
    r"AWS4-HMAC-SHA256 Credential=([^,]*), ?SignedHeaders=([^,]*), ?Signature=([0-9a-f]{64})")
_KEY_ID_RE = re.compile(r"[!-.0-~]+")  # printable ASCII but "/"


def _bad(message: str) -> SignatureError:
    return SignatureError("malformed_auth", message)


# Paths and query parts that canonicalisation leaves unchanged (the common case)
_PLAIN_PATH = re.compile(r"(?:/(?!\.\.?(?:/|$))[A-Za-z0-9\-_.~]+)*/?")
_PLAIN_PART = re.compile(r"[A-Za-z0-9\-_.~]*")
_PLAIN_QUERY = re.compile(r"[A-Za-z0-9\-_.~]+=[A-Za-z0-9\-_.~]*(?:&[A-Za-z0-9\-_.~]+=[A-Za-z0-9\-_.~]*)*")


def canonical_uri(path: str) -> str:
    """Non-S3 canonical URI: remove dot segments, collapse ``//``, encode the
    (already encoded) path once more with only ``/`` and unreserved characters bare."""
    if _PLAIN_PATH.fullmatch(path) and path:
        return path
    segments = [s for s in path.split("/") if s and s != "."]
    out: list[str] = []
    for segment in segments:
        if segment == "..":
            if out:
                out.pop()
        else:
            out.append(segment)
    normalized = "/" + "/".join(out)
    if out and path.endswith("/"):
        normalized += "/"
    return quote_from_bytes(utf8(normalized), safe="/~")


def _encode_component(raw: str) -> str:
    if _PLAIN_PART.fullmatch(raw):
        return raw
    return quote_from_bytes(unquote_to_bytes(utf8(raw)), safe="-_.~")


def canonical_query(query: str | None, *, presigned: bool = False) -> str:
    """Decode and re-encode every ``key=value`` pair, sort by key then value.
    ``k`` alone becomes ``k=``; empty pieces (``a&&b``) carry nothing and are skipped.
    For a presigned URL the ``X-Amz-Signature`` parameter is left out."""
    if not query:
        return ""
    if not presigned and _PLAIN_QUERY.fullmatch(query):  # nothing to re-encode
        # sorted by key, then value: "a=1" < "a-b=1" although "-" sorts before "="
        return "&".join(sorted(query.split("&"), key=lambda piece: piece.partition("=")))
    pairs = []
    for piece in query.split("&"):
        if not piece:
            continue
        key, _, value = piece.partition("=")
        if presigned and key == "X-Amz-Signature":
            continue
        pairs.append((_encode_component(key), _encode_component(value)))
    pairs.sort()
    return "&".join(f"{k}={v}" for k, v in pairs)


_CACHED_TARGET = 1024  # longer targets are canonicalised afresh: the cache stays small


@lru_cache(maxsize=1024)  # a client calls the same few targets again and again
def _canonical_target(target: str, presigned: bool) -> tuple[str, str]:
    """The canonical URI and query of a raw request target."""
    path, _, query = target.partition("?")
    return canonical_uri(path), canonical_query(query, presigned=presigned)


@lru_cache(maxsize=4096)
def signing_key(secret: bytes, date: str, region: str, service: str) -> bytes:
    """The HMAC chain ``"AWS4"+secret → date → region → service → "aws4_request"``.
    It depends only on its arguments, so it is cached (per key and day)."""
    k = hmac.new(b"AWS4" + secret, date.encode(), hashlib.sha256).digest()
    k = hmac.new(k, region.encode(), hashlib.sha256).digest()
    k = hmac.new(k, service.encode(), hashlib.sha256).digest()
    return hmac.new(k, TERMINATOR.encode(), hashlib.sha256).digest()


@lru_cache(maxsize=256)  # every request of one second carries the same value
def _parse_amz_date(text: str) -> int:
    # YYYYMMDDTHHMMSSZ, by slicing (never strptime: DESIGN §7)
    if len(text) != 16 or text[8] != "T" or text[15] != "Z" or not (
            set(text[:8]) <= _DIGITS and set(text[9:15]) <= _DIGITS):
        raise _bad("X-Amz-Date must look like 20150830T123600Z")
    try:
        moment = _dt.datetime(int(text[0:4]), int(text[4:6]), int(text[6:8]), int(text[9:11]),
                              int(text[11:13]), int(text[13:15]), tzinfo=_dt.timezone.utc)
    except ValueError as exc:
        raise _bad("X-Amz-Date is not a valid date and time") from exc
    return int(moment.timestamp())


@dataclass(slots=True)  # not frozen: built per request, and frozen init costs µs
class SigV4Auth:
    """A parsed SigV4 signature, checked against policy and the clock; not yet verified."""

    request: Request
    key_id: str
    amz_date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    signed_at: int
    expires_at: int
    presigned: bool
    declared_payload: str | None  # x-amz-content-sha256 as sent; None: hash the body

    @property
    def scheme(self) -> str:
        return "sigv4-query" if self.presigned else "sigv4"

    @property
    def scope(self) -> str:
        return f"{self.amz_date[:8]}/{self.region}/{self.service}/{TERMINATOR}"

    def canonical_request(self, body: Body) -> str:
        req = self.request
        target = req.target
        canonical = (_canonical_target if len(target) <= _CACHED_TARGET
                     else _canonical_target.__wrapped__)
        lines = [req.method, *canonical(target, self.presigned)]
        index = req._index
        for name in self.signed_headers:
            values = [req.host() or ""] if name == "host" else index[name]
            if len(values) == 1:
                lines.append(f"{name}:{' '.join(values[0].split())}")
            else:
                lines.append(f"{name}:{','.join(' '.join(v.split()) for v in values)}")
        lines.append("")
        lines.append(";".join(self.signed_headers))
        lines.append(self.declared_payload or body.sha256().hex())
        return "\n".join(lines)

    def string_to_sign(self, body: Body) -> str:
        creq = hashlib.sha256(utf8(self.canonical_request(body))).hexdigest()
        return f"{ALGORITHM}\n{self.amz_date}\n{self.scope}\n{creq}"

    def verify(self, secret: bytes, body: Body, derived: Derived | None = None) -> Verified:
        """Check the MAC with ``secret`` and the body against what was signed.
        ``derived``: the caller's memo of this secret's signing keys, per (date, region,
        service) — a key cache keeps one per key, so that however many keys are in use,
        each derives its signing key once a day instead of thrashing a shared LRU. It
        holds bytes, not keyed HMAC objects: a dict of bytes is invisible to the cyclic
        garbage collector, which would otherwise walk two more objects per cached key
        (the keyed contexts of :func:`hmac_sha256` are a bounded LRU instead)."""
        scope = (self.amz_date[:8], self.region, self.service)
        key = None if derived is None else derived.get(scope)
        if key is None:
            key = signing_key(secret, *scope)
            if derived is not None:
                derived[scope] = key
        expected = hmac_sha256(key, self.string_to_sign(body).encode("ascii"))
        if not hmac.compare_digest(expected.hex().encode("ascii"),
                                   self.signature.encode("ascii")):
            raise SignatureError("signature_invalid", "the signature does not match the request")
        declared = self.declared_payload
        body_signed = declared != UNSIGNED_PAYLOAD
        if declared is not None and body_signed and not hmac.compare_digest(
                declared.encode("ascii"), body.sha256().hex().encode("ascii")):
            raise SignatureError("signature_invalid",
                                 "the body does not match x-amz-content-sha256")
        scheme = self.scheme
        components = _components(self.signed_headers, body_signed)
        token = hashlib.sha256(b"\0".join((scheme.encode(), self.key_id.encode(),
                                           self.signature.encode()))).digest()[:16]
        return Verified(self.key_id, scheme, components, self.signed_at, self.expires_at, token,
                        body_signed)


@lru_cache(maxsize=256)
def _components(signed_headers: tuple[str, ...], body_signed: bool) -> tuple[str, ...]:
    return ("@method", "@path", "@query", *signed_headers, *(("@body",) if body_signed else ()))


@lru_cache(maxsize=4096)  # one value per key and day: parsed once
def _credential_parts(value: str) -> tuple[str, str, str, str]:
    parts = value.split("/")
    if len(parts) != 5:
        raise _bad("Credential must be KEYID/YYYYMMDD/region/service/aws4_request")
    key_id, date, region, service, terminator = parts
    if not _KEY_ID_RE.fullmatch(key_id):
        raise _bad("the access key ID in Credential is empty or has illegal characters")
    if terminator != TERMINATOR:
        raise _bad("the credential scope must end with aws4_request")
    return key_id, date, region, service


def _credential(value: str, amz_date: str, policy: Policy) -> tuple[str, str, str]:
    key_id, date, region, service = _credential_parts(value)
    if date != amz_date[:8]:
        raise _bad("the credential scope date does not match X-Amz-Date")
    if region not in policy.sigv4_regions:
        raise SignatureError("signature_invalid",
                             f"the credential scope region {region!r} is not accepted here")
    if service != policy.sigv4_service:
        raise SignatureError("signature_invalid",
                             f"the credential scope service {service!r} is not accepted here")
    return key_id, region, service


@lru_cache(maxsize=256)
def _signed_header_list(value: str) -> tuple[str, ...]:
    if not _SIGNED_HEADERS_RE.fullmatch(value):
        raise _bad("SignedHeaders must be lower-case header names separated by ';'")
    names = tuple(value.split(";"))
    if list(names) != sorted(set(names)):
        raise _bad("SignedHeaders must be sorted and without repeats")
    return names


def _signed_headers(value: str, request: Request, *, header_auth: bool) -> tuple[str, ...]:
    names = _signed_header_list(value)
    for name in ("host", "x-amz-date") if header_auth else ("host",):
        if name not in names:
            raise SignatureError("signature_invalid", f"the signature must cover the {name} header")
    for name in request.header_names():
        if name.startswith("x-amz-") and name != "x-amz-content-sha256" and name not in names:
            raise SignatureError("signature_invalid",
                                 f"the {name} header is present but not signed")
    for name in names:
        if name == "host":
            if request.host() is None:
                raise _bad("the signed host header is absent")
            request.single_header("host")
        elif not request.has_header(name):
            raise _bad(f"the signed header {name} is absent")
    return names


def _declared_payload(request: Request, policy: Policy) -> str | None:
    if request.has_header("content-encoding") and "aws-chunked" in ",".join(
            request.header_values("content-encoding")).lower():
        raise SignatureError("unsupported_payload", "aws-chunked bodies are not accepted")
    declared = request.single_header("x-amz-content-sha256")
    if declared is None:
        return None
    if declared.startswith("STREAMING-"):
        raise SignatureError("unsupported_payload",
                             "streaming (chunk-signed) payloads are not accepted")
    if declared == UNSIGNED_PAYLOAD:
        if not policy.allow_unsigned_payload:
            raise SignatureError("unsupported_payload",
                                 "this route does not accept UNSIGNED-PAYLOAD")
        return declared
    if len(declared) != 64 or not set(declared) <= _HEX:
        raise _bad("x-amz-content-sha256 must be 64 lower-case hex digits or UNSIGNED-PAYLOAD")
    return declared


def _check_signature_hex(value: str) -> str:
    if not _SIGNATURE_RE.fullmatch(value):
        raise _bad("the signature must be 64 lower-case hex digits")
    return value


def _authorization_fields(authorization: str) -> dict[str, str]:
    algorithm, _, rest = authorization.partition(" ")
    if algorithm != ALGORITHM:
        raise _bad(f"unsupported algorithm (only {ALGORITHM} is accepted)")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, eq, value = part.strip().partition("=")
        if not eq or name not in ("Credential", "SignedHeaders", "Signature"):
            raise _bad("the Authorization header must hold Credential, SignedHeaders "
                       "and Signature, each once")
        if name in fields:
            raise _bad(f"{name} appears more than once in the Authorization header")
        fields[name] = value
    if len(fields) != 3:
        raise _bad("the Authorization header must hold Credential, SignedHeaders and Signature")
    return fields


def parse_header_auth(request: Request, authorization: str, policy: Policy,
                      now: float) -> SigV4Auth:
    """Parse ``Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...``."""
    fast = _AUTHORIZATION_RE.fullmatch(authorization)
    if fast:  # (its signature is 64 lower-case hex digits already)
        credential, signed_headers_text, signature = fast.groups()
    else:
        fields = _authorization_fields(authorization)
        credential = fields["Credential"]
        signed_headers_text = fields["SignedHeaders"]
        signature = _check_signature_hex(fields["Signature"])
    amz_date = request.single_header("x-amz-date")
    if amz_date is None:
        raise _bad("the X-Amz-Date header is required")
    signed_at = _parse_amz_date(amz_date)
    key_id, region, service = _credential(credential, amz_date, policy)
    signed_headers = _signed_headers(signed_headers_text, request, header_auth=True)
    if abs(now - signed_at) > policy.clock_skew:
        raise SignatureError("request_expired", "X-Amz-Date is outside the allowed clock window")
    return SigV4Auth(
        request=request, key_id=key_id, amz_date=amz_date, region=region, service=service,
        signed_headers=signed_headers, signature=signature, signed_at=signed_at,
        expires_at=signed_at + int(policy.clock_skew), presigned=False,
        declared_payload=_declared_payload(request, policy),
    )


def query_auth_params(query: str | None) -> dict[str, list[str]]:
    """The ``X-Amz-*`` authentication parameters of a raw query, percent-decoded,
    each with every value it was given (so repeats can be refused)."""
    found: dict[str, list[str]] = {}
    if not query or "X-Amz-" not in query:
        return found
    for piece in query.split("&"):
        key, _, value = piece.partition("=")
        if key in QUERY_AUTH_PARAMS:
            decoded = unquote_to_bytes(utf8(value)).decode("utf-8", "replace")
            found.setdefault(key, []).append(decoded)
    return found


def parse_query_auth(request: Request, params: dict[str, list[str]], policy: Policy,
                     now: float) -> SigV4Auth:
    """Parse a presigned URL's ``X-Amz-*`` parameters (DESIGN §2.1 "Presigned URLs")."""
    for name, values in params.items():
        if len(values) > 1:
            raise SignatureError("ambiguous_auth", f"the {name} parameter appears more than once")
    missing = [n for n in QUERY_AUTH_PARAMS if n not in params]
    if missing:
        raise _bad(f"the presigned URL lacks {', '.join(missing)}")
    one = {name: values[0] for name, values in params.items()}
    if one["X-Amz-Algorithm"] != ALGORITHM:
        raise _bad(f"unsupported algorithm (only {ALGORITHM} is accepted)")
    if request.method not in policy.presigned_methods:
        raise _bad(f"presigned URLs are not accepted for {request.method[:16]} on this route")
    amz_date = one["X-Amz-Date"]
    signed_at = _parse_amz_date(amz_date)
    key_id, region, service = _credential(one["X-Amz-Credential"], amz_date, policy)
    signed_headers = _signed_headers(one["X-Amz-SignedHeaders"], request, header_auth=False)
    signature = _check_signature_hex(one["X-Amz-Signature"])
    expires_text = one["X-Amz-Expires"]
    if not expires_text or len(expires_text) > 6 or not set(expires_text) <= _DIGITS:
        raise _bad("X-Amz-Expires must be a number of seconds")
    expires = int(expires_text)
    if not 1 <= expires <= MAX_PRESIGN_EXPIRES:
        raise _bad("X-Amz-Expires must be between 1 and 604800 seconds")
    if expires > policy.max_presign_expires:
        raise _bad(f"X-Amz-Expires may be at most {int(policy.max_presign_expires)} seconds here")
    if not signed_at - policy.clock_skew <= now <= signed_at + expires:
        raise SignatureError("request_expired", "the presigned URL is not valid at this time")
    return SigV4Auth(
        request=request, key_id=key_id, amz_date=amz_date, region=region, service=service,
        signed_headers=signed_headers, signature=signature, signed_at=signed_at,
        expires_at=signed_at + expires, presigned=True,
        declared_payload=_declared_payload(request, policy),
    )
