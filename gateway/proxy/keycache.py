"""Per-process cache of verified key material (DESIGN §3 "cache", §3.2).

One store read serves many requests: entries live ``ttl`` seconds, unknown key IDs
are cached negatively for ``negative_ttl`` (in a map of their own, so that a flood of
made-up key IDs cannot push real keys out), concurrent misses for one key ID share
one store read (single flight), and when the store is unreachable an entry may be
served up to ``serve_stale`` past its TTL. Lifecycle changes reach every worker
through the store's ``key_changes`` log, polled every ``change_poll`` seconds.
The plaintext secret exists only here, in memory.

Each cached key costs the cyclic garbage collector three tracked objects (the entry,
its record and the record's wrapped secret): a full collection walks all of them, so
with 100,000 keys in use every object per key is milliseconds of pause.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from redis.exceptions import RedisError

from ..errors import GatewayError
from ..kek import KekError, Keyring
from ..keys.record import KeyRecord
from ..signing import Derived
from ..store import Store, StoreError
from .headers import TrustedProxies
from .shared import RedisDown, SharedTier

__all__ = ["CacheStats", "KeyCache", "KeyEntry"]

log = logging.getLogger("gateway.cache")


_NEVER = float("inf")


class KeyEntry:
    """A cached key: the record, its HMAC key, and its deadlines as epoch seconds
    (computed once per load, so the hot path compares floats, not datetimes);
    ``loaded``: when it was read, on the cache's clock."""

    __slots__ = ("record", "secret", "revoked_at", "expires_at", "inactive_at", "deadline",
                 "sources", "derived", "loaded")

    def __init__(self, record: KeyRecord, secret: bytes, inactivity: float,
                 loaded: float) -> None:
        self.record = record
        self.loaded = loaded
        self.secret = secret  # the HMAC key: ASCII bytes of the secret
        self.revoked_at = record.revoked_at.timestamp() if record.revoked_at else _NEVER
        self.expires_at = record.expires_at.timestamp() if record.expires_at else _NEVER
        inactive = record.inactive_after(inactivity)
        self.inactive_at = inactive.timestamp() if inactive else _NEVER
        self.deadline = min(self.expires_at, self.inactive_at)
        # the key's source allowlist, parsed once per load rather than per request
        self.sources = (None if record.source_cidrs is None
                        else TrustedProxies(record.source_cidrs))
        self.derived: Derived = {}  # SigV4 signing keys, derived once per day while cached

    def status(self, now: float) -> str:
        """As ``KeyRecord.status`` (same precedence), at epoch second ``now``."""
        if now >= self.revoked_at:
            return "revoked"
        if now >= self.expires_at:
            return "expired"
        if now >= self.inactive_at:
            return "inactive"
        return "rotating" if self.revoked_at != _NEVER else "active"

    def __repr__(self) -> str:
        return f"KeyEntry({self.record.key_id!r})"


class _Stale:
    """A cached entry served past its TTL because the store is unreachable."""

    __slots__ = ("entry",)

    def __init__(self, entry: KeyEntry | None) -> None:
        self.entry = entry


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    shared_hits: int = 0
    misses: int = 0
    store_reads: int = 0
    store_errors: int = 0
    stale_served: int = 0


