"""Configuration: one TOML file (DESIGN.md §4), parsed once into frozen, typed objects.

Every scalar setting (and every list of strings, written comma-separated) can be
overridden by ``GATEWAY_<SECTION>__<KEY>``, e.g. ``GATEWAY_SERVER__LISTEN`` or
``GATEWAY_AUTH__SIGV4__SERVICE``. Routes come only from the file. Unknown keys,
unknown ``GATEWAY_*`` variables and bad values are errors naming the setting.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

__all__ = [
    "Config",
    "ConfigError",
    "RouteConfig",
    "load_config",
    "parse_duration",
    "parse_listen",
    "parse_size",
]

# Variables that share the prefix but belong to other uses (the SDK, the file name).
RESERVED_ENV = frozenset(
    {"GATEWAY_CONFIG", "GATEWAY_KEY_ID", "GATEWAY_SECRET", "GATEWAY_CREDENTIALS_FILE"}
)

DURATION = "duration"  # annotation marker: "90s", "5m", "12h", "30d" -> seconds (float)
SIZE = "size"  # annotation marker: "8KiB", "10MiB", 4096 -> bytes (int)
Duration = Annotated[float, DURATION]
Size = Annotated[int, SIZE]


class ConfigError(ValueError):
    """A setting is unknown or has a bad value; the message names the setting."""


_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE_RE = re.compile(r"^(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?$")
_SIZE_UNITS = {None: 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3,
               "KB": 1000, "MB": 1000**2, "GB": 1000**3}


def parse_duration(text: str) -> float:
    """``"90s"``, ``"5m"``, ``"12h"``, ``"30d"`` (also ``ms``) → seconds."""
    m = _DURATION_RE.match(text.strip())
    if not m:
        raise ValueError(f"expected a duration like 90s, 5m, 12h or 30d, got {text!r}")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def parse_size(text: str | int) -> int:
    """``"8KiB"``, ``"10MiB"`` or a plain number of bytes → bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"expected a size ≥ 0, got {text}")
        return text
    m = _SIZE_RE.match(str(text).strip())
    if not m:
        raise ValueError(f"expected a size like 8KiB or 10MiB, got {text!r}")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2)]


@dataclass(frozen=True, slots=True)
class ServerConfig:
    listen: str = "127.0.0.1:8080"
    workers: int = 1
    trusted_proxies: tuple[str, ...] = ()
    public_scheme: str = ""
    public_authority: str = ""
    max_request_line: Size = 8 * 1024
    max_headers: Size = 32 * 1024
    header_timeout: Duration = 10.0
    body_timeout: Duration = 60.0
    keepalive_timeout: Duration = 75.0
    shutdown_grace: Duration = 30.0
    tls_cert: str = ""
    tls_key: str = ""
    # "lean": pooled keep-alive upstream connections (DESIGN §7); "aiohttp": a ClientSession
    forwarder: Literal["lean", "aiohttp"] = "lean"


@dataclass(frozen=True, slots=True)
class AdminConfig:
    listen: str = "127.0.0.1:9901"


@dataclass(frozen=True, slots=True)
class StoreConfig:
    url: str = "sqlite:///var/lib/gateway/keys.db"


@dataclass(frozen=True, slots=True)
class KekConfig:
    keyring: str = "/var/lib/gateway/keyring.json"


@dataclass(frozen=True, slots=True)
class RedisConfig:
    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "gw:"


@dataclass(frozen=True, slots=True)
class CacheConfig:
    ttl: Duration = 60.0
    negative_ttl: Duration = 10.0
    max_entries: int = 100_000
    change_poll: Duration = 1.0
    serve_stale: Duration = 900.0


@dataclass(frozen=True, slots=True)
class SigV4Config:
    service: str = "gateway"
    regions: tuple[str, ...] = ("local",)


@dataclass(frozen=True, slots=True)
class RFC9421Config:
    # @query only when the request has a query, content-digest only when it has a body
    required_components: tuple[str, ...] = (
        "@method", "@authority", "@path", "@query", "content-digest",
    )


ReplayMode = Literal["all", "unsafe-methods", "off"]


