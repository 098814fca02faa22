"""PostgreSQL store (asyncpg pool), for several gateway instances sharing one database.

``key_changes.seq`` comes from a sequence, and sequences hand out numbers in
start order, not commit order: a poller that saw seq 11 could miss a seq 10 that
commits later. Every transaction that appends to ``key_changes`` therefore takes
one transaction-scoped advisory lock first, so seq order is commit order
(DESIGN.md §3.2). Lifecycle writes are rare; the lock costs them little.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import asyncpg  # type: ignore[import-untyped]
import orjson

from gateway.config import ConfigError
from gateway.events.model import Delivery, Event, EventFilter, StoredEvent, Webhook
from gateway.keys.record import AuditEntry, KeyChange, KeyRecord, WrappedSecret
from gateway.store import postgres_events as ev
from gateway.store.base import (
    KEY_COLUMNS,
    MUTABLE_COLUMNS,
    Activity,
    AuditFilter,
    KeyFilter,
    MfaEnrolment,
    Page,
    Rewrap,
    Store,
    StoreError,
    Transaction,
    UsageCount,
    audit_sql,
    decode_cursor,
    encode_cursor,
    filter_sql,
    record_from_values,
    record_values,
)
from gateway.store.migrations import POSTGRES_MIGRATIONS

__all__ = ["PostgresStore"]

JSON_COLUMNS = frozenset({"scopes", "rate_limit", "source_cidrs"})
SELECT_KEYS = f"SELECT {', '.join(KEY_COLUMNS)} FROM keys"
# a stalled server must not hang requests: waits for a connection or a reply are bounded
COMMAND_TIMEOUT = 5.0
CHANGES_LOCK = 0x67776B63  # "gwkc": orders key_changes.seq by commit
MIGRATION_LOCK = 0x67776B6D  # "gwkm": one migrator at a time
INSERT_KEY = (f"INSERT INTO keys ({', '.join(KEY_COLUMNS)}) VALUES "
              f"({', '.join(f'${i}' + ('::jsonb' if c in JSON_COLUMNS else '') for i, c in enumerate(KEY_COLUMNS, 1))})")
UPDATE_KEY = ("UPDATE keys SET "
              + ", ".join(f"{c} = ${i}" + ("::jsonb" if c in JSON_COLUMNS else "")
                          for i, c in enumerate(MUTABLE_COLUMNS, 2))
              + " WHERE key_id = $1")


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _decode(row: asyncpg.Record) -> KeyRecord:
    v = dict(row)
    for c in JSON_COLUMNS:
        v[c] = None if v[c] is None else orjson.loads(v[c])
    return record_from_values(v)


def _encode(rec: KeyRecord, columns: Sequence[str]) -> list[Any]:
    v = record_values(rec)
    return [_json(v[c]) if c in JSON_COLUMNS else v[c] for c in columns]


def _where(dsn: str) -> str:
    """host:port/db for messages — never the password a DSN may carry."""
    try:
        parts = urlsplit(dsn)
        return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"
    except ValueError as exc:
        raise ConfigError(f"setting store.url: not a valid PostgreSQL URL ({exc})") from None


class _PostgresTx(Transaction):
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._c = conn
        self._changes_locked = False
        self.changed: list[str] = []  # key IDs logged in key_changes

    async def lock_principals(self, principals: Sequence[str]) -> None:
        # sorted, so two transactions never wait on each other in opposite orders
        await self._c.execute(
            "SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT hashtextextended(p, 0) AS h "
            "FROM unnest($1::text[]) AS p ORDER BY h) AS s", list(principals))

    async def live_keys(self, principals: Sequence[str], now: datetime) -> list[KeyRecord]:
        rows = await self._c.fetch(
            f"{SELECT_KEYS} WHERE principal = ANY($1::text[]) AND "
            "(revoked_at IS NULL OR revoked_at > $2) AND (expires_at IS NULL OR expires_at > $2)",
            list(principals), now)
        return [_decode(r) for r in rows]

    async def get_key(self, key_id: str) -> KeyRecord | None:
        row = await self._c.fetchrow(f"{SELECT_KEYS} WHERE key_id = $1 FOR UPDATE", key_id)
        return None if row is None else _decode(row)

    async def insert_keys(self, records: Sequence[KeyRecord]) -> None:
        await self._c.executemany(INSERT_KEY, [_encode(r, KEY_COLUMNS) for r in records])

    async def update_key(self, record: KeyRecord) -> None:
        await self._c.execute(UPDATE_KEY, record.key_id, *_encode(record, MUTABLE_COLUMNS))

    async def add_audit(self, entries: Sequence[AuditEntry]) -> None:
        await self._c.executemany(
            "INSERT INTO audit (at, actor_key_id, actor_principal, action, target, source, "
            "outcome, details) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)",
            [(e.at, e.actor_key_id, e.actor_principal, e.action, e.target, e.source,
              e.outcome, _json(e.details)) for e in entries])

    async def add_changes(self, changes: Sequence[tuple[str, str, datetime]]) -> None:
        self.changed.extend(k for k, _, _ in changes)
        if not self._changes_locked:
            await self._c.execute("SELECT pg_advisory_xact_lock($1)", CHANGES_LOCK)
            self._changes_locked = True
        await self._c.execute(
            "INSERT INTO key_changes (key_id, kind, at) "
            "SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])",
            [c[0] for c in changes], [c[1] for c in changes], [c[2] for c in changes])

    async def add_events(self, events: Sequence[Event]) -> list[Event]:
        return await ev.add_events(self._c, events)

    async def insert_webhook(self, webhook: Webhook) -> None:
        await ev.insert_webhook(self._c, webhook)

    async def delete_webhook(self, webhook_id: str) -> bool:
        return await ev.delete_webhook(self._c, webhook_id)

    async def redeliver(self, event_id: str, now: datetime) -> bool:
        return await ev.redeliver(self._c, event_id, now)

    async def insert_mfa(self, enrolment: MfaEnrolment) -> bool:
        w = enrolment.wrapped
        status = await self._c.execute(
            "INSERT INTO mfa_enrolments (principal, kek_version, nonce, ciphertext, created_at, "
            "last_step) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (principal) DO NOTHING",
            enrolment.principal, w.kek_version, w.nonce, w.ciphertext, enrolment.created_at,
            enrolment.last_step)
        return bool(status == "INSERT 0 1")


class PostgresStore(Store):
    """Open with :meth:`open`, which connects a pool and migrates the schema.

    The DSN is asyncpg's; extra query parameters become server settings, so
    ``?search_path=tenant_a`` puts the tables in schema ``tenant_a``."""

    def __init__(self, pool: asyncpg.Pool, where: str) -> None:
        self._pool = pool
        self._where = where

    @classmethod
    async def open(cls, dsn: str, *, max_size: int = 10) -> PostgresStore:
        where = _where(dsn)
        try:
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=max_size, timeout=10,
                                             command_timeout=COMMAND_TIMEOUT)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"cannot connect to PostgreSQL at {where}: "
                             f"{type(exc).__name__}: {exc}") from exc
        except ValueError as exc:  # asyncpg's DSN parser
            raise ConfigError(f"setting store.url: {exc}") from None
        store = cls(pool, where)
        try:
            store.applied_migrations = tuple(await store.migrate())
        except BaseException:
            await pool.close()
            raise
        return store

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            async with self._pool.acquire(timeout=COMMAND_TIMEOUT) as conn:
                yield conn
        except (OSError, TimeoutError, asyncpg.PostgresError,
                asyncpg.InterfaceError) as exc:
            raise StoreError(f"PostgreSQL at {self._where}: {type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        await self._pool.close()

    async def migrate(self) -> list[int]:
        async with self._conn() as c, c.transaction():
            await c.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await c.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                            "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL)")
            done = {r[0] for r in await c.fetch("SELECT version FROM schema_migrations")}
            applied = []
            for version, statements in POSTGRES_MIGRATIONS:
                if version in done:
                    continue
                for stmt in statements:
                    await c.execute(stmt)
                await c.execute("INSERT INTO schema_migrations VALUES ($1, now())", version)
                applied.append(version)
            return applied

    async def schema_version(self) -> int:
        async with self._conn() as c:
            return int(await c.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations"))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self._conn() as c:
            async with c.transaction():
                tx = _PostgresTx(c)
                yield tx
        await self._changes_committed(tx.changed)

    async def get_key(self, key_id: str) -> KeyRecord | None:
        async with self._conn() as c:
            row = await c.fetchrow(f"{SELECT_KEYS} WHERE key_id = $1", key_id)
        return None if row is None else _decode(row)

    async def get_key_by_secret_sha256(self, digest: bytes) -> KeyRecord | None:
        async with self._conn() as c:
            row = await c.fetchrow(f"{SELECT_KEYS} WHERE secret_sha256 = $1", digest)
        return None if row is None else _decode(row)

    async def list_keys(self, where: KeyFilter, *, now: datetime, inactivity: float,
                        limit: int = 100, cursor: str | None = None) -> Page:
        params: list[Any] = []

        def param(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        conds = filter_sql(where, now, inactivity, param)
        if cursor is not None:
            at, key_id = decode_cursor(cursor)
            conds.append(f"(created_at, key_id) > ({param(at)}, {param(key_id)})")
        sql = (f"{SELECT_KEYS} {'WHERE ' + ' AND '.join(conds) if conds else ''} "
               f"ORDER BY created_at, key_id LIMIT {int(limit) + 1}")
        async with self._conn() as c:
            rows = await c.fetch(sql, *params)
        items = [_decode(r) for r in rows[:limit]]
        return Page(items, encode_cursor(items[-1]) if len(rows) > limit else None)

    async def count_keys(self, where: KeyFilter, *, now: datetime, inactivity: float) -> int:
        params: list[Any] = []

        def param(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        conds = filter_sql(where, now, inactivity, param)
        async with self._conn() as c:
            return int(await c.fetchval(
                f"SELECT COUNT(*) FROM keys {'WHERE ' + ' AND '.join(conds) if conds else ''}",
                *params))

    async def find_audit(self, where: AuditFilter, *, limit: int = 100,
                         after: int | None = None) -> list[AuditEntry]:
        params: list[Any] = []

        def param(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        conds = audit_sql(where, after, param)
        async with self._conn() as c:
            rows = await c.fetch(
                f"SELECT * FROM audit {'WHERE ' + ' AND '.join(conds) if conds else ''} "
                f"ORDER BY id LIMIT {int(limit)}", *params)
        return [AuditEntry(id=r["id"], at=r["at"], actor_key_id=r["actor_key_id"],
                           actor_principal=r["actor_principal"], action=r["action"],
                           target=r["target"], source=r["source"], outcome=r["outcome"],
                           details=orjson.loads(r["details"])) for r in rows]

    async def add_usage(self, counts: Sequence[UsageCount]) -> None:
        async with self._conn() as c:
            await c.execute(
                "INSERT INTO key_usage (key_id, minute, route, status, source, count) "
                "SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::int[], "
                "$5::text[], $6::bigint[]) ON CONFLICT (key_id, minute, route, status, source) "
                "DO UPDATE SET count = key_usage.count + excluded.count",
                [u.key_id for u in counts], [u.minute for u in counts],
                [u.route for u in counts], [u.status for u in counts],
                [u.source for u in counts], [u.count for u in counts])

    async def activity(self, key_id: str, since: datetime) -> Activity:
        start = since.replace(second=0, microsecond=0)
        async with self._conn() as c:
            routes = await c.fetch(
                "SELECT route, status, SUM(count) AS n FROM key_usage WHERE key_id = $1 AND "
                "minute >= $2 GROUP BY route, status ORDER BY route, status", key_id, start)
            sources = await c.fetch(
                "SELECT source, SUM(count) AS n FROM key_usage WHERE key_id = $1 AND "
                "minute >= $2 GROUP BY source ORDER BY source", key_id, start)
        return Activity([(r["route"], int(r["status"]), int(r["n"])) for r in routes],
                        [(r["source"], int(r["n"])) for r in sources])

    async def get_mfa(self, principal: str) -> MfaEnrolment | None:
        async with self._conn() as c:
            r = await c.fetchrow("SELECT * FROM mfa_enrolments WHERE principal = $1", principal)
        if r is None:
            return None
        return MfaEnrolment(r["principal"], WrappedSecret(r["kek_version"], bytes(r["nonce"]),
                                                          bytes(r["ciphertext"])),
                            r["created_at"], int(r["last_step"]))

    async def use_mfa_step(self, principal: str, step: int) -> bool:
        async with self._conn() as c:
            status = await c.execute("UPDATE mfa_enrolments SET last_step = $1 "
                                     "WHERE principal = $2 AND last_step < $1", step, principal)
        return bool(status == "UPDATE 1")

    async def max_change_seq(self) -> int:
        async with self._conn() as c:
            return int(await c.fetchval("SELECT COALESCE(MAX(seq), 0) FROM key_changes"))

    async def changes_since(self, seq: int, limit: int = 1000) -> list[KeyChange]:
        async with self._conn() as c:
            rows = await c.fetch("SELECT seq, key_id, kind, at FROM key_changes WHERE seq > $1 "
                                 "ORDER BY seq LIMIT $2", seq, limit)
        return [KeyChange(r["seq"], r["key_id"], r["kind"], r["at"]) for r in rows]

    async def touch_last_used(self, uses: Mapping[str, datetime]) -> None:
        async with self._conn() as c:
            await c.execute(
                "UPDATE keys SET last_used_at = u.at FROM unnest($1::text[], $2::timestamptz[]) "
                "AS u(key_id, at) WHERE keys.key_id = u.key_id AND "
                "(keys.last_used_at IS NULL OR keys.last_used_at < u.at)",
                list(uses), list(uses.values()))

    async def count_by_kek_version(self) -> dict[int, int]:
        async with self._conn() as c:
            rows = await c.fetch(
                "SELECT kek_version, COUNT(*) FROM (SELECT kek_version FROM keys UNION ALL "
                "SELECT kek_version FROM mfa_enrolments UNION ALL "
                "SELECT kek_version FROM webhooks) AS w GROUP BY kek_version")
        return {int(r[0]): int(r[1]) for r in rows}

    async def rewrap_mfa(self, target_version: int,
                         rewrap: Callable[[str, WrappedSecret], WrappedSecret]) -> int:
        async with self._conn() as c, c.transaction():
            rows = await c.fetch("SELECT principal, kek_version, nonce, ciphertext FROM "
                                 "mfa_enrolments WHERE kek_version <> $1 FOR UPDATE",
                                 target_version)
            for r in rows:
                new = rewrap(r["principal"], WrappedSecret(r["kek_version"], bytes(r["nonce"]),
                                                           bytes(r["ciphertext"])))
                await c.execute("UPDATE mfa_enrolments SET kek_version = $1, nonce = $2, "
                                "ciphertext = $3 WHERE principal = $4", new.kek_version,
                                new.nonce, new.ciphertext, r["principal"])
            return len(rows)

    async def rewrap_webhooks(self, target_version: int, rewrap: Rewrap) -> int:
        async with self._conn() as c, c.transaction():
            return await ev.rewrap_webhooks(c, target_version, rewrap)

    async def existing_dedups(self, dedups: Sequence[str]) -> set[str]:
        async with self._conn() as c:
            return await ev.existing_dedups(c, dedups)

    async def list_events(self, where: EventFilter, *, limit: int = 100,
                          after: int | None = None) -> list[StoredEvent]:
        async with self._conn() as c:
            return await ev.list_events(c, where, limit, after)

    async def get_event(self, event_id: str) -> StoredEvent | None:
        async with self._conn() as c:
            return await ev.get_event(c, event_id)

    async def list_webhooks(self) -> list[Webhook]:
        async with self._conn() as c:
            return await ev.list_webhooks(c)

    async def claim_deliveries(self, now: datetime, lease_until: datetime, claim: str,
                               limit: int) -> list[tuple[Delivery, Event, Webhook]]:
        async with self._conn() as c:
            return await ev.claim_deliveries(c, now, lease_until, claim, limit)

    async def finish_delivery(self, delivery: Delivery, claim: str) -> bool:
        async with self._conn() as c:
            return await ev.finish_delivery(c, delivery, claim)

    async def acquire_lease(self, name: str, holder: str, now: datetime,
                            until: datetime) -> bool:
        async with self._conn() as c:
            return await ev.acquire_lease(c, name, holder, now, until)

    async def rewrap_batch(self, target_version: int, limit: int, rewrap: Rewrap,
                           at: datetime) -> int:
        async with self._conn() as c, c.transaction():
            # SKIP LOCKED: two re-wrappers (or a re-wrap and a revoke) never block each other
            rows = await c.fetch(
                "SELECT key_id, kek_version, nonce, ciphertext FROM keys WHERE kek_version <> $1 "
                "LIMIT $2 FOR UPDATE SKIP LOCKED", target_version, limit)
            if not rows:
                return 0
            new = [rewrap(r["key_id"], WrappedSecret(r["kek_version"], r["nonce"],
                                                     r["ciphertext"])) for r in rows]
            ids = [r["key_id"] for r in rows]
            await c.execute(
                "UPDATE keys SET kek_version = u.v, nonce = u.n, ciphertext = u.c FROM "
                "unnest($1::text[], $2::int[], $3::bytea[], $4::bytea[]) AS u(k, v, n, c) "
                "WHERE keys.key_id = u.k", ids, [w.kek_version for w in new],
                [w.nonce for w in new], [w.ciphertext for w in new])
            tx = _PostgresTx(c)
            await tx.add_changes([(k, "rewrapped", at) for k in ids])
            return len(rows)