class KeyCache:
    def __init__(self, store: Store, keyring: Keyring, *, ttl: float, negative_ttl: float,
                 max_entries: int, serve_stale: float, inactivity: float,
                 shared: SharedTier | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._keyring = keyring
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._max_entries = max_entries
        self._serve_stale = serve_stale
        self._clock = clock
        self._inactivity = inactivity
        self._shared = shared
        self._entries: dict[str, KeyEntry] = {}
        self._unknown: dict[str, float] = {}  # key IDs the store does not have -> loaded at
        self._inflight: dict[str, asyncio.Future[KeyEntry | None]] = {}
        self._seen_seq: int | None = None  # None until the first poll
        # a load that began before its key was dropped (or everything was) must not cache
        # its possibly pre-change result afterwards: drop sequence numbers per key
        self._drops = 0
        self._dropped_at: dict[str, int] = {}
        self._cleared_at = 0
        self.store_ok = True  # did the last change poll reach the store?
        self.stats = CacheStats()

    def __len__(self) -> int:
        return len(self._entries) + len(self._unknown)

    def __contains__(self, key_id: str) -> bool:
        return key_id in self._entries or key_id in self._unknown

    def fresh(self, key_id: str) -> KeyEntry | None | Literal[False]:
        """The cached answer for ``key_id`` without awaiting anything (the hot path),
        or ``False`` when only :meth:`get` can tell."""
        entry = self._entries.get(key_id)
        if entry is not None:
            if self._clock() - entry.loaded < self._positive_ttl():
                self.stats.hits += 1
                return entry
        else:
            loaded = self._unknown.get(key_id)
            if loaded is not None and self._clock() - loaded < self._negative_ttl:
                self.stats.hits += 1
                return None
        return False

    async def get(self, key_id: str) -> KeyEntry | None:
        """The key's entry, or ``None`` when the store has no such key."""
        entry = self.fresh(key_id)
        if entry is not False:
            return entry
        cached = self._entries.get(key_id)  # an expired entry may still serve as stale
        now = self._clock()
        self.stats.misses += 1
        task = self._inflight.get(key_id)
        if task is None:  # single flight: one store read however many requests wait for it
            task = asyncio.ensure_future(self._load(key_id, cached, now))
            self._inflight[key_id] = task
            task.add_done_callback(lambda _: self._inflight.pop(key_id, None))
        # shielded: a client that goes away must not cancel the read the others await
        return await asyncio.shield(task)

    def _positive_ttl(self) -> float:
        # while pub/sub is not listening, changes arrive only by the poll: keep entries short
        if self._shared is not None and not self._shared.subscribed:
            return min(self._ttl, 1.0)
        return self._ttl

    async def _load(self, key_id: str, cached: KeyEntry | None, now: float
                    ) -> KeyEntry | None:
        generation = self._drops
        if self._shared is not None and self._shared.healthy:
            try:
                found, record = await self._shared.get_record(key_id)
            except RedisDown:
                found = False
            if found:
                self.stats.shared_hits += 1
                return self._entry(key_id, record, generation)
        record = await self._read_store(key_id, cached, now)
        if isinstance(record, _Stale):
            return record.entry
        if self._shared is not None and self._shared.healthy and \
                self._unchanged(key_id, generation):
            await self._shared.put_record(key_id, record, self._ttl if record is not None
                                          else self._negative_ttl)
        return self._entry(key_id, record, generation)

    async def _read_store(self, key_id: str, cached: KeyEntry | None, now: float
                          ) -> KeyRecord | None | _Stale:
        self.stats.store_reads += 1
        try:
            return await self._store.get_key(key_id)
        except StoreError:
            self.stats.store_errors += 1
            if cached is not None and now - cached.loaded < self._ttl + self._serve_stale:
                self.stats.stale_served += 1
                return _Stale(cached)
            raise

    def _entry(self, key_id: str, record: KeyRecord | None, generation: int
               ) -> KeyEntry | None:
        entry = None
        if record is not None:
            try:
                secret = self._keyring.unwrap_secret(key_id, record.wrapped).hmac_key()
            except KekError as exc:  # an operator problem: say so in the log, not to the client
                log.error("cannot unwrap key material: %s", exc)
                raise GatewayError("store_unavailable", "key material is unavailable") from None
            entry = KeyEntry(record, secret, self._inactivity, self._clock())
        if self._unchanged(key_id, generation):  # else a change came while we read: don't keep
            self._entries.pop(key_id, None)
            self._unknown.pop(key_id, None)
            if entry is not None:
                _bounded_put(self._entries, key_id, entry, self._max_entries)
            else:
                _bounded_put(self._unknown, key_id, self._clock(), self._max_entries)
        return entry

    def _unchanged(self, key_id: str, since: int) -> bool:
        return self._cleared_at <= since and self._dropped_at.get(key_id, 0) <= since

    def drop(self, key_ids: Iterable[str]) -> None:
        self._drops += 1
        if not self._inflight:  # only loads in flight need to know: keep this small
            self._dropped_at.clear()
        for key_id in key_ids:
            self._entries.pop(key_id, None)
            self._unknown.pop(key_id, None)
            self._dropped_at[key_id] = self._drops

    def clear(self) -> None:
        self._drops += 1
        self._cleared_at = self._drops
        self._dropped_at.clear()
        self._entries.clear()
        self._unknown.clear()

    async def poll_changes(self) -> int:
        """Drop every key changed since the last poll; the number of changes seen."""
        seq = await self._store.max_change_seq()
        if self._seen_seq is None:  # first poll: nothing cached predates it
            self._seen_seq = seq
            return 0
        seen = 0
        while seq > self._seen_seq:
            changes = await self._store.changes_since(self._seen_seq)
            if not changes:
                break
            ids = sorted({c.key_id for c in changes})
            self.drop(ids)
            if self._shared is not None:  # a publisher may have died before dropping them
                try:
                    await self._shared.forget(ids)
                except (RedisError, OSError):
                    pass
            self._seen_seq = changes[-1].seq
            seen += len(changes)
        return seen

    async def run_change_poll(self, interval: float) -> None:
        while True:
            try:
                await self.poll_changes()
            except (StoreError, OSError) as exc:
                if self.store_ok:
                    log.warning("change poll failed: %s", exc)
                self.store_ok = False
            else:
                self.store_ok = True
            await asyncio.sleep(interval)


def _bounded_put(entries: dict[str, Any], key_id: str, value: Any, limit: int) -> None:
    while len(entries) >= limit:  # oldest first (insertion order)
        del entries[next(iter(entries))]
    entries[key_id] = value
