"""Lifecycle events and webhooks as values (issue 11; DESIGN.md §3.2, §4.1).

An :class:`Event` is written to the store's ``events`` outbox in the same transaction
as the change it reports; the store then adds one delivery row per subscribed
webhook. A scheduled event (``key.expiring``, ``key.expired``, ``key.inactive``)
carries a ``dedup`` key, unique in the store, so it is emitted once however many
instances find it.

Event types::

    key.created  key.rotated  key.renewed  key.revoked  key.updated
    key.expiring key.expired  key.inactive kek.rotated
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from gateway.keys.record import KeyRecord, WrappedSecret, rfc3339

__all__ = [
    "DELIVERY_STATES",
    "EVENT_TYPES",
    "Delivery",
    "Event",
    "EventFilter",
    "StoredEvent",
    "Webhook",
    "is_event_id",
    "is_webhook_id",
    "kek_event",
    "key_event",
    "new_webhook_id",
    "new_webhook_secret",
]

EVENT_TYPES = (
    "key.created", "key.rotated", "key.renewed", "key.revoked", "key.updated",
    "key.expiring", "key.expired", "key.inactive", "kek.rotated",
)
DeliveryState = Literal["pending", "delivered", "failed"]
DELIVERY_STATES: tuple[DeliveryState, ...] = ("pending", "delivered", "failed")
_EVENT_ID = re.compile(r"evt_[0-9a-f]{32}", re.ASCII)
_WEBHOOK_ID = re.compile(r"whk_[0-9a-f]{16}", re.ASCII)


def is_event_id(text: str) -> bool:
    return _EVENT_ID.fullmatch(text) is not None


def is_webhook_id(text: str) -> bool:
    return _WEBHOOK_ID.fullmatch(text) is not None


def new_webhook_id() -> str:
    return f"whk_{secrets.token_hex(8)}"


def new_webhook_secret() -> str:
    """256 random bits; the receiver's RFC 9421 HMAC key is these ASCII bytes."""
    return f"whsec_{secrets.token_urlsafe(32)}"


@dataclass(frozen=True, slots=True)
class Event:
    """One lifecycle event, as written to the outbox. ``payload`` never holds a secret."""

    type: str
    target: str
    occurred_at: datetime
    payload: dict[str, Any]
    id: str = field(default_factory=lambda: f"evt_{secrets.token_hex(16)}")
    dedup: str | None = None

    def body(self) -> dict[str, Any]:
        """The JSON a webhook receives (the same on every redelivery)."""
        return {"id": self.id, "type": self.type, "target": self.target,
                "occurred_at": rfc3339(self.occurred_at), "data": self.payload}


def key_event(type_: str, record: KeyRecord, now: datetime, inactivity: float, *,
              dedup: bool = False, **extra: Any) -> Event:
    """An event about a key: the record as the admin API shows it, plus ``extra``.
    ``dedup``: a scheduled event, once per (key, type, deadline)."""
    deadline = rfc3339(record.deadline(inactivity))
    payload = {"key": record.to_api(now, inactivity), **extra}
    return Event(type=type_, target=record.key_id, occurred_at=now, payload=payload,
                 dedup=f"{record.key_id}|{type_}|{deadline}" if dedup else None)


def kek_event(version: int, now: datetime, **extra: Any) -> Event:
    return Event(type="kek.rotated", target=f"kek:{version}", occurred_at=now,
                 payload={"kek_version": version, **extra})


@dataclass(frozen=True, slots=True)
class Webhook:
    """A receiver; ``events`` empty means every type. The secret stays wrapped."""

    id: str
    url: str
    events: tuple[str, ...]
    created_at: datetime
    created_by: str
    wrapped: WrappedSecret

    def to_api(self) -> dict[str, Any]:
        return {"id": self.id, "url": self.url, "events": list(self.events),
                "created_at": rfc3339(self.created_at), "created_by": self.created_by}


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event's delivery state at one webhook."""

    event_seq: int
    webhook_id: str
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime
    last_status: int | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None

    def to_api(self) -> dict[str, Any]:
        return {"webhook_id": self.webhook_id, "state": self.state, "attempts": self.attempts,
                "next_attempt_at": None if self.state != "pending"
                else rfc3339(self.next_attempt_at),
                "last_status": self.last_status, "last_error": self.last_error,
                "delivered_at": rfc3339(self.delivered_at)}


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as read back, with its deliveries. Its status: ``failed`` when a
    delivery gave up, else ``pending`` while one is due, else ``delivered`` (an event
    no webhook subscribes to is delivered to nobody, and so ``delivered``)."""

    seq: int
    event: Event
    deliveries: tuple[Delivery, ...]

    @property
    def status(self) -> DeliveryState:
        states = {d.state for d in self.deliveries}
        return "failed" if "failed" in states else "pending" if "pending" in states \
            else "delivered"

    def to_api(self) -> dict[str, Any]:
        e = self.event
        return {"id": e.id, "type": e.type, "target": e.target,
                "occurred_at": rfc3339(e.occurred_at), "status": self.status,
                "payload": e.payload, "deliveries": [d.to_api() for d in self.deliveries]}


@dataclass(frozen=True, slots=True)
class EventFilter:
    """``GET /v1/events`` and ``gateway events list``."""

    type: str | None = None
    target: str | None = None
    status: DeliveryState | None = None
    since: datetime | None = None
