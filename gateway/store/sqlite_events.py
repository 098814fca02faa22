"""The SQLite store's events outbox, webhooks, deliveries and leases (issue 11).

Plain functions of a ``sqlite3.Connection``, run on the store's one thread inside
its transactions (:mod:`gateway.store.sqlite` calls them); ``BEGIN IMMEDIATE``
holds the database's write lock, so a claim cannot race another process's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.events.model import Delivery, Event, EventFilter, StoredEvent, Webhook
from gateway.keys.record import WrappedSecret
from gateway.store.base import Rewrap, event_sql

__all__ = [
    "acquire_lease", "add_events", "claim_deliveries", "delete_webhook", "existing_dedups",
    "finish_delivery", "get_event", "insert_webhook", "list_events", "list_webhooks",
    "redeliver", "rewrap_webhooks",
]

EVENT_COLUMNS = "e.seq, e.id, e.type, e.target, e.occurred_at, e.payload, e.dedup"
DELIVERY_COLUMNS = ("d.event_seq, d.webhook_id, d.state, d.attempts, d.next_attempt_at, "
                    "d.last_status, d.last_error, d.delivered_at")
WEBHOOK_COLUMNS = ("w.id, w.url, w.events_filter, w.created_at, w.created_by, w.kek_version, "
                   "w.nonce, w.ciphertext")
# webhooks subscribed to the event type bound as ?1
SUBSCRIBED = "(w.events_filter = '' OR instr(w.events_filter, ',' || ?1 || ',') > 0)"


def _t(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _at(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _event(r: Sequence[Any]) -> tuple[int, Event]:
    return int(r[0]), Event(id=r[1], type=r[2], target=r[3], occurred_at=datetime.fromisoformat(
        r[4]), payload=orjson.loads(r[5]), dedup=r[6])


def _delivery(r: Sequence[Any]) -> Delivery:
    return Delivery(event_seq=int(r[0]), webhook_id=r[1], state=r[2], attempts=int(r[3]),
                    next_attempt_at=datetime.fromisoformat(r[4]), last_status=r[5],
                    last_error=r[6], delivered_at=_at(r[7]))


def _webhook(r: Sequence[Any]) -> Webhook:
    return Webhook(id=r[0], url=r[1], events=tuple(t for t in r[2].split(",") if t),
                   created_at=datetime.fromisoformat(r[3]), created_by=r[4],
                   wrapped=WrappedSecret(int(r[5]), bytes(r[6]), bytes(r[7])))


def _filter(types: Sequence[str]) -> str:
    return f",{','.join(types)}," if types else ""


def add_events(c: sqlite3.Connection, events: Sequence[Event]) -> list[Event]:
    written = []
    for e in events:
        cur = c.execute(
            "INSERT INTO events (id, type, target, occurred_at, payload, dedup) VALUES "
            "(?, ?, ?, ?, ?, ?) ON CONFLICT (dedup) DO NOTHING",
            (e.id, e.type, e.target, _t(e.occurred_at), orjson.dumps(e.payload).decode(),
             e.dedup))
        if cur.rowcount != 1:
            continue
        written.append(e)
        c.execute("INSERT INTO event_deliveries (event_seq, webhook_id, state, attempts, "
                  f"next_attempt_at) SELECT ?2, w.id, 'pending', 0, ?3 FROM webhooks w "
                  f"WHERE {SUBSCRIBED}", (e.type, cur.lastrowid, _t(e.occurred_at)))
    return written


def insert_webhook(c: sqlite3.Connection, w: Webhook) -> None:
    c.execute("INSERT INTO webhooks (id, url, events_filter, created_at, created_by, "
              "kek_version, nonce, ciphertext) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
              (w.id, w.url, _filter(w.events), _t(w.created_at), w.created_by,
               w.wrapped.kek_version, w.wrapped.nonce, w.wrapped.ciphertext))


def delete_webhook(c: sqlite3.Connection, webhook_id: str) -> bool:
    c.execute("DELETE FROM event_deliveries WHERE webhook_id = ?", (webhook_id,))
    return c.execute("DELETE FROM webhooks WHERE id = ?", (webhook_id,)).rowcount == 1


def redeliver(c: sqlite3.Connection, event_id: str, now: datetime) -> bool:
    row = c.execute("SELECT seq, type FROM events WHERE id = ?", (event_id,)).fetchone()
    if row is None:
        return False
    c.execute("INSERT INTO event_deliveries (event_seq, webhook_id, state, attempts, "
              f"next_attempt_at) SELECT ?2, w.id, 'pending', 0, ?3 FROM webhooks w WHERE "
              f"{SUBSCRIBED} ON CONFLICT (event_seq, webhook_id) DO UPDATE SET "
              "state = 'pending', attempts = 0, next_attempt_at = excluded.next_attempt_at, "
              "claim = NULL", (row[1], row[0], _t(now)))
    return True


def existing_dedups(c: sqlite3.Connection, dedups: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for i in range(0, len(dedups), 500):
        chunk = dedups[i:i + 500]
        found |= {r[0] for r in c.execute(
            f"SELECT dedup FROM events WHERE dedup IN ({', '.join('?' * len(chunk))})", chunk)}
    return found


def _with_deliveries(c: sqlite3.Connection, rows: list[Any]) -> list[StoredEvent]:
    events = [_event(r) for r in rows]
    by_seq: dict[int, list[Delivery]] = {seq: [] for seq, _ in events}
    for i in range(0, len(events), 500):
        seqs = [seq for seq, _ in events[i:i + 500]]
        for r in c.execute(f"SELECT {DELIVERY_COLUMNS} FROM event_deliveries d WHERE "
                           f"d.event_seq IN ({', '.join('?' * len(seqs))}) "
                           "ORDER BY d.webhook_id", seqs):
            by_seq[int(r[0])].append(_delivery(r))
    return [StoredEvent(seq, e, tuple(by_seq[seq])) for seq, e in events]


def list_events(c: sqlite3.Connection, where: EventFilter, limit: int,
                after: int | None) -> list[StoredEvent]:
    params: list[Any] = []

    def param(value: Any) -> str:
        params.append(_t(value) if isinstance(value, datetime) else value)
        return f"?{len(params)}"

    conds = event_sql(where, after, param)
    rows = c.execute(f"SELECT {EVENT_COLUMNS} FROM events e "
                     f"{'WHERE ' + ' AND '.join(conds) if conds else ''} "
                     f"ORDER BY e.seq LIMIT {int(limit)}", params).fetchall()
    return _with_deliveries(c, rows)


def get_event(c: sqlite3.Connection, event_id: str) -> StoredEvent | None:
    rows = c.execute(f"SELECT {EVENT_COLUMNS} FROM events e WHERE e.id = ?",
                     (event_id,)).fetchall()
    found = _with_deliveries(c, rows)
    return found[0] if found else None


def list_webhooks(c: sqlite3.Connection) -> list[Webhook]:
    return [_webhook(r) for r in c.execute(
        f"SELECT {WEBHOOK_COLUMNS} FROM webhooks w ORDER BY w.created_at, w.id")]


def claim_deliveries(c: sqlite3.Connection, now: datetime, lease_until: datetime, claim: str,
                     limit: int) -> list[tuple[Delivery, Event, Webhook]]:
    rows = c.execute(
        f"SELECT {DELIVERY_COLUMNS}, {EVENT_COLUMNS}, {WEBHOOK_COLUMNS} FROM event_deliveries d "
        "JOIN events e ON e.seq = d.event_seq JOIN webhooks w ON w.id = d.webhook_id "
        "WHERE d.state = 'pending' AND d.next_attempt_at <= ? ORDER BY d.next_attempt_at "
        "LIMIT ?", (_t(now), limit)).fetchall()
    c.executemany("UPDATE event_deliveries SET claim = ?, next_attempt_at = ? "
                  "WHERE event_seq = ? AND webhook_id = ?",
                  [(claim, _t(lease_until), r[0], r[1]) for r in rows])
    return [(_delivery(r[:8]), _event(r[8:15])[1], _webhook(r[15:])) for r in rows]


def finish_delivery(c: sqlite3.Connection, d: Delivery, claim: str) -> bool:
    return c.execute(
        "UPDATE event_deliveries SET state = ?, attempts = ?, next_attempt_at = ?, claim = NULL, "
        "last_status = ?, last_error = ?, delivered_at = ? "
        "WHERE event_seq = ? AND webhook_id = ? AND claim = ?",
        (d.state, d.attempts, _t(d.next_attempt_at), d.last_status, d.last_error,
         None if d.delivered_at is None else _t(d.delivered_at), d.event_seq, d.webhook_id,
         claim)).rowcount == 1


def acquire_lease(c: sqlite3.Connection, name: str, holder: str, now: datetime,
                  until: datetime) -> bool:
    return c.execute(
        "INSERT INTO leases (name, holder, until) VALUES (?1, ?2, ?3) ON CONFLICT (name) "
        "DO UPDATE SET holder = ?2, until = ?3 WHERE leases.until <= ?4 OR leases.holder = ?2",
        (name, holder, _t(until), _t(now))).rowcount == 1


def rewrap_webhooks(c: sqlite3.Connection, target_version: int, rewrap: Rewrap) -> int:
    rows = c.execute("SELECT id, kek_version, nonce, ciphertext FROM webhooks "
                     "WHERE kek_version <> ?", (target_version,)).fetchall()
    updates = []
    for webhook_id, version, nonce, ct in rows:
        new = rewrap(webhook_id, WrappedSecret(version, bytes(nonce), bytes(ct)))
        updates.append((new.kek_version, new.nonce, new.ciphertext, webhook_id))
    c.executemany("UPDATE webhooks SET kek_version = ?, nonce = ?, ciphertext = ? "
                  "WHERE id = ?", updates)
    return len(updates)
