"""SQLite store: the embedded default (one file, WAL mode, stdlib ``sqlite3``).

One connection, used from one worker thread, so the event loop never blocks on
disk. An ``asyncio.Lock`` gives each transaction the connection to itself;
``BEGIN IMMEDIATE`` and ``busy_timeout`` serialise it against other processes
(the CLI next to a running ``serve``). Times are stored as fixed-width RFC 3339
text (``2026-01-02T03:04:05.000006Z``), which sorts like the instants it names.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from typing import Any, TypeVar

import orjson

from gateway.events.model import Delivery, Event, EventFilter, StoredEvent, Webhook
from gateway.keys.record import AuditEntry, KeyChange, KeyRecord, WrappedSecret
from gateway.store import sqlite_events as ev
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
from gateway.store.migrations import SQLITE_MIGRATIONS

__all__ = ["SQLiteStore"]

T = TypeVar("T")
JSON_COLUMNS = frozenset({"scopes", "rate_limit", "source_cidrs"})
TIME_COLUMNS = frozenset({"created_at", "expires_at", "last_used_at", "revoked_at"})
SELECT_KEYS = f"SELECT {', '.join(KEY_COLUMNS)} FROM keys"


def _t(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _bind(value: Any) -> Any:
    return _t(value) if isinstance(value, datetime) else value


def _encode(rec: KeyRecord) -> dict[str, Any]:
    out = record_values(rec)
    for c in JSON_COLUMNS:
        out[c] = None if out[c] is None else orjson.dumps(out[c]).decode()
    for c in TIME_COLUMNS:
        out[c] = None if out[c] is None else _t(out[c])
    out["issued_with_mfa"] = int(out["issued_with_mfa"])
    return out


def _decode(row: sqlite3.Row) -> KeyRecord:
    v = dict(zip(KEY_COLUMNS, row, strict=True))
    for c in JSON_COLUMNS:
        v[c] = None if v[c] is None else orjson.loads(v[c])
    for c in TIME_COLUMNS:
        v[c] = None if v[c] is None else datetime.fromisoformat(v[c])
    return record_from_values(v)


def _in_transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn`` between BEGIN IMMEDIATE and COMMIT; ROLLBACK if it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


class _SQLiteTx(Transaction):
    def __init__(self, store: SQLiteStore) -> None:
        self._s = store
        self.changed: list[str] = []  # key IDs logged in key_changes

    async def lock_principals(self, principals: Sequence[str]) -> None:
        return None  # BEGIN IMMEDIATE already holds the database's one write lock

    async def live_keys(self, principals: Sequence[str], now: datetime) -> list[KeyRecord]:
        if not principals:
            return []
        marks = ", ".join("?" * len(principals))
        sql = (f"{SELECT_KEYS} WHERE principal IN ({marks}) "
               "AND (revoked_at IS NULL OR revoked_at > ?) AND (expires_at IS NULL OR expires_at > ?)")
        rows = await self._s._run(lambda c: c.execute(sql, (*principals, _t(now), _t(now)))
                                  .fetchall())
        return [_decode(r) for r in rows]

    async def get_key(self, key_id: str) -> KeyRecord | None:
        return await self._s._get(key_id)

    async def insert_keys(self, records: Sequence[KeyRecord]) -> None:
        sql = (f"INSERT INTO keys ({', '.join(KEY_COLUMNS)}) "
               f"VALUES ({', '.join(':' + c for c in KEY_COLUMNS)})")
        rows = [_encode(r) for r in records]
        await self._s._run(lambda c: c.executemany(sql, rows))

    async def update_key(self, record: KeyRecord) -> None:
        sql = (f"UPDATE keys SET {', '.join(f'{c} = :{c}' for c in MUTABLE_COLUMNS)} "
               "WHERE key_id = :key_id")
        row = _encode(record)
        await self._s._run(lambda c: c.execute(sql, row))

    async def add_audit(self, entries: Sequence[AuditEntry]) -> None:
        sql = ("INSERT INTO audit (at, actor_key_id, actor_principal, action, target, source, "
               "outcome, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
        rows = [(_t(e.at), e.actor_key_id, e.actor_principal, e.action, e.target, e.source,
                 e.outcome, orjson.dumps(e.details).decode()) for e in entries]
        await self._s._run(lambda c: c.executemany(sql, rows))

    async def add_changes(self, changes: Sequence[tuple[str, str, datetime]]) -> None:
        self.changed.extend(k for k, _, _ in changes)
        rows = [(k, kind, _t(at)) for k, kind, at in changes]
        await self._s._run(lambda c: c.executemany(
            "INSERT INTO key_changes (key_id, kind, at) VALUES (?, ?, ?)", rows))

    async def add_events(self, events: Sequence[Event]) -> list[Event]:
        return await self._s._run(lambda c: ev.add_events(c, events))

    async def insert_webhook(self, webhook: Webhook) -> None:
        await self._s._run(lambda c: ev.insert_webhook(c, webhook))

    async def delete_webhook(self, webhook_id: str) -> bool:
        return await self._s._run(lambda c: ev.delete_webhook(c, webhook_id))

    async def redeliver(self, event_id: str, now: datetime) -> bool:
        return await self._s._run(lambda c: ev.redeliver(c, event_id, now))

    async def insert_mfa(self, enrolment: MfaEnrolment) -> bool:
        w = enrolment.wrapped
        row = (enrolment.principal, w.kek_version, w.nonce, w.ciphertext,
               _t(enrolment.created_at), enrolment.last_step)
        return await self._s._run(lambda c: c.execute(
            "INSERT OR IGNORE INTO mfa_enrolments (principal, kek_version, nonce, ciphertext, "
            "created_at, last_step) VALUES (?, ?, ?, ?, ?, ?)", row).rowcount == 1)


class SQLiteStore(Store):
    """Open with :meth:`open`, which creates the file and migrates the schema."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        self._lock = asyncio.Lock()
        self._conn: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: str) -> SQLiteStore:
        store = cls(path)
        try:
            await store._run(store._connect)
            store.applied_migrations = tuple(await store.migrate())
        except BaseException:
            await store.close()
            raise
        return store

    def _connect(self, _: sqlite3.Connection | None) -> None:
        try:
            Path(self.path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open SQLite database {self.path}: {exc}") from exc
        self._conn = conn

    async def _run(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(connection)`` on the store's thread; the caller holds the lock
        (inside a transaction) or needs none (opening, closing)."""
        def call() -> T:
            try:
                return fn(self._conn)
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite database {self.path}: {exc}") from exc
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def _locked(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        async with self._lock:
            return await self._run(fn)

    async def close(self) -> None:
        def shut(conn: sqlite3.Connection | None) -> None:
            if conn is not None:
                conn.close()
        if self._conn is not None:
            await self._run(shut)
            self._conn = None
        self._executor.shutdown(wait=True)

    async def migrate(self) -> list[int]:
        def run(c: sqlite3.Connection) -> list[int]:
            c.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                      "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
            done = {r[0] for r in c.execute("SELECT version FROM schema_migrations")}
            applied = []
            for version, statements in SQLITE_MIGRATIONS:
                if version in done:
                    continue
                for stmt in statements:
                    c.execute(stmt)
                c.execute("INSERT INTO schema_migrations VALUES (?, ?)",
                          (version, _t(datetime.now(UTC))))
                applied.append(version)
            return applied
        return await self._locked(lambda c: _in_transaction(c, run))

    async def schema_version(self) -> int:
        return await self._locked(lambda c: int(c.execute(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self._lock:
            await self._run(lambda c: c.execute("BEGIN IMMEDIATE"))
            tx = _SQLiteTx(self)
            try:
                yield tx
                await self._run(lambda c: c.execute("COMMIT"))
            except BaseException:
                await asyncio.shield(self._run(lambda c: c.in_transaction
                                               and c.execute("ROLLBACK")))
                raise
        await self._changes_committed(tx.changed)

    async def _get(self, key_id: str) -> KeyRecord | None:
        row = await self._run(lambda c: c.execute(f"{SELECT_KEYS} WHERE key_id = ?",
                                                  (key_id,)).fetchone())
        return None if row is None else _decode(row)

    async def get_key(self, key_id: str) -> KeyRecord | None:
        async with self._lock:
            return await self._get(key_id)

    async def get_key_by_secret_sha256(self, digest: bytes) -> KeyRecord | None:
        row = await self._locked(lambda c: c.execute(
            f"{SELECT_KEYS} WHERE secret_sha256 = ?", (digest,)).fetchone())
        return None if row is None else _decode(row)

    async def list_keys(self, where: KeyFilter, *, now: datetime, inactivity: float,
                        limit: int = 100, cursor: str | None = None) -> Page:
        params: list[Any] = []

        def param(value: Any) -> str:
            params.append(_bind(value))
            return f"?{len(params)}"  # numbered: a placeholder may be used twice

        conds = filter_sql(where, now, inactivity, param)
        if cursor is not None:
            at, key_id = decode_cursor(cursor)
            conds.append(f"(created_at > {param(at)} OR (created_at = {param(at)} "
                         f"AND key_id > {param(key_id)}))")
        sql = (f"{SELECT_KEYS} {'WHERE ' + ' AND '.join(conds) if conds else ''} "
               f"ORDER BY created_at, key_id LIMIT {int(limit) + 1}")
        rows = await self._locked(lambda c: c.execute(sql, params).fetchall())
        items = [_decode(r) for r in rows[:limit]]
        return Page(items, encode_cursor(items[-1]) if len(rows) > limit else None)

    async def count_keys(self, where: KeyFilter, *, now: datetime, inactivity: float) -> int:
        params: list[Any] = []

        def param(value: Any) -> str:
            params.append(_bind(value))
            return f"?{len(params)}"

        conds = filter_sql(where, now, inactivity, param)
        sql = f"SELECT COUNT(*) FROM keys {'WHERE ' + ' AND '.join(conds) if conds else ''}"
        return await self._locked(lambda c: int(c.execute(sql, params).fetchone()[0]))

    async def find_audit(self, where: AuditFilter, *, limit: int = 100,
                         after: int | None = None) -> list[AuditEntry]:
        params: list[Any] = []

        def param(value: Any) -> str:
            params.append(_bind(value))
            return f"?{len(params)}"

        conds = audit_sql(where, after, param)
        sql = ("SELECT id, at, actor_key_id, actor_principal, action, target, source, outcome, "
               f"details FROM audit {'WHERE ' + ' AND '.join(conds) if conds else ''} "
               f"ORDER BY id LIMIT {int(limit)}")
        rows = await self._locked(lambda c: c.execute(sql, params).fetchall())
        return [AuditEntry(id=r[0], at=datetime.fromisoformat(r[1]), actor_key_id=r[2],
                           actor_principal=r[3], action=r[4], target=r[5], source=r[6],
                           outcome=r[7], details=orjson.loads(r[8])) for r in rows]

    async def add_usage(self, counts: Sequence[UsageCount]) -> None:
        def run(c: sqlite3.Connection) -> None:
            # rows are built here, in the store's thread, not in the event loop, and
            # written in index order (half the work of a random order); a flush
            # carries a handful of distinct minutes, each formatted once
            minutes = {m: _t(m) for m in {u.minute for u in counts}}
            c.executemany(
                "INSERT INTO key_usage (key_id, minute, route, status, source, count) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key_id, minute, route, status, source) "
                "DO UPDATE SET count = count + excluded.count",
                sorted(((u.key_id, minutes[u.minute], u.route, u.status, u.source, u.count)
                        for u in counts), key=itemgetter(0)))
        await self._locked(lambda c: _in_transaction(c, run))

    async def activity(self, key_id: str, since: datetime) -> Activity:
        start = _t(since.replace(second=0, microsecond=0))

        def run(c: sqlite3.Connection) -> Activity:
            routes = c.execute(
                "SELECT route, status, SUM(count) FROM key_usage WHERE key_id = ? AND "
                "minute >= ? GROUP BY route, status ORDER BY route, status",
                (key_id, start)).fetchall()
            sources = c.execute(
                "SELECT source, SUM(count) FROM key_usage WHERE key_id = ? AND minute >= ? "
                "GROUP BY source ORDER BY source", (key_id, start)).fetchall()
            return Activity([(r, int(st), int(n)) for r, st, n in routes],
                            [(a, int(n)) for a, n in sources])
        return await self._locked(run)

    async def get_mfa(self, principal: str) -> MfaEnrolment | None:
        row = await self._locked(lambda c: c.execute(
            "SELECT principal, kek_version, nonce, ciphertext, created_at, last_step "
            "FROM mfa_enrolments WHERE principal = ?", (principal,)).fetchone())
        if row is None:
            return None
        return MfaEnrolment(row[0], WrappedSecret(row[1], bytes(row[2]), bytes(row[3])),
                            datetime.fromisoformat(row[4]), int(row[5]))

    async def use_mfa_step(self, principal: str, step: int) -> bool:
        return await self._locked(lambda c: c.execute(
            "UPDATE mfa_enrolments SET last_step = ? WHERE principal = ? AND last_step < ?",
            (step, principal, step)).rowcount == 1)

    async def max_change_seq(self) -> int:
        return await self._locked(lambda c: int(c.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM key_changes").fetchone()[0]))

    async def changes_since(self, seq: int, limit: int = 1000) -> list[KeyChange]:
        rows = await self._locked(lambda c: c.execute(
            "SELECT seq, key_id, kind, at FROM key_changes WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit)).fetchall())
        return [KeyChange(r[0], r[1], r[2], datetime.fromisoformat(r[3])) for r in rows]

    async def touch_last_used(self, uses: Mapping[str, datetime]) -> None:
        def run(c: sqlite3.Connection) -> None:  # rows built in the store's thread
            c.executemany("UPDATE keys SET last_used_at = ?2 WHERE key_id = ?1 AND "
                          "(last_used_at IS NULL OR last_used_at < ?2)",
                          sorted(((k, _t(at)) for k, at in uses.items()),  # in index order
                                 key=itemgetter(0)))
        await self._locked(lambda c: _in_transaction(c, run))

    async def count_by_kek_version(self) -> dict[int, int]:
        rows = await self._locked(lambda c: c.execute(
            "SELECT kek_version, COUNT(*) FROM (SELECT kek_version FROM keys UNION ALL "
            "SELECT kek_version FROM mfa_enrolments UNION ALL SELECT kek_version FROM webhooks) "
            "GROUP BY kek_version").fetchall())
        return {int(v): int(n) for v, n in rows}

    async def rewrap_mfa(self, target_version: int,
                         rewrap: Callable[[str, WrappedSecret], WrappedSecret]) -> int:
        def run(c: sqlite3.Connection) -> int:
            rows = c.execute("SELECT principal, kek_version, nonce, ciphertext FROM "
                             "mfa_enrolments WHERE kek_version <> ?", (target_version,)
                             ).fetchall()
            updates = []
            for principal, version, nonce, ct in rows:
                new = rewrap(principal, WrappedSecret(version, bytes(nonce), bytes(ct)))
                updates.append((new.kek_version, new.nonce, new.ciphertext, principal))
            c.executemany("UPDATE mfa_enrolments SET kek_version = ?, nonce = ?, "
                          "ciphertext = ? WHERE principal = ?", updates)
            return len(updates)
        return await self._locked(lambda c: _in_transaction(c, run))

    async def rewrap_webhooks(self, target_version: int, rewrap: Rewrap) -> int:
        return await self._locked(lambda c: _in_transaction(
            c, lambda c: ev.rewrap_webhooks(c, target_version, rewrap)))

    async def existing_dedups(self, dedups: Sequence[str]) -> set[str]:
        return await self._locked(lambda c: ev.existing_dedups(c, dedups))

    async def list_events(self, where: EventFilter, *, limit: int = 100,
                          after: int | None = None) -> list[StoredEvent]:
        return await self._locked(lambda c: ev.list_events(c, where, limit, after))

    async def get_event(self, event_id: str) -> StoredEvent | None:
        return await self._locked(lambda c: ev.get_event(c, event_id))

    async def list_webhooks(self) -> list[Webhook]:
        return await self._locked(ev.list_webhooks)

    async def claim_deliveries(self, now: datetime, lease_until: datetime, claim: str,
                               limit: int) -> list[tuple[Delivery, Event, Webhook]]:
        return await self._locked(lambda c: _in_transaction(
            c, lambda c: ev.claim_deliveries(c, now, lease_until, claim, limit)))

    async def finish_delivery(self, delivery: Delivery, claim: str) -> bool:
        return await self._locked(lambda c: ev.finish_delivery(c, delivery, claim))

    async def acquire_lease(self, name: str, holder: str, now: datetime,
                            until: datetime) -> bool:
        return await self._locked(lambda c: ev.acquire_lease(c, name, holder, now, until))

    async def rewrap_batch(self, target_version: int, limit: int, rewrap: Rewrap,
                           at: datetime) -> int:
        def run(c: sqlite3.Connection) -> int:
            rows = c.execute("SELECT key_id, kek_version, nonce, ciphertext FROM keys "
                             "WHERE kek_version <> ? LIMIT ?", (target_version, limit)).fetchall()
            updates = []
            for key_id, version, nonce, ct in rows:
                new = rewrap(key_id, WrappedSecret(version, nonce, ct))
                updates.append((new.kek_version, new.nonce, new.ciphertext, key_id, version))
            c.executemany("UPDATE keys SET kek_version = ?, nonce = ?, ciphertext = ? "
                          "WHERE key_id = ? AND kek_version = ?", updates)
            c.executemany("INSERT INTO key_changes (key_id, kind, at) VALUES (?, ?, ?)",
                          [(u[3], "rewrapped", _t(at)) for u in updates])
            return len(updates)
        return await self._locked(lambda c: _in_transaction(c, run))
