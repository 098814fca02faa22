"""RFC 9421 HTTP Message Signatures with ``hmac-sha256``, and RFC 9530 ``Content-Digest``.

Signature base (RFC 9421 §2.5): one line per covered component,
``"<component-id>": <value>``, then ``"@signature-params": <inner list>``, joined
by ``\\n``. Field values are trimmed and repeats joined with ``", "`` (§2.1).
Policy (which components must be covered) is checked apart from the MAC: the
RFC's own B.2.5 example verifies cryptographically yet covers neither
``@method`` nor ``@path``, so the default policy refuses it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote

from ..errors import SignatureError
from .message import Body, Derived, Policy, Request, Verified, hmac_sha256, utf8
from .sfv import InnerList, Item, SFVError, Token, parse_dictionary, serialize_inner_list, \
    serialize_item

__all__ = ["ALGORITHM", "RFC9421Auth", "coverage", "parse_signature"]

ALGORITHM = "hmac-sha256"
DERIVED = frozenset({"@method", "@target-uri", "@authority", "@scheme", "@request-target",
                     "@path", "@query", "@query-param"})
# What a covered component implies is covered too (DESIGN §2.1)
IMPLIES = {
    "@target-uri": ("@scheme", "@authority", "@path", "@query"),
    "@request-target": ("@path", "@query"),
}
SIGNATURE_PARAMS = {"created": int, "expires": int, "nonce": str, "alg": str, "keyid": str,
                    "tag": str}
_COMPONENT_NAME_RE = re.compile(r"@?[a-z0-9!#$%&'*+\-.^_`|~]+")
DEFAULT_PORTS = {"http": "80", "https": "443"}
DIGESTS = {"sha-256": Body.sha256, "sha-512": Body.sha512}


def _bad(message: str) -> SignatureError:
    return SignatureError("malformed_auth", message)


def _dictionary(request: Request, name: str) -> dict[str, Item | InnerList]:
    lines = request.header_values(name)
    try:
        return parse_dictionary(", ".join(lines))
    except SFVError as exc:
        raise _bad(f"the {name} header is not a valid structured field: {exc}") from exc


def _authority(request: Request) -> str:
    host = request.host()
    if host is None:
        raise _bad("the request has no Host to sign as @authority")
    host = host.lower()
    name, colon, port = host.rpartition(":")
    if colon and not host.endswith("]") and port == DEFAULT_PORTS.get(request.scheme.lower()):
        return name
    return host


def _query_param(request: Request, encoded_name: str) -> str:
    # RFC 9421 §2.2.8: form-decode the query, re-encode the one value
    name = unquote(encoded_name, errors="surrogateescape")
    pairs = parse_qsl(request.query or "", keep_blank_values=True, errors="surrogateescape")
    values = [v for k, v in pairs if k == name]
    if len(values) != 1:
        raise _bad(f"@query-param {encoded_name[:32]!r} must appear exactly once in the query")
    return quote(utf8(values[0]), safe="*").replace("~", "%7E")


def _component_value(request: Request, component: Item) -> str:
    name = str(component.value)
    if name == "@method":
        return request.method
    if name == "@authority":
        return _authority(request)
    if name == "@scheme":
        return request.scheme.lower()
    if name == "@target-uri":
        return f"{request.scheme.lower()}://{request.host() or ''}{request.target}"
    if name == "@request-target":
        return request.target
    if name == "@path":
        return request.path or "/"
    if name == "@query":
        return "?" + (request.query or "")
    if name == "@query-param":
        return _query_param(request, str(dict(component.params)["name"]))
    values = request.header_values(name)
    if not values:
        raise _bad(f"the covered header {name} is absent")
    return ", ".join(v.strip(" \t") for v in values)


@dataclass(slots=True)  # not frozen: built per request, and frozen init costs µs
class RFC9421Auth:
    """A parsed RFC 9421 signature, checked against the clock; not yet verified."""

    request: Request
    label: str
    key_id: str
    components: tuple[Item, ...]
    ids: tuple[str, ...]  # each component serialised, as the signature base quotes it
    covered: frozenset[str]  # component names, with what @target-uri etc. imply
    signature_params: str  # the serialised inner list, quoted as @signature-params
    signature: bytes
    signed_at: int
    expires_at: int
    nonce: str | None
    policy: Policy

    scheme = "rfc9421"

    def signature_base(self) -> str:
        lines = []
        for component, ident in zip(self.components, self.ids):
            value = _component_value(self.request, component)
            if "\n" in value or "\r" in value:
                raise _bad("a covered component contains a line break")
            lines.append(f"{ident}: {value}")
        lines.append(f'"@signature-params": {self.signature_params}')
        return "\n".join(lines)

    def check_coverage(self, body: Body) -> None:
        """The policy's minimum covered set (``@query`` only when there is a query;
        ``content-digest`` whenever there is a body, whatever the policy says)."""
        covered = self.covered
        for name in self.policy.required_components:
            if name == "@query" and self.request.query is None:
                continue
            if name == "content-digest" and body.length == 0:
                continue
            if name not in covered:
                raise SignatureError("signature_invalid", f"the signature must cover {name}")
        if body.length and "content-digest" not in covered:
            raise SignatureError("signature_invalid",
                                 "a request with a body must sign content-digest")

    def check_content_digest(self, body: Body) -> None:
        """RFC 9530: every sha-256 / sha-512 member must match the body received."""
        digests = _dictionary(self.request, "content-digest")
        checked = 0
        for algorithm, compute in DIGESTS.items():
            member = digests.get(algorithm)
            if member is None:
                continue
            if not isinstance(member, Item) or not isinstance(member.value, bytes):
                raise _bad(f"Content-Digest {algorithm} must be a byte sequence")
            if not hmac.compare_digest(member.value, compute(body)):
                raise SignatureError("signature_invalid", "the body does not match Content-Digest")
            checked += 1
        if not checked:
            raise _bad("Content-Digest must carry sha-256 or sha-512")

    def verify_mac(self, secret: bytes) -> None:
        """The cryptographic check alone (RFC 9421 §3.2), without the coverage policy."""
        base = utf8(self.signature_base())
        expected = hmac_sha256(secret, base)
        if not hmac.compare_digest(expected, self.signature):
            raise SignatureError("signature_invalid", "the signature does not match the request")

    def verify(self, secret: bytes, body: Body, derived: Derived | None = None) -> Verified:
        """Check coverage policy, the MAC with ``secret``, then the body digest
        (``derived`` is SigV4's: HMAC over a signature base needs no derived key)."""
        self.check_coverage(body)
        self.verify_mac(secret)
        if "content-digest" in self.covered:
            self.check_content_digest(body)
        if self.nonce is not None:
            material = b"\0".join((b"rfc9421-nonce", self.key_id.encode(), self.nonce.encode()))
        else:
            material = b"\0".join((b"rfc9421", self.key_id.encode(), self.signature))
        return Verified(
            key_id=self.key_id,
            scheme=self.scheme,
            components=tuple(i if c.params else str(c.value)
                             for c, i in zip(self.components, self.ids)),
            signed_at=self.signed_at,
            expires_at=self.expires_at,
            replay_token=hashlib.sha256(material).digest()[:16],
            body_signed="content-digest" in self.covered,
        )


def coverage(items: tuple[Item, ...]) -> tuple[tuple[str, ...], frozenset[str]]:
    """Serialised identifiers, and the names covered (with what they imply)."""
    names = {str(c.value) for c in items}
    for name in list(names):
        names.update(IMPLIES.get(name, ()))
    ids = tuple(serialize_item(c) if c.params else f'"{c.value}"' for c in items)
    return ids, frozenset(names)


def _components(inner: InnerList) -> tuple[Item, ...]:
    seen: set[str] = set()
    out = []
    for item in inner.items:
        if not isinstance(item.value, str) or isinstance(item.value, Token):
            raise _bad("covered components must be strings")
        name = item.value
        if not _COMPONENT_NAME_RE.fullmatch(name):
            raise _bad("covered components must be lower-case field names or derived components")
        params = dict(item.params)
        if name.startswith("@") and name not in DERIVED:
            raise _bad(f"unknown derived component {name[:32]}")
        if name == "@query-param":
            if set(params) != {"name"} or not isinstance(params["name"], str) \
                    or isinstance(params["name"], Token):
                raise _bad('@query-param needs exactly one string parameter "name"')
        elif params:
            raise _bad(f"component parameters on {name[:32]} are not supported")
        ident = serialize_item(item) if params else name
        if ident in seen:
            raise _bad(f"the component {ident[:40]} is covered twice")
        seen.add(ident)
        out.append(item)
    return tuple(out)


def _signature_params(inner: InnerList) -> dict[str, object]:
    params: dict[str, object] = {}
    for name, value in inner.params:
        expected = SIGNATURE_PARAMS.get(name)
        if expected is None:
            raise _bad(f"unknown signature parameter {name[:32]}")
        if type(value) is not expected:  # a Token is not a String, a bool not an Integer
            raise _bad(f"the signature parameter {name} must be "
                       f"{'an integer' if expected is int else 'a string'}")
        params[name] = value
    return params


def parse_signature(request: Request, policy: Policy, now: float) -> RFC9421Auth:
    """Parse ``Signature-Input`` and ``Signature`` (exactly one label) and check the clock."""
    inputs = _dictionary(request, "signature-input")
    signatures = _dictionary(request, "signature")
    if len(inputs) > 1 or len(signatures) > 1:
        raise SignatureError("ambiguous_auth", "exactly one signature label is accepted")
    if len(inputs) != 1 or len(signatures) != 1 or inputs.keys() != signatures.keys():
        raise _bad("Signature-Input and Signature must carry the same single label")
    (label, inner), = inputs.items()
    signature = signatures[label]
    if not isinstance(inner, InnerList):
        raise _bad("Signature-Input must be an inner list of components")
    if not isinstance(signature, Item) or not isinstance(signature.value, bytes):
        raise _bad("Signature must be a byte sequence")
    params = _signature_params(inner)
    alg = params.get("alg", ALGORITHM)
    if alg != ALGORITHM:
        raise _bad(f"unsupported alg (only {ALGORITHM} is accepted)")
    key_id = params.get("keyid")
    if not isinstance(key_id, str) or not key_id:
        raise _bad("the signature needs a keyid")
    created = params.get("created")
    if not isinstance(created, int):
        raise _bad("the signature needs a created time")
    expires = params.get("expires")
    if isinstance(expires, int) and expires < created:
        raise _bad("the signature expires before it was created")
    nonce = params.get("nonce")
    components = _components(inner)
    ids, covered = coverage(components)
    if abs(now - created) > policy.clock_skew:
        raise SignatureError("request_expired", "created is outside the allowed clock window")
    window_end = created + int(policy.clock_skew)
    if isinstance(expires, int):
        if now > expires:
            raise SignatureError("request_expired", "the signature has expired")
        window_end = min(window_end, expires)  # expires may shorten the window, never lengthen
    return RFC9421Auth(
        request=request, label=label, key_id=key_id, components=components,
        ids=ids, covered=covered,
        signature_params=serialize_inner_list(inner), signature=signature.value,
        signed_at=created, expires_at=window_end,
        nonce=nonce if isinstance(nonce, str) else None, policy=policy,
    )
