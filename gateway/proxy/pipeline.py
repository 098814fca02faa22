"""The request pipeline (DESIGN §3.1): every step a request takes, top to bottom, in
:meth:`DataPlane.handle`. Each check raises a catalogue ``GatewayError``; nothing
here writes to the store or awaits Redis per request.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

import orjson
from aiohttp import web

from ..config import Config
from ..errors import GatewayError, SignatureError
from ..keys.formats import is_well_formed_key_id
from ..keys.lifecycle import KeyManager
from ..keys.record import KeyRecord, rfc3339
from ..signing import EMPTY_BODY, Body, Policy, Request, Verified, parse
from .accesslog import AccessLog
from .forward import Forwarder, UpstreamRequest
from .headers import TrustedProxies, upstream_headers
from .keycache import KeyCache, KeyEntry
from .limits import Limits
from .reserved import self_rotate, whoami
from .routes import RouteTable, check_target, scope_allows
from .usage import UsageRecorder

__all__ = ["Authenticated", "DataPlane", "KeyRefused", "decoded_headers", "error_response"]

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # a client's X-Request-Id we pass on
# verified against when the key ID is unknown, so both cost the same (DESIGN §5)
_DUMMY_SECRET = ("gws_" + secrets.token_urlsafe(40)).encode("ascii")
_PRESIGN_PARAMS = ("X-Amz-Algorithm=", "X-Amz-Credential=", "X-Amz-Date=", "X-Amz-Expires=",
                   "X-Amz-SignedHeaders=", "X-Amz-Signature=")


def error_response(exc: GatewayError, extra: list[tuple[str, str]] | None = None
                   ) -> web.Response:
    response = web.Response(status=exc.status, body=orjson.dumps(exc.body()),
                            content_type="application/json")
    for name, value in extra or ():
        response.headers[name] = value
    return response


class KeyRefused(GatewayError):
    """A refusal after the MAC verified (replayed, revoked, expired, inactive, MFA or
    source policy): the key is known, so the request counts in its activity — what a
    leaked key was tried for, and from where, after it died."""

    def __init__(self, refusal: GatewayError, record: KeyRecord) -> None:
        super().__init__(refusal.code, refusal.message)
        self.record = record


class Authenticated(NamedTuple):
    facts: Verified
    record: KeyRecord
    body: bytes


# upper bounds (seconds) of the latency histogram's buckets; the last one is +Inf
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)


@dataclass(slots=True)
class Counters:
    """Plain counters, rendered only when /metrics is scraped."""

    requests: dict[tuple[str, int, str], int] = field(default_factory=dict)
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0

    def count(self, route: str, status: int, outcome: str) -> None:
        key = (route, status, outcome)
        self.requests[key] = self.requests.get(key, 0) + 1

    def observe(self, seconds: float) -> None:
        self.latency[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds


class DataPlane:
    def __init__(self, config: Config, cache: KeyCache, forwarder: Forwarder,
                 usage: UsageRecorder, access_log: AccessLog, limits: Limits,
                 manager: KeyManager | None = None) -> None:
        self.config = config
        self.manager = manager  # lifecycle changes a key makes to itself (self-rotation)
        self.routes = RouteTable(config.routes, config.auth)
        self.reserved_policy = Policy.from_config(config.auth)
        self.cache = cache
        self.forwarder = forwarder
        self.usage = usage
        self.access_log = access_log
        self.limits = limits
        self.trusted = TrustedProxies(config.server.trusted_proxies)
        self.counters = Counters()
        self._max_headers = config.server.max_headers
        self._body_timeout = config.server.body_timeout
        self._scheme = config.server.public_scheme or None
        self._authority = config.server.public_authority or None
        self._inactivity = config.policy.inactivity
        self._warning = config.auth.expiry_warning
        self._request_prefix = uuid.uuid4().hex[:20]
        self._request_seq = 0

    def _new_request_id(self) -> str:
        # unique, not secret: a random per-process prefix and a counter (no syscall)
        self._request_seq += 1
        return f"{self._request_prefix}{self._request_seq:012x}"

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        now = time.time()
        offered = request.headers.get("X-Request-Id", "")
        request_id = (offered if offered and _REQUEST_ID.fullmatch(offered)
                      else self._new_request_id())
        response, record = await self._handle(request, now, request_id)
        elapsed = time.time() - now
        self.counters.observe(elapsed)
        if self.access_log.enabled:
            self.access_log.write({
                "at": now, "request_id": request_id,
                "peer": request.remote, "method": request.method[:16],
                "path": request.raw_path.partition("?")[0][:256], "status": response.status,
                "key_id": record.key_id if record else None,
                "principal": record.principal if record else None,
                "ms": round(elapsed * 1_000_000) / 1000})  # (round(x, 3) goes by a string)
        return response

    async def _handle(self, request: web.BaseRequest, now: float, request_id: str
                      ) -> tuple[web.StreamResponse, KeyRecord | None]:
        answer = [("X-Request-Id", request_id)]
        route_name = "-"
        record: KeyRecord | None = None
        method = request.method
        try:
            # 1. size of the head, target form and the path rule (400) — before anything else
            headers = decoded_headers(request, self._max_headers)
            path, query = check_target(request.raw_path)
            if request.headers.get("Upgrade"):
                raise GatewayError("not_implemented", "protocol upgrades are not supported")
            # 2. reserved endpoints, then the route (404 before any key lookup)
            reserved = path.startswith("/_gateway/")
            route = None if reserved else self.routes.match(path)
            if route is None and not reserved:
                raise GatewayError("route_not_found", "no route serves this path")
            route_name = route.prefix if route else "/_gateway/"  # bounded label values
            # 3. a declared body over the limit is refused before reading it (413)
            max_body = route.max_body if route else 64 * 1024
            declared = request.content_length
            if declared is not None and declared > max_body:
                raise GatewayError("body_too_large", f"the body exceeds {max_body} bytes")
            # 4-9. signature, key, MAC, replay, key status and policy
            auth = await self.authenticate(
                request, headers, policy=route.policy if route else self.reserved_policy,
                max_body=max_body, replay=route is None or route.replay_applies(method),
                now=now, answer=answer)
            record, facts, body = auth.record, auth.facts, auth.body
            if route is None:
                response = await self._reserved(request, path, auth, answer)
                self._count_use(request, record, route_name, response.status, now)
                return response, record
            required = route.required_scope(method)
            if required is not None and not scope_allows(record.scopes, required):
                raise GatewayError("scope_denied", f"the key may not {method[:16]} here")
            # rate limit: after verification, so strangers cannot spend someone's quota
            if record.rate_limit is not None:
                allowed, wait = await self.limits.allow(
                    record.key_id, record.rate_limit.rps, record.rate_limit.burst, now)
                if not allowed:
                    answer.append(("Retry-After", str(max(1, math.ceil(wait)))))
                    raise GatewayError("rate_limited", "the key's rate limit is exceeded")
            # 10. forward exactly what was verified
            target = route.upstream_target(path, _strip_presign(query, facts))
            peer = request.remote or ""
            upstream = UpstreamRequest(method, target, upstream_headers(
                headers, peer=peer, peer_trusted=self.trusted.trusts(peer),
                scheme=request.scheme, host=request.host,
                identity=[("X-Gateway-Key-Id", record.key_id),
                          ("X-Gateway-Principal", record.principal),
                          ("X-Request-Id", request_id)],
                connection=request.headers.getall("Connection", ())), body)
            response = await self.forwarder.forward(request, route, upstream, answer)
            self.counters.count(route_name, response.status, "ok")
            self._count_use(request, record, route_name, response.status, now)
            return response, record
        except GatewayError as exc:
            self.counters.count(route_name, exc.status, exc.code)
            if isinstance(exc, KeyRefused):
                record = exc.record
            if record is not None:  # refused after the key proved itself
                self._count_use(request, record, route_name, exc.status, now)
            return error_response(exc, answer), record

    def _count_use(self, request: web.BaseRequest, record: KeyRecord, route: str, status: int,
                   now: float) -> None:
        self.usage.count(record.key_id, route, status, self._client(request), now)

    def _client(self, request: web.BaseRequest) -> str:
        """The client's address: the peer, or what trusted proxies in front of us say."""
        peer = request.remote or ""
        if not self.trusted:  # (then X-Forwarded-For is never believed: do not even read it)
            return peer
        return self.trusted.client_address(peer, _forwarded_for(request))

    async def authenticate(self, request: web.BaseRequest, headers: tuple[tuple[str, str], ...],
                           *, policy: Policy, max_body: int, replay: bool, now: float,
                           answer: list[tuple[str, str]], data_plane: bool = True
                           ) -> Authenticated:
        """Steps 4-9 of the pipeline, shared with the admin listener (whose callers are
        not subject to ``reject_keys_without_mfa``: ``data_plane=False``). Appends the
        expiry warning to ``answer`` as soon as the signature has verified."""
        # 4. the signature: scheme, structure, policy, clock (400/401), no secret yet
        signed = Request(request.method, request.raw_path, headers,
                         scheme=self._scheme or request.scheme, authority=self._authority)
        auth = parse(signed, policy, now)
        # 5. a malformed key ID is refused without any lookup or reading the body (the
        # format is public: this tells nothing; only well-formed IDs are ever cached)
        if auth.key_id not in self.cache and not is_well_formed_key_id(auth.key_id):
            raise SignatureError("signature_invalid", "the signature does not match the request")
        # 6. the body, under the limit (answers Expect: 100-continue first)
        body = await self._read_body(request, max_body) if request.body_exists else b""
        # 7. the key (cache, then store: 503 only if the store is down and it is not cached)
        entry = self.cache.fresh(auth.key_id)
        if entry is False:
            entry = await self.cache.get(auth.key_id)
        # 8. the MAC, against a dummy secret when the key is unknown (same cost, same code)
        facts = auth.verify(entry.secret if entry else _DUMMY_SECRET,
                            Body(body) if body else EMPTY_BODY,
                            entry.derived if entry else None)
        if entry is None:
            raise SignatureError("signature_invalid", "the signature does not match the request")
        record = entry.record
        if entry.deadline - now <= self._warning:
            answer.append(("Gateway-Key-Expires", rfc3339(record.deadline(self._inactivity)) or ""))
        # 9. replay, then key status and policy (only now may we say why)
        try:
            if replay and not await self.limits.first_use(facts.replay_token,
                                                          facts.replay_until, now):
                raise GatewayError("replayed", "this signed request was already used")
            self._check_key(entry, request, now, data_plane=data_plane)
        except GatewayError as exc:
            raise KeyRefused(exc, record) from None
        self.usage.record(record.key_id, now)
        return Authenticated(facts, record, body)

    async def _read_body(self, request: web.BaseRequest, limit: int) -> bytes:
        if request.headers.get("Expect", "").lower() == "100-continue":
            # the low-level server does not answer it: every check that needs no body passed
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self._body_timeout):
                while chunk := await request.content.readany():
                    size += len(chunk)
                    if size > limit:
                        raise GatewayError("body_too_large", f"the body exceeds {limit} bytes")
                    chunks.append(chunk)
        except TimeoutError:
            raise GatewayError("malformed_request", "the body did not arrive in time") from None
        return b"".join(chunks)

    def _check_key(self, entry: KeyEntry, request: web.BaseRequest, now: float, *,
                   data_plane: bool) -> None:
        status = entry.status(now)
        if status == "revoked":
            raise GatewayError("key_revoked", "the key has been revoked")
        if status == "expired":
            raise GatewayError("key_expired", "the key has expired")
        if status == "inactive":
            raise GatewayError("key_inactive", "the key expired after a long time unused")
        record = entry.record
        if data_plane and self.config.policy.reject_keys_without_mfa and \
                not record.issued_with_mfa:
            raise GatewayError("mfa_required", "keys issued without MFA are refused")
        if entry.sources is not None:
            if not entry.sources.trusts(self._client(request)):
                raise GatewayError("source_denied", "the key may not be used from this address")

    async def _reserved(self, request: web.BaseRequest, path: str, auth: Authenticated,
                        answer: list[tuple[str, str]]) -> web.StreamResponse:
        record = auth.record
        if path == "/_gateway/whoami":
            if request.method != "GET":
                raise GatewayError("invalid_request", "whoami answers GET only")
            status, body = 200, whoami(self.config.policy, record, datetime.now(UTC))
        elif path == "/_gateway/self/rotate":
            if request.method != "POST":
                raise GatewayError("invalid_request", "self/rotate answers POST only")
            if self.manager is None:
                raise GatewayError("not_implemented", "this listener cannot issue keys")
            now = datetime.now(UTC)
            issued = await self_rotate(self.manager, record, auth.body,
                                       source=self._client(request), now=now)
            # this instance sees the change at once, the others within one change poll
            self.cache.drop((record.key_id, issued.record.key_id))
            status, body = 201, issued.to_api(now, self._inactivity)
        else:
            raise GatewayError("route_not_found", "no such gateway endpoint")
        response = web.Response(status=status, body=orjson.dumps(body),
                                content_type="application/json")
        for name, value in answer:
            response.headers[name] = value
        return response


def _forwarded_for(request: web.BaseRequest) -> str | None:
    """Every X-Forwarded-For line, joined: a load balancer may append a line of its own
    after one the client forged, and the rightmost entries are the ones to believe."""
    lines = request.headers.getall("X-Forwarded-For", ())
    return ", ".join(lines) if lines else None


def decoded_headers(request: web.BaseRequest, limit: int) -> tuple[tuple[str, str], ...]:
    """Raw header lines as text, with their total size checked against [server] max_headers."""
    size = 0
    out = []
    for name, value in request.raw_headers:
        size += len(name) + len(value) + 4
        out.append((name.decode("latin-1"), value.decode("utf-8", "surrogateescape")))
    if size > limit:
        raise GatewayError("headers_too_large", f"the request headers exceed {limit} bytes")
    return tuple(out)


def _strip_presign(query: str | None, facts: Verified) -> str | None:
    """Presigned URLs: the six auth parameters never reach the upstream's logs;
    every other byte of the query stays as sent (DESIGN §2.1)."""
    if query is None or facts.scheme != "sigv4-query":
        return query
    kept = [p for p in query.split("&") if not p.startswith(_PRESIGN_PARAMS)]
    return "&".join(kept) if kept else None