@dataclass(frozen=True, slots=True)
class AuthConfig:
    clock_skew: Duration = 300.0
    max_presign_expires: Duration = 3600.0
    replay: ReplayMode = "all"
    expiry_warning: Duration = 14 * 86400.0
    sigv4: SigV4Config = field(default_factory=SigV4Config)
    rfc9421: RFC9421Config = field(default_factory=RFC9421Config)


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    min_lifetime: Duration = 86400.0
    max_lifetime: Duration = 365 * 86400.0
    default_lifetime: Duration = 90 * 86400.0
    allow_no_expiry: bool = False
    inactivity: Duration = 365 * 86400.0
    rotation_grace: Duration = 86400.0
    max_rotation_grace: Duration = 30 * 86400.0
    max_active_keys_per_principal: int = 2
    require_mfa_for_issuance: bool = False
    reject_keys_without_mfa: bool = False
    allow_self_rotate: bool = True


@dataclass(frozen=True, slots=True)
class UsageConfig:
    flush: Duration = 5.0


@dataclass(frozen=True, slots=True)
class EventsConfig:
    """Lifecycle events (issue 11): webhook delivery and the expiry scheduler. A claimed
    delivery is leased for twice ``timeout``; the n-th retry waits
    ``min(retry_max, retry_base * 2**(n-1))``; after ``max_attempts`` it is failed
    (``gateway events redeliver`` sends it again)."""

    deliver_interval: Duration = 1.0
    retry_base: Duration = 5.0
    retry_max: Duration = 3600.0
    max_attempts: int = 20
    timeout: Duration = 10.0
    scheduler_interval: Duration = 60.0


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"
    access_log: bool = True


@dataclass(frozen=True, slots=True)
class RouteConfig:
    prefix: str
    upstream: str
    scopes: Mapping[str, str] = field(default_factory=dict)  # method (or "*") -> scope
    strip_prefix: bool = False
    max_body: Size = 10 * 1024 * 1024
    allow_unsigned_payload: bool = False
    allow_presigned_methods: tuple[str, ...] = ("GET", "HEAD")
    replay: ReplayMode | None = None  # None: [auth] replay
    timeout: Duration = 30.0
    connect_timeout: Duration = 5.0


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    kek: KekConfig = field(default_factory=KekConfig)
    redis: RedisConfig | None = None  # optional section: without it, single-instance mode
    cache: CacheConfig = field(default_factory=CacheConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    usage: UsageConfig = field(default_factory=UsageConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    routes: tuple[RouteConfig, ...] = ()


def load_config(path: str | os.PathLike[str] | None = None,
                env: Mapping[str, str] | None = None) -> Config:
    """Read the TOML file (``None``: ``$GATEWAY_CONFIG``, else built-in defaults),
    apply ``GATEWAY_*`` overrides from ``env`` (default ``os.environ``) and validate."""
    env = os.environ if env is None else env
    if path is None:
        path = env.get("GATEWAY_CONFIG") or None
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        except UnicodeDecodeError as exc:  # found by the config fuzz target
            raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start})") from exc
    _apply_env(raw, env)
    config = _build(Config, raw, "")
    _check(config)
    return config


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    for name, value in env.items():
        if not name.startswith("GATEWAY_") or name in RESERVED_ENV:
            continue
        parts = name[len("GATEWAY_"):].lower().split("__")
        target_cls: Any = Config
        node = raw
        for depth, part in enumerate(parts):
            fields = {f.name: f for f in dataclasses.fields(target_cls)}
            if part not in fields or part == "routes":
                raise ConfigError(f"environment variable {name} names no setting")
            ftype = _unoptional(typing.get_type_hints(target_cls, include_extras=True)[part])
            last = depth == len(parts) - 1
            if dataclasses.is_dataclass(ftype):
                if last:
                    raise ConfigError(f"environment variable {name} names a section, not a setting")
                node = node.setdefault(part, {})
                target_cls = ftype
            elif last:
                node[part] = _EnvText(value)
            else:
                raise ConfigError(f"environment variable {name} names no setting")


class _EnvText(str):
    """A value from the environment: text to be cast to the setting's type."""


def _unoptional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _build(cls: Any, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"setting {where or 'top level'}: expected a table")
    hints = typing.get_type_hints(cls, include_extras=True)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            raise ConfigError(f"unknown setting {where}{key}")
    kwargs: dict[str, Any] = {}
    for name in names:
        if name in raw:
            kwargs[name] = _convert(hints[name], raw[name], f"{where}{name}")
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field (route prefix/upstream) is missing
        raise ConfigError(f"setting {where.rstrip('.') or 'top level'}: {exc}") from exc


