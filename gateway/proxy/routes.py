"""Route table, the path rule, and scopes (DESIGN §2.1 "One target, one meaning", §4 routes).

Pure functions and frozen data: the pipeline asks "which route?", "is this path
normalised?", "may these scopes call this method here?".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import lru_cache
from urllib.parse import urlsplit

from ..config import AuthConfig, RouteConfig
from ..errors import GatewayError
from ..signing import Policy

__all__ = ["Route", "RouteTable", "check_target", "scope_allows"]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Refused before routing: dot segments, empty segments, encoded dots/slashes/backslashes,
# encoded NUL, backslash, ';', NUL, and any byte outside printable ASCII.
_UNNORMALISED = re.compile(r"//|/\.\.?(?:/|$)|%2[eEfF]|%5[cC]|%00|[\\;\x00-\x20\x7f-\U0010ffff]")


def check_target(target: str) -> tuple[str, str | None]:
    """Split an origin-form target into (path, query) after the path rule; raises 400s."""
    if not target.startswith("/"):
        raise GatewayError("malformed_request", "only origin-form request targets are accepted")
    path, sep, query = target.partition("?")
    if _UNNORMALISED.search(path):
        raise GatewayError("path_not_normalized",
                           "the path has dot or empty segments, encoded separators or "
                           "characters that must be percent-encoded")
    return path, (query if sep else None)


@dataclass(frozen=True, slots=True)
class Route:
    prefix: str
    upstream: str  # scheme://host[:port], no trailing slash
    upstream_host: str
    upstream_port: int
    upstream_tls: bool
    scopes: dict[str, str]
    strip_prefix: bool
    max_body: int
    replay: str  # all | unsafe-methods | off
    timeout: float
    connect_timeout: float
    policy: Policy

    def required_scope(self, method: str) -> str | None:
        """The scope ``method`` needs here; ``None`` when the route names no scopes.
        A route with scopes for some methods refuses the others (empty string)."""
        if not self.scopes:
            return None
        return self.scopes.get(method) or self.scopes.get("*") or ""

    def replay_applies(self, method: str) -> bool:
        return self.replay == "all" or (self.replay == "unsafe-methods"
                                        and method not in SAFE_METHODS)

    def upstream_target(self, path: str, query: str | None) -> str:
        """The target sent upstream: the verified raw path (less the prefix when
        stripping) and the query, byte for byte."""
        if self.strip_prefix:
            path = "/" + path[len(self.prefix):].lstrip("/")
        return path if query is None else f"{path}?{query}"


def build_route(config: RouteConfig, auth: AuthConfig) -> Route:
    parts = urlsplit(config.upstream)
    tls = parts.scheme == "https"
    return Route(
        prefix=config.prefix,
        upstream=f"{parts.scheme}://{parts.netloc}",
        upstream_host=parts.hostname or "",
        upstream_port=parts.port or (443 if tls else 80),
        upstream_tls=tls,
        scopes=dict(config.scopes),
        strip_prefix=config.strip_prefix,
        max_body=config.max_body,
        replay=config.replay or auth.replay,
        timeout=config.timeout,
        connect_timeout=config.connect_timeout,
        policy=Policy.from_config(auth, config),
    )


class RouteTable:
    """Longest prefix wins."""

    def __init__(self, routes: Sequence[RouteConfig], auth: AuthConfig) -> None:
        self.routes = tuple(sorted((build_route(r, auth) for r in routes),
                                   key=lambda r: len(r.prefix), reverse=True))

    def match(self, path: str) -> Route | None:
        for route in self.routes:
            if path.startswith(route.prefix):
                return route
        return None


def scope_allows(granted: Iterable[str], required: str) -> bool:
    """Key scopes may use ``*`` wildcards: ``api:*`` grants ``api:read``; ``*`` grants all."""
    if isinstance(granted, tuple):  # a key record's: the same few pairs, request after request
        return _tuple_allows(granted, required)
    return _allows(granted, required)


def _allows(granted: Iterable[str], required: str) -> bool:
    return bool(required) and any(
        g == required or ("*" in g and fnmatchcase(required, g)) for g in granted)


@lru_cache(maxsize=4096)
def _tuple_allows(granted: tuple[str, ...], required: str) -> bool:
    return _allows(granted, required)
