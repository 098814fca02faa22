"""What the admin handlers share: typed application and request keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from ..keys.record import KeyRecord

if TYPE_CHECKING:
    from ..proxy.server import Gateway

__all__ = ["CALLER_KEY", "GATEWAY_KEY", "Caller"]

GATEWAY_KEY: web.AppKey[Gateway] = web.AppKey("gateway")


@dataclass(frozen=True, slots=True)
class Caller:
    """The admin key whose signature verified, the address it called from, and the
    request body the signature covered."""

    record: KeyRecord
    source: str
    body: bytes


CALLER_KEY = "gateway.caller"
