"""Signers for both schemes, over ``gateway.signing.signer``.

Each ``sign()`` returns the header lines to add to the request, among them a
fresh random ``X-Gateway-Nonce`` that the signature covers: SigV4 has
one-second resolution and no nonce, so without it two identical requests in
one second would be rejected as replays (DESIGN §2.1). The clock and the nonce
are parameters, read or drawn only when not given (as in ``fernet``).

``url`` is the absolute URL exactly as it goes on the wire (already
percent-encoded: nothing is re-encoded here). Every header passed in is signed,
except stale copies of those the signer sets itself (``ADDED_HEADERS``);
``Host`` defaults to the URL's authority without a default port.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from typing import Protocol

from ..signing.signer import sign_rfc9421, sign_sigv4
from ._errors import UnsignableBody

__all__ = ["ADDED_HEADERS", "NONCE_HEADER", "Key", "RFC9421Signer", "SigV4Signer", "new_nonce",
           "split_url"]

NONCE_HEADER = "X-Gateway-Nonce"
# what the signers add; stale copies (a previous attempt's) are never signed or sent twice
ADDED_HEADERS = frozenset({"authorization", "x-amz-date", "x-amz-content-sha256",
                           "x-gateway-nonce", "content-digest", "signature-input", "signature"})
_DEFAULT_PORTS = {"http": "80", "https": "443"}

Headers = Iterable[tuple[str, str]]


class Key(Protocol):
    """What a signer needs of a key (``Credentials`` is one)."""

    @property
    def key_id(self) -> str: ...

    @property
    def secret_bytes(self) -> bytes: ...


def new_nonce() -> str:
    """128 random bits, URL-safe base64 (22 characters)."""
    return secrets.token_urlsafe(16)


def split_url(url: str) -> tuple[str, str, str]:
    """``(scheme, host, target)`` of an absolute URL, by slicing (no re-encoding):
    the host loses userinfo and a default port, the target keeps the query."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        raise ValueError("an absolute URL (scheme://host/path) is required")
    scheme = scheme.lower()
    end = len(rest)
    for stop in "/?#":
        pos = rest.find(stop)
        if 0 <= pos < end:
            end = pos
    authority, target = rest[:end].rpartition("@")[2], rest[end:].partition("#")[0]
    if not target.startswith("/"):
        target = "/" + target
    host, colon, port = authority.rpartition(":")
    if colon and not authority.endswith("]") and port == _DEFAULT_PORTS.get(scheme):
        authority = host
    return scheme, authority.lower(), target


def _prepare(url: str, headers: Headers) -> tuple[str, str, str, list[tuple[str, str]]]:
    scheme, host, target = split_url(url)
    rest = []
    for name, value in headers:
        lower = name.lower()
        if lower == "host":
            host = value
        elif lower not in ADDED_HEADERS:
            rest.append((name, value))
    return scheme, host, target, rest


class SigV4Signer:
    """AWS Signature Version 4, header form (``Authorization: AWS4-HMAC-SHA256 ...``).

    ``unsigned_payload=True`` lets a body that cannot be hashed (a stream, passed
    as ``body=None``) go out as ``X-Amz-Content-Sha256: UNSIGNED-PAYLOAD``; the
    gateway accepts that only on routes that allow it. Bytes are always hashed.
    """

    def __init__(self, *, region: str = "local", service: str = "gateway",
                 unsigned_payload: bool = False) -> None:
        self.region = region
        self.service = service
        self.unsigned_payload = unsigned_payload

    def sign(self, key: Key, method: str, url: str, headers: Headers = (),
             body: bytes | None = b"", *, now: float | None = None,
             nonce: str | None = None) -> list[tuple[str, str]]:
        _, host, target, rest = _prepare(url, headers)
        if body is None and not self.unsigned_payload:
            raise UnsignableBody(
                "a streamed body cannot be hashed for SigV4: pass bytes or a file, or "
                "create the signer with unsigned_payload=True (the route must allow "
                "UNSIGNED-PAYLOAD)")
        added = [(NONCE_HEADER, nonce or new_nonce())]
        added += sign_sigv4(method, target, host, [*rest, *added], body or b"",
                            key_id=key.key_id, secret=key.secret_bytes,
                            now=time.time() if now is None else now, region=self.region,
                            service=self.service, unsigned_payload=body is None)
        return added


class RFC9421Signer:
    """RFC 9421 HTTP Message Signatures, ``alg="hmac-sha256"``, with an RFC 9530
    ``Content-Digest`` for a body. Covered by default: ``@method``,
    ``@authority``, ``@path``, ``@query`` (when there is one), ``content-digest``
    and ``content-type`` (with a body) and ``x-gateway-nonce`` — the gateway's
    default policy. The nonce is also the ``nonce`` signature parameter.
    ``expires_in`` (seconds) adds an ``expires`` parameter.
    """

    def __init__(self, *, digest: str = "sha-256", expires_in: int | None = None,
                 label: str = "sig1") -> None:
        if digest not in ("sha-256", "sha-512"):
            raise ValueError("digest must be 'sha-256' or 'sha-512'")
        self.digest = digest
        self.expires_in = expires_in
        self.label = label

    def sign(self, key: Key, method: str, url: str, headers: Headers = (),
             body: bytes | None = b"", *, now: float | None = None,
             nonce: str | None = None) -> list[tuple[str, str]]:
        scheme, host, target, rest = _prepare(url, headers)
        if body is None:
            raise UnsignableBody(
                "a streamed body cannot be hashed for Content-Digest: pass bytes or a file")
        nonce = nonce or new_nonce()
        now = time.time() if now is None else now
        added = [(NONCE_HEADER, nonce)]
        expires = None if self.expires_in is None else int(now) + self.expires_in
        added += sign_rfc9421(method, target, host, [*rest, *added], body, key_id=key.key_id,
                              secret=key.secret_bytes, now=now, scheme=scheme, label=self.label,
                              nonce=nonce, expires=expires, digest=self.digest)
        return added
