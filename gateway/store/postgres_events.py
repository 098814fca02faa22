"""The PostgreSQL store's events outbox, webhooks, deliveries and leases (issue 11).

Functions of an asyncpg connection, called by :mod:`gateway.store.postgres` inside
its transactions. Claims use ``FOR UPDATE SKIP LOCKED``: instances claiming at the
same moment take different rows and never wait on each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import orjson

from gateway.events.model import Delivery, Event, EventFilter, StoredEvent, Webhook
from gateway.keys.record import WrappedSecret
from gateway.store.base import Rewrap, event_sql

__all__ = [
    "acquire_lease", "add_events", "claim_deliveries", "delete_webhook", "existing_dedups",
    "finish_delivery", "get_event", "insert_webhook", "list_events", "list_webhooks",
    "redeliver", "rewrap_webhooks",
]

EVENT_COLUMNS = ("e.seq, e.id AS event_id, e.type, e.target, e.occurred_at, e.payload, "
                 "e.dedup")
DELIVERY_COLUMNS = ("d.event_seq, d.webhook_id, d.state, d.attempts, d.next_attempt_at, "
                    "d.last_status, d.last_error, d.delivered_at")
WEBHOOK_COLUMNS = ("w.url, w.events_filter, w.created_at, w.created_by, w.kek_version, "
                   "w.nonce, w.ciphertext")


def _subscribed(type_sql: str) -> str:
    return f"(w.events_filter = '' OR strpos(w.events_filter, ',' || {type_sql} || ',') > 0)"


def _event(r: asyncpg.Record) -> Event:
    return Event(id=r["event_id"], type=r["type"], target=r["target"],
                 occurred_at=r["occurred_at"], payload=orjson.loads(r["payload"]),
                 dedup=r["dedup"])


def _delivery(r: asyncpg.Record) -> Delivery:
    return Delivery(event_seq=int(r["event_seq"]), webhook_id=r["webhook_id"],
                    state=r["state"], attempts=int(r["attempts"]),
                    next_attempt_at=r["next_attempt_at"], last_status=r["last_status"],
                    last_error=r["last_error"], delivered_at=r["delivered_at"])


def _webhook(r: asyncpg.Record, id_column: str = "id") -> Webhook:
    return Webhook(id=r[id_column], url=r["url"],
                   events=tuple(t for t in r["events_filter"].split(",") if t),
                   created_at=r["created_at"], created_by=r["created_by"],
                   wrapped=WrappedSecret(int(r["kek_version"]), bytes(r["nonce"]),
                                         bytes(r["ciphertext"])))


async def add_events(c: asyncpg.Connection, events: Sequence[Event]) -> list[Event]:
    if not events:
        return []
    rows = await c.fetch(
        "INSERT INTO events (id, type, target, occurred_at, payload, dedup) "
        "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], "
        "$5::jsonb[], $6::text[]) ON CONFLICT (dedup) DO NOTHING RETURNING seq, id, type",
        [e.id for e in events], [e.type for e in events], [e.target for e in events],
        [e.occurred_at for e in events],
        [orjson.dumps(e.payload).decode() for e in events], [e.dedup for e in events])
    at = {e.id: e.occurred_at for e in events}
    if rows:
        await c.execute(
            "INSERT INTO event_deliveries (event_seq, webhook_id, state, attempts, "
            "next_attempt_at) SELECT u.seq, w.id, 'pending', 0, u.at FROM "
            "unnest($1::bigint[], $2::text[], $3::timestamptz[]) AS u(seq, type, at) "
            f"JOIN webhooks w ON {_subscribed('u.type')}",
            [r["seq"] for r in rows], [r["type"] for r in rows],
            [at[r["id"]] for r in rows])
    written = {r["id"] for r in rows}
    return [e for e in events if e.id in written]


async def insert_webhook(c: asyncpg.Connection, w: Webhook) -> None:
    await c.execute(
        "INSERT INTO webhooks (id, url, events_filter, created_at, created_by, kek_version, "
        "nonce, ciphertext) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", w.id, w.url,
        f",{','.join(w.events)}," if w.events else "", w.created_at, w.created_by,
        w.wrapped.kek_version, w.wrapped.nonce, w.wrapped.ciphertext)


async def delete_webhook(c: asyncpg.Connection, webhook_id: str) -> bool:
    status = await c.execute("DELETE FROM webhooks WHERE id = $1", webhook_id)
    return bool(status == "DELETE 1")  # its deliveries go with it (ON DELETE CASCADE)


async def redeliver(c: asyncpg.Connection, event_id: str, now: datetime) -> bool:
    row = await c.fetchrow("SELECT seq, type FROM events WHERE id = $1", event_id)
    if row is None:
        return False
    await c.execute(
        "INSERT INTO event_deliveries (event_seq, webhook_id, state, attempts, "
        f"next_attempt_at) SELECT $1, w.id, 'pending', 0, $3 FROM webhooks w WHERE "
        f"{_subscribed('$2::text')} ON CONFLICT (event_seq, webhook_id) DO UPDATE SET "
        "state = 'pending', attempts = 0, next_attempt_at = excluded.next_attempt_at, "
        "claim = NULL", row["seq"], row["type"], now)
    return True


async def existing_dedups(c: asyncpg.Connection, dedups: Sequence[str]) -> set[str]:
    rows = await c.fetch("SELECT dedup FROM events WHERE dedup = ANY($1::text[])", list(dedups))
    return {r["dedup"] for r in rows}


async def _with_deliveries(c: asyncpg.Connection, rows: list[Any]) -> list[StoredEvent]:
    seqs = [int(r["seq"]) for r in rows]
    by_seq: dict[int, list[Delivery]] = {s: [] for s in seqs}
    for r in await c.fetch(f"SELECT {DELIVERY_COLUMNS} FROM event_deliveries d WHERE "
                           "d.event_seq = ANY($1::bigint[]) ORDER BY d.webhook_id", seqs):
        by_seq[int(r["event_seq"])].append(_delivery(r))
    return [StoredEvent(int(r["seq"]), _event(r), tuple(by_seq[int(r["seq"])])) for r in rows]


async def list_events(c: asyncpg.Connection, where: EventFilter, limit: int,
                      after: int | None) -> list[StoredEvent]:
    params: list[Any] = []

    def param(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    conds = event_sql(where, after, param)
    rows = await c.fetch(f"SELECT {EVENT_COLUMNS} FROM events e "
                         f"{'WHERE ' + ' AND '.join(conds) if conds else ''} "
                         f"ORDER BY e.seq LIMIT {int(limit)}", *params)
    return await _with_deliveries(c, rows)


async def get_event(c: asyncpg.Connection, event_id: str) -> StoredEvent | None:
    rows = await c.fetch(f"SELECT {EVENT_COLUMNS} FROM events e WHERE e.id = $1", event_id)
    found = await _with_deliveries(c, rows)
    return found[0] if found else None


async def list_webhooks(c: asyncpg.Connection) -> list[Webhook]:
    return [_webhook(r) for r in await c.fetch(
        f"SELECT w.id, {WEBHOOK_COLUMNS} FROM webhooks w ORDER BY w.created_at, w.id")]


async def claim_deliveries(c: asyncpg.Connection, now: datetime, lease_until: datetime,
                           claim: str, limit: int) -> list[tuple[Delivery, Event, Webhook]]:
    rows = await c.fetch(
        "WITH due AS (SELECT event_seq, webhook_id FROM event_deliveries WHERE state = "
        "'pending' AND next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT $4 "
        "FOR UPDATE SKIP LOCKED), "
        "taken AS (UPDATE event_deliveries d SET claim = $3, next_attempt_at = $2 FROM due "
        "WHERE d.event_seq = due.event_seq AND d.webhook_id = due.webhook_id RETURNING d.*) "
        f"SELECT {DELIVERY_COLUMNS}, {EVENT_COLUMNS}, {WEBHOOK_COLUMNS} FROM taken d "
        "JOIN events e ON e.seq = d.event_seq JOIN webhooks w ON w.id = d.webhook_id",
        now, lease_until, claim, limit)
    return [(_delivery(r), _event(r), _webhook(r, "webhook_id")) for r in rows]


async def finish_delivery(c: asyncpg.Connection, d: Delivery, claim: str) -> bool:
    status = await c.execute(
        "UPDATE event_deliveries SET state = $1, attempts = $2, next_attempt_at = $3, "
        "claim = NULL, last_status = $4, last_error = $5, delivered_at = $6 "
        "WHERE event_seq = $7 AND webhook_id = $8 AND claim = $9", d.state, d.attempts,
        d.next_attempt_at, d.last_status, d.last_error, d.delivered_at, d.event_seq,
        d.webhook_id, claim)
    return bool(status == "UPDATE 1")


async def acquire_lease(c: asyncpg.Connection, name: str, holder: str, now: datetime,
                        until: datetime) -> bool:
    got = await c.fetchval(
        "INSERT INTO leases (name, holder, until) VALUES ($1, $2, $3) ON CONFLICT (name) "
        "DO UPDATE SET holder = $2, until = $3 WHERE leases.until <= $4 OR leases.holder = $2 "
        "RETURNING holder", name, holder, until, now)
    return got == holder


async def rewrap_webhooks(c: asyncpg.Connection, target_version: int, rewrap: Rewrap) -> int:
    rows = await c.fetch("SELECT id, kek_version, nonce, ciphertext FROM webhooks "
                         "WHERE kek_version <> $1 FOR UPDATE", target_version)
    for r in rows:
        new = rewrap(r["id"], WrappedSecret(r["kek_version"], bytes(r["nonce"]),
                                            bytes(r["ciphertext"])))
        await c.execute("UPDATE webhooks SET kek_version = $1, nonce = $2, ciphertext = $3 "
                        "WHERE id = $4", new.kek_version, new.nonce, new.ciphertext, r["id"])
    return len(rows)
