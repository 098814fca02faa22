"""A small signer for both schemes, for the SDK and the benchmarks.

It builds the canonical forms with the verifier's own code, so it proves nothing
about interoperability by itself: the tests check the verifier against botocore,
curl and http-message-signatures, and this signer against those verifiers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterable, Sequence
from urllib.parse import quote

from .message import Body, Policy, Request, utf8
from .rfc9421 import RFC9421Auth, coverage
from .sfv import InnerList, Item, parse_item, serialize_inner_list
from .sigv4 import ALGORITHM, UNSIGNED_PAYLOAD, SigV4Auth, signing_key

__all__ = ["default_components", "presign_sigv4", "sign_rfc9421", "sign_sigv4"]

Headers = Sequence[tuple[str, str]]


def _amz_date(now: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(int(now)))


def _hmac_hex(auth: SigV4Auth, secret: bytes, body: Body) -> str:
    key = signing_key(secret, auth.amz_date[:8], auth.region, auth.service)
    return hmac.new(key, auth.string_to_sign(body).encode("ascii"), hashlib.sha256).hexdigest()


def sign_sigv4(method: str, target: str, host: str, headers: Headers, body: bytes, *,
               key_id: str, secret: bytes, now: float, region: str = "local",
               service: str = "gateway", unsigned_payload: bool = False) -> list[tuple[str, str]]:
    """Sign with SigV4 header auth. ``headers`` are all signed (with ``host`` and
    ``x-amz-date``); returns the headers to add: ``X-Amz-Date``, maybe
    ``X-Amz-Content-Sha256: UNSIGNED-PAYLOAD``, and ``Authorization``."""
    amz_date = _amz_date(now)
    added = [("X-Amz-Date", amz_date)]
    if unsigned_payload:
        added.append(("X-Amz-Content-Sha256", UNSIGNED_PAYLOAD))
    all_headers = (("Host", host), *headers, *added)
    names = tuple(sorted({n.lower() for n, _ in all_headers}))
    request = Request(method, target, all_headers)
    auth = SigV4Auth(
        request=request, key_id=key_id, amz_date=amz_date, region=region, service=service,
        signed_headers=names, signature="", signed_at=int(now), expires_at=int(now),
        presigned=False, declared_payload=UNSIGNED_PAYLOAD if unsigned_payload else None)
    scope = auth.scope
    signature = _hmac_hex(auth, secret, Body(body))
    added.append(("Authorization", f"{ALGORITHM} Credential={key_id}/{scope}, "
                                   f"SignedHeaders={';'.join(names)}, Signature={signature}"))
    return added


def presign_sigv4(method: str, target: str, host: str, *, key_id: str, secret: bytes,
                  now: float, expires: int, region: str = "local", service: str = "gateway",
                  body: bytes = b"") -> str:
    """A presigned target: ``target`` with the six ``X-Amz-*`` parameters appended."""
    amz_date = _amz_date(now)
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    params = (f"X-Amz-Algorithm={ALGORITHM}&X-Amz-Credential={quote(key_id + '/' + scope, safe='')}"
              f"&X-Amz-Date={amz_date}&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host")
    unsigned = target + ("&" if "?" in target else "?") + params
    request = Request(method, unsigned, (("Host", host),))
    auth = SigV4Auth(
        request=request, key_id=key_id, amz_date=amz_date, region=region, service=service,
        signed_headers=("host",), signature="", signed_at=int(now), expires_at=int(now),
        presigned=True, declared_payload=None)
    return f"{unsigned}&X-Amz-Signature={_hmac_hex(auth, secret, Body(body))}"


def default_components(target: str, headers: Headers, body: bytes) -> list[str]:
    """The gateway's default policy (DESIGN §2.1), plus content-type when sent (RFC 9530)."""
    names = {n.lower() for n, _ in headers}
    components = ["@method", "@authority", "@path"]
    if "?" in target:
        components.append("@query")
    if body:
        components.append("content-digest")
        if "content-type" in names:
            components.append("content-type")
    if "x-gateway-nonce" in names:
        components.append("x-gateway-nonce")
    return components


def sign_rfc9421(method: str, target: str, host: str, headers: Headers, body: bytes, *,
                 key_id: str, secret: bytes, now: float, scheme: str = "http",
                 components: Iterable[str] | None = None, label: str = "sig1",
                 nonce: str | None = None, expires: int | None = None,
                 digest: str = "sha-256") -> list[tuple[str, str]]:
    """Sign with RFC 9421 ``hmac-sha256``; returns the headers to add
    (``Content-Digest`` when there is a body, ``Signature-Input``, ``Signature``)."""
    added: list[tuple[str, str]] = []
    if body:
        raw = hashlib.sha256(body) if digest == "sha-256" else hashlib.sha512(body)
        added.append(("Content-Digest", f"{digest}=:{base64.b64encode(raw.digest()).decode()}:"))
    all_headers = (("Host", host), *headers, *added)
    if components is None:
        components = default_components(target, all_headers, body)
    params: list[tuple[str, object]] = [("created", int(now))]
    if expires is not None:
        params.append(("expires", int(expires)))
    if nonce is not None:
        params.append(("nonce", nonce))
    params += [("keyid", key_id), ("alg", "hmac-sha256")]
    # plain names, or serialised identifiers such as '"@query-param";name="a"'
    items = tuple(parse_item(c) if c.startswith('"') else Item(c) for c in components)
    inner = InnerList(items, tuple(params))
    ids, covered = coverage(items)
    auth = RFC9421Auth(
        request=Request(method, target, all_headers, scheme=scheme), label=label, key_id=key_id,
        components=inner.items, ids=ids, covered=covered, signature_params=serialize_inner_list(inner), signature=b"",
        signed_at=int(now), expires_at=int(now), nonce=nonce, policy=Policy())
    mac = hmac.new(secret, utf8(auth.signature_base()), hashlib.sha256).digest()
    added.append(("Signature-Input", f"{label}={auth.signature_params}"))
    added.append(("Signature", f"{label}=:{base64.b64encode(mac).decode()}:"))
    return added
