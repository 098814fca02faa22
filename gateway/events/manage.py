"""Webhook endpoints and redelivery, each change with its audit row in one transaction.

A webhook's signing secret is generated here, wrapped under the KEK with its own
purpose (DESIGN.md §3.3) and returned once; the store never holds it in plaintext.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from urllib.parse import urlsplit

from gateway.errors import GatewayError
from gateway.events.model import (
    EVENT_TYPES,
    StoredEvent,
    Webhook,
    is_event_id,
    new_webhook_id,
    new_webhook_secret,
)
from gateway.kek import PURPOSE_WEBHOOK_SECRET, Keyring
from gateway.keys.errors import PolicyViolation
from gateway.keys.formats import SecretStr
from gateway.keys.lifecycle import Actor
from gateway.keys.record import AuditEntry
from gateway.store import Store

__all__ = ["EventNotFound", "add_webhook", "redeliver", "remove_webhook", "unwrap_secret"]


class EventNotFound(GatewayError):
    def __init__(self, event_id: str) -> None:
        super().__init__("event_not_found", f"no such event: {event_id}")
        self.event_id = event_id


def _audit(actor: Actor, action: str, target: str, now: datetime, **details: object
           ) -> AuditEntry:
    return AuditEntry(at=now, actor_key_id=actor.key_id, actor_principal=actor.principal,
                      action=action, target=target, source=actor.source, outcome="success",
                      details=dict(details))


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PolicyViolation("a webhook URL must be http:// or https:// with a host")
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise PolicyViolation("a webhook URL must carry no user, password or fragment")
    return url


async def add_webhook(store: Store, keyring: Keyring, url: str, events: Sequence[str], *,
                      actor: Actor, now: datetime) -> tuple[Webhook, SecretStr]:
    """A new receiver of ``events`` (empty: every type) and its secret, shown once."""
    unknown = sorted(set(events) - set(EVENT_TYPES))
    if unknown:
        raise PolicyViolation(f"unknown event type {unknown[0]!r}; one of "
                              f"{', '.join(EVENT_TYPES)}")
    webhook_id, secret = new_webhook_id(), SecretStr(new_webhook_secret())
    webhook = Webhook(id=webhook_id, url=check_url(url), events=tuple(dict.fromkeys(events)),
                      created_at=now, created_by=actor.principal,
                      wrapped=keyring.wrap(PURPOSE_WEBHOOK_SECRET, webhook_id,
                                           secret.hmac_key()))
    async with store.transaction() as tx:
        await tx.insert_webhook(webhook)
        await tx.add_audit([_audit(actor, "webhook.added", webhook_id, now, url=url,
                                   events=list(webhook.events))])
    return webhook, secret


async def remove_webhook(store: Store, webhook_id: str, *, actor: Actor, now: datetime
                         ) -> bool:
    async with store.transaction() as tx:
        removed = await tx.delete_webhook(webhook_id)
        if removed:
            await tx.add_audit([_audit(actor, "webhook.removed", webhook_id, now)])
    return removed


def unwrap_secret(keyring: Keyring, webhook: Webhook) -> bytes:
    """The HMAC key: the ASCII bytes of the secret as printed at creation."""
    return keyring.unwrap(PURPOSE_WEBHOOK_SECRET, webhook.id, webhook.wrapped)


async def redeliver(store: Store, event_id: str, *, actor: Actor, now: datetime
                    ) -> StoredEvent:
    """Send the event again, now, to every webhook subscribed to its type."""
    if not is_event_id(event_id):
        raise GatewayError("invalid_request", "malformed event ID (expected evt_ and 32 hex "
                                              "digits)")
    async with store.transaction() as tx:
        if not await tx.redeliver(event_id, now):
            raise EventNotFound(event_id)
        await tx.add_audit([_audit(actor, "event.redelivered", event_id, now)])
    found = await store.get_event(event_id)
    if found is None:  # pragma: no cover - events are never deleted
        raise EventNotFound(event_id)
    return found
