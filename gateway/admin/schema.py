"""Request input for the admin API: JSON bodies checked against the OpenAPI document's
own schemas (:data:`gateway.admin.openapi.BODIES`), query parameters and values
parsed into typed ones. Everything a client can get wrong is 400 ``invalid_request``."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from multidict import MultiMapping

from ..config import parse_duration
from ..errors import GatewayError
from ..keys.lifecycle import NEVER, Expiry
from ..keys.record import STATUSES, RateLimit
from .openapi import BODIES

__all__ = ["body", "duration", "expiry", "instant", "query", "rate_limit", "since"]

_VALIDATORS = {name: Draft202012Validator(schema) for name, schema in BODIES.items()}
_LIMIT = re.compile(r"[0-9]{1,4}", re.ASCII)


def invalid(message: str) -> GatewayError:
    return GatewayError("invalid_request", message[:300])


def body(raw: bytes, schema: str) -> dict[str, Any]:
    """The JSON object in ``raw`` (an empty body is ``{}``), valid against ``schema``."""
    if not raw.strip():
        doc: Any = {}
    else:
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise invalid("the body is not valid JSON") from None
    errors = sorted(_VALIDATORS[schema].iter_errors(doc), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        where = "/".join(map(str, e.path)) or "body"
        if e.validator in ("required", "additionalProperties"):  # names fields, not values
            raise invalid(f"{where}: {e.message}")
        raise invalid(f"{where}: must satisfy {e.validator} "
                      f"{orjson.dumps(e.validator_value).decode()}")
    if not isinstance(doc, dict):  # the schemas all say object; this keeps mypy honest
        raise invalid("the body must be a JSON object")
    return doc


def query(params: MultiMapping[str], allowed: tuple[str, ...]) -> dict[str, str]:
    """Each allowed parameter at most once; unknown ones refused (SigV4's own
    ``X-Amz-*`` presign parameters are not ours to judge)."""
    out: dict[str, str] = {}
    for name, value in params.items():
        if name.startswith("X-Amz-"):
            continue
        if name not in allowed:
            raise invalid(f"unknown parameter {name[:40]!r}")
        if name in out:
            raise invalid(f"parameter {name} given twice")
        out[name] = value
    return out


def duration(value: str, what: str) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise invalid(f"{what}: expected a duration like 90s, 5m, 12h or 30d") from None
    if seconds >= 100_000 * 86400:  # as the schema's pattern: five digits of days
        raise invalid(f"{what}: too long")
    return seconds


def instant(value: str, what: str) -> datetime:
    """An RFC 3339 instant with its offset, as UTC."""
    try:
        at = datetime.fromisoformat(value)
        if at.tzinfo is None:
            raise ValueError("no offset")
        return at.astimezone(UTC)
    except (ValueError, OverflowError):
        raise invalid(f"{what}: expected an RFC 3339 time like 2026-06-30T00:00:00Z") from None


def since(now: datetime, seconds: float, what: str) -> datetime:
    try:
        return now - timedelta(seconds=seconds)
    except OverflowError:
        raise invalid(f"{what}: too long") from None


def limit(value: str | None) -> int:
    if value is None:
        return 100
    if _LIMIT.fullmatch(value) is None or not 1 <= int(value) <= 1000:
        raise invalid("limit: expected an integer from 1 to 1000")
    return int(value)


def status(value: str | None) -> Any:
    if value is not None and value not in STATUSES:
        raise invalid(f"status: one of {', '.join(STATUSES)}")
    return value


def expiry(doc: Mapping[str, Any]) -> Expiry:
    """``expires_in``, ``expires_at`` or ``no_expiry`` (the schema admits at most one);
    None: the policy's default lifetime."""
    if "expires_in" in doc:
        return duration(doc["expires_in"], "expires_in")
    if "expires_at" in doc:
        return instant(doc["expires_at"], "expires_at")
    return NEVER if doc.get("no_expiry") else None


def rate_limit(value: Mapping[str, Any] | None) -> RateLimit | None:
    if value is None:
        return None
    return RateLimit(rps=value["rps"], burst=value["burst"])


_SEQ_CURSOR = re.compile(r"[0-9]{1,18}", re.ASCII)


async def numbered_page(query: dict[str, str],
                        fetch: Callable[[int, int | None], Awaitable[Sequence[Any]]],
                        position: Callable[[Any], int]) -> dict[str, Any]:
    """One page of a listing ordered by a sequence number (audit, events): ``limit``
    and ``cursor`` from ``query``; ``next_cursor`` is the page's last number, or null."""
    cursor = query.get("cursor")
    if cursor is not None and _SEQ_CURSOR.fullmatch(cursor) is None:
        raise GatewayError("invalid_request", "malformed cursor")
    size = limit(query.get("limit"))
    items = list(await fetch(size + 1, int(cursor) if cursor else None))
    more = len(items) > size
    items = items[:size]
    return {"items": [item.to_api() for item in items],
            "next_cursor": str(position(items[-1])) if more else None}