def _convert(tp: Any, value: Any, where: str) -> Any:
    try:
        return _cast(tp, value, where)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"setting {where}: {exc}") from exc


def _cast(tp: Any, value: Any, where: str) -> Any:
    from_env = isinstance(value, _EnvText)
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, marker = typing.get_args(tp)[:2]
        if marker == DURATION:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                raise ValueError(f"expected a duration string like '30s', got {value!r}")
            return parse_duration(str(value))
        if marker == SIZE:
            return parse_size(value)
        return _cast(base, value, where)
    if _unoptional(tp) is not tp:
        if value is None:
            return None
        return _cast(_unoptional(tp), value, where)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(map(str, choices))}, got {value!r}")
        return str(value)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where + ".")
    if tp is bool:
        if from_env:
            if value.lower() in ("true", "1", "yes"):
                return True
            if value.lower() in ("false", "0", "no"):
                return False
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if from_env and re.fullmatch(r"-?\d+", value):
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"expected an integer, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {value!r}")
        return str(value)
    if origin is tuple:
        (item,) = {a for a in typing.get_args(tp) if a is not Ellipsis}
        if from_env:
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {value!r}")
        if item is RouteConfig:
            return tuple(_build(RouteConfig, v, f"{where}[{i}].") for i, v in enumerate(value))
        return tuple(_cast(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is Mapping:
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise ValueError("expected a table of strings")
        return dict(value)
    raise TypeError(f"unsupported setting type {tp!r}")  # pragma: no cover - programming error


def _check(config: Config) -> None:
    def need(ok: bool, setting: str, why: str) -> None:
        if not ok:
            raise ConfigError(f"setting {setting}: {why}")

    need(config.server.workers >= 1, "server.workers", "must be at least 1")
    need(config.server.public_scheme in ("", "http", "https"), "server.public_scheme",
         "must be empty, http or https")
    need(bool(config.server.tls_cert) == bool(config.server.tls_key), "server.tls_cert",
         "tls_cert and tls_key must be set together")
    need(0 < config.auth.clock_skew <= 3600, "auth.clock_skew", "must be between 1s and 1h")
    need(1 <= config.auth.max_presign_expires <= 604800, "auth.max_presign_expires",
         "must be between 1s and 7d")
    need(bool(config.auth.sigv4.regions), "auth.sigv4.regions", "must name at least one region")
    need(config.cache.max_entries >= 1, "cache.max_entries", "must be at least 1")
    p = config.policy
    need(0 < p.min_lifetime <= p.max_lifetime, "policy.min_lifetime",
         "must be positive and at most policy.max_lifetime")
    need(p.min_lifetime <= p.default_lifetime <= p.max_lifetime, "policy.default_lifetime",
         "must lie between policy.min_lifetime and policy.max_lifetime")
    need(p.rotation_grace <= p.max_rotation_grace, "policy.rotation_grace",
         "must be at most policy.max_rotation_grace")
    need(p.max_active_keys_per_principal >= 1, "policy.max_active_keys_per_principal",
         "must be at least 1")
    e = config.events
    for name in ("deliver_interval", "retry_base", "timeout", "scheduler_interval"):
        need(getattr(e, name) > 0, f"events.{name}", "must be positive")
    need(e.retry_base <= e.retry_max, "events.retry_max", "must be at least events.retry_base")
    need(e.max_attempts >= 1, "events.max_attempts", "must be at least 1")
    seen: set[str] = set()
    for i, route in enumerate(config.routes):
        where = f"routes[{i}]"
        need(route.prefix.startswith("/"), f"{where}.prefix", "must start with '/'")
        need(route.prefix not in seen, f"{where}.prefix", f"duplicate prefix {route.prefix!r}")
        seen.add(route.prefix)
        need(not route.prefix.startswith("/_gateway/"), f"{where}.prefix",
             "/_gateway/ is reserved for the gateway's own endpoints")
        need(re.match(r"^https?://[^/?#]+/?$", route.upstream) is not None, f"{where}.upstream",
             "must be an http:// or https:// base URL without path, query or fragment")
        need(route.timeout > 0 and route.connect_timeout > 0, f"{where}.timeout",
             "timeouts must be positive")
