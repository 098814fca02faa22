"""Webhook delivery: at least once, signed with RFC 9421 ``hmac-sha256`` (issue 11).

Each instance of ``gateway serve`` runs one :class:`DeliveryWorker`. Every
``[events] deliver_interval`` it claims the due deliveries (the store leases each to
it for twice ``[events] timeout``, so no other instance sends it meanwhile, and one
that dies leaves it due again), POSTs them, and records each outcome. A 2xx answer
is delivered; anything else is retried with exponential backoff, up to
``max_attempts``. Every attempt sends the same body and ``Gateway-Event-Id``.

The request covers ``@method``, ``@authority``, ``@path`` (``@query`` when the URL
has one), ``content-digest`` (RFC 9530, ``sha-256``), ``content-type`` and
``gateway-event-id``, with ``created`` and ``keyid`` = the webhook ID.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import aiohttp
import orjson

from gateway.config import EventsConfig
from gateway.errors import GatewayError
from gateway.events.manage import unwrap_secret
from gateway.events.model import Delivery, Event, Webhook
from gateway.kek import KekError, Keyring
from gateway.signing.signer import sign_rfc9421
from gateway.store import Store

__all__ = ["DeliveryWorker", "after_attempt", "signed_delivery"]

log = logging.getLogger("gateway.events")
BATCH = 100
EVENT_ID_HEADER = "Gateway-Event-Id"


def signed_delivery(event: Event, webhook: Webhook, secret: bytes, now: float
                    ) -> tuple[list[tuple[str, str]], bytes]:
    """The headers and body of one POST of ``event`` to ``webhook`` (a pure function)."""
    body = orjson.dumps(event.body())
    url = urlsplit(webhook.url)
    target = (url.path or "/") + (f"?{url.query}" if url.query else "")
    authority = url.netloc.lower()
    headers = [("Content-Type", "application/json"), (EVENT_ID_HEADER, event.id),
               ("Gateway-Event-Type", event.type)]
    components = ["@method", "@authority", "@path", *(["@query"] if url.query else []),
                  "content-digest", "content-type", "gateway-event-id"]
    added = sign_rfc9421("POST", target, authority, headers, body, key_id=webhook.id,
                         secret=secret, now=now, scheme=url.scheme, components=components)
    return [("Host", authority), *headers, *added], body


def after_attempt(d: Delivery, *, status: int | None, error: str | None, now: datetime,
                  config: EventsConfig) -> Delivery:
    """The delivery after one attempt answered ``status`` (None: ``error`` instead)."""
    attempts = d.attempts + 1
    if status is not None and 200 <= status < 300:
        return replace(d, state="delivered", attempts=attempts, next_attempt_at=now,
                       last_status=status, last_error=None, delivered_at=now)
    delay = min(config.retry_max, config.retry_base * 2 ** (attempts - 1))
    return replace(d, state="failed" if attempts >= config.max_attempts else "pending",
                   attempts=attempts, next_attempt_at=now + timedelta(seconds=delay),
                   last_status=status, last_error=error or f"HTTP {status}")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class DeliveryWorker:
    """Claims due deliveries and sends them; ``clock`` is the time source."""

    def __init__(self, store: Store, keyring: Keyring, config: EventsConfig, *,
                 clock: Callable[[], datetime] = _utcnow) -> None:
        self.store = store
        self.keyring = keyring
        self.config = config
        self.clock = clock
        self.claim = f"deliver-{secrets.token_hex(8)}"
        self._session: aiohttp.ClientSession | None = None

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.config.timeout)
        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False,
                                         skip_auto_headers=("User-Agent",)) as session:
            self._session = session
            while True:
                try:
                    sent = await self.deliver_due()
                except GatewayError as exc:  # the store is away: the outbox keeps them
                    log.warning("event delivery: %s", exc.message)
                    sent = 0
                except Exception:
                    log.exception("event delivery failed")
                    sent = 0
                if sent < BATCH:
                    await asyncio.sleep(self.config.deliver_interval)

    async def deliver_due(self) -> int:
        """Claim and send what is due now; how many were attempted."""
        now = self.clock()
        lease = now + timedelta(seconds=2 * self.config.timeout)
        claimed = await self.store.claim_deliveries(now, lease, self.claim, BATCH)
        await asyncio.gather(*(self._attempt(d, e, w) for d, e, w in claimed))
        return len(claimed)

    async def _attempt(self, delivery: Delivery, event: Event, webhook: Webhook) -> None:
        status: int | None = None
        error: str | None = None
        try:
            secret = unwrap_secret(self.keyring, webhook)
            headers, body = signed_delivery(event, webhook, secret,
                                            self.clock().timestamp())
            status = await self._post(webhook.url, headers, body)
        except KekError as exc:
            error = f"cannot unwrap the webhook secret: {exc}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:300] if str(exc) else type(exc).__name__
        outcome = after_attempt(delivery, status=status, error=error, now=self.clock(),
                                config=self.config)
        if outcome.state != "delivered":
            log.info("event %s to %s: attempt %d failed (%s)", event.id, webhook.id,
                     outcome.attempts, outcome.last_error)
        if not await self.store.finish_delivery(outcome, self.claim):
            log.warning("event %s to %s: the lease ran out before the answer; it will be "
                        "sent again", event.id, webhook.id)

    async def _post(self, url: str, headers: list[tuple[str, str]], body: bytes) -> int:
        if self._session is None:  # pragma: no cover - run() opens it
            raise RuntimeError("the delivery worker is not running")
        async with self._session.post(url, data=body, headers=headers,
                                      allow_redirects=False) as response:
            await response.content.read(64 * 1024)  # enough to keep the connection usable
            return response.status
