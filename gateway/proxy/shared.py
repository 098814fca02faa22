"""The Redis tier (DESIGN §3 "cache", "replay", §3.2, §5): what several gateway
instances share — wrapped key records (never a plaintext secret) and negative
entries, replay tokens, rate-limit state — and the pub/sub channel on which every
lifecycle change is announced.

Nothing here is awaited one request at a time: the replay and rate-limit commands of
all requests that arrive in one event-loop tick go out as one pipeline. Every
failure is survivable: callers fall back to the per-process state and the tier
reports itself unhealthy (readiness "degraded") until a command succeeds again.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from ..config import RedisConfig
from ..keys.record import KeyRecord
from ..store.base import record_from_values, record_values
from .resp import RespConnection

__all__ = ["RedisDown", "SharedTier", "decode_record", "encode_record"]

log = logging.getLogger("gateway.redis")

NEGATIVE = b"-"
# GCRA (generic cell rate algorithm): one stored "theoretical arrival time" per key.
# ARGV: emission interval (µs), burst tolerance (µs). Returns {allowed, retry_after µs}.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - now > tolerance then
  return {0, new_tat - now - tolerance}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, 0}
"""


class RedisDown(Exception):
    """Redis did not answer; use the per-process fallback."""


def encode_record(record: KeyRecord) -> bytes:
    """The record as stored in Redis: the secret only wrapped, as in the store."""
    values = record_values(record)
    for name in ("nonce", "ciphertext", "secret_sha256"):
        values[name] = base64.b64encode(values[name]).decode()
    return orjson.dumps(values)


def decode_record(data: bytes) -> KeyRecord:
    from datetime import datetime

    values: dict[str, Any] = orjson.loads(data)
    for name in ("nonce", "ciphertext", "secret_sha256"):
        values[name] = base64.b64decode(values[name])
    for name in ("created_at", "expires_at", "last_used_at", "revoked_at"):
        if values[name] is not None:
            values[name] = datetime.fromisoformat(values[name])
    return record_from_values(values)


class _Batch:
    """Commands submitted during one event-loop tick, sent as one pipeline: on a raw
    RESP connection to a single server, through redis-py's pipeline to a cluster."""

    def __init__(self, tier: SharedTier) -> None:
        self._tier = tier
        self._pending: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None  # held: a getpid per lookup
        self._conn: RespConnection | None = None
        self._connecting = asyncio.Lock()

    def submit(self, *command: Any) -> asyncio.Future[Any]:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((command, future))
        if len(self._pending) == 1:
            loop.call_soon(self._flush)
        return future

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if self._tier.cluster:
            asyncio.ensure_future(self._flush_cluster(batch))
        elif self._conn is not None and self._conn.usable:
            self._send(self._conn, batch)
        else:
            asyncio.ensure_future(self._connect_and_send(batch))

    async def _connect_and_send(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]
                                ) -> None:
        try:
            async with self._connecting:
                if self._conn is None or not self._conn.usable:
                    self._conn = await RespConnection.open(self._tier.url, self._tier.timeout)
        except (OSError, TimeoutError) as exc:  # ConnectionError is an OSError
            self._fail(batch, exc)
            return
        self._send(self._conn, batch)

    def _send(self, conn: RespConnection,
              batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        def done(replies: list[Any] | BaseException) -> None:
            if isinstance(replies, BaseException):
                self._fail(batch, replies)
            else:
                self._settle(batch, replies)

        conn.execute([command for command, _ in batch], done)

    async def _flush_cluster(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]
                             ) -> None:
        pipe = self._tier.pipeline()
        for command, _ in batch:
            pipe.execute_command(*command)
        try:
            results = await asyncio.wait_for(pipe.execute(raise_on_error=False),
                                             self._tier.timeout)
        except (RedisError, OSError, TimeoutError) as exc:
            self._fail(batch, exc)
            return
        self._settle(batch, results)

    def _fail(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]],
              exc: BaseException) -> None:
        self._tier.failed(exc)
        for _, future in batch:
            if not future.done():
                future.set_exception(RedisDown())

    def _settle(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]],
                results: list[Any]) -> None:
        self._tier.succeeded()
        for (_, future), result in zip(batch, results):
            if future.done():
                continue
            if isinstance(result, Exception):  # an error reply (hiredis.ReplyError too)
                # Redis restarted and forgot the script: load it again
                if isinstance(result, NoScriptError) or str(result).startswith("NOSCRIPT"):
                    self._tier._gcra = None
                future.set_exception(RedisDown())
            else:
                future.set_result(result)


def _client(url: str, timeout: float) -> Any:
    """``redis://…`` or ``redis+cluster://host:port,host:port`` (Redis Cluster: every key
    and script here touches one key, so no hash tags are needed)."""
    if url.startswith("redis+cluster://"):
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        nodes = []
        for part in url[len("redis+cluster://"):].strip("/").split(","):
            host, _, port = part.rpartition(":")
            nodes.append(ClusterNode(host.strip("[]"), int(port)))
        return RedisCluster(startup_nodes=nodes, socket_timeout=timeout,
                            socket_connect_timeout=timeout)
    return aioredis.Redis.from_url(url, socket_timeout=timeout,
                                   socket_connect_timeout=timeout, retry_on_timeout=False)


class SharedTier:
    def __init__(self, config: RedisConfig, *, timeout: float = 0.5) -> None:
        self.prefix = config.prefix
        self.url = config.url
        self.channel = f"{config.prefix}changes"
        self.timeout = timeout
        self.client = _client(config.url, timeout)
        self.cluster = config.url.startswith("redis+cluster://")
        self.healthy = True
        self.subscribed = False
        self.errors = 0
        self._batch = _Batch(self)
        self._gcra: Any = None

    async def close(self) -> None:
        self._batch.close()
        await self.client.aclose()

    def failed(self, exc: BaseException) -> None:
        self.errors += 1
        if self.healthy:
            log.warning("Redis unavailable, falling back to per-process state: %s", exc)
        self.healthy = False

    def succeeded(self) -> None:
        if not self.healthy:
            log.warning("Redis is back")
        self.healthy = True

    def pipeline(self) -> Any:
        if self.cluster:
            return self.client.pipeline()
        return self.client.pipeline(transaction=False)

    def _key(self, key_id: str) -> str:
        return f"{self.prefix}key:{key_id}"

    # -- shared cache: wrapped records and negative entries (awaited on misses only) ------
    async def get_record(self, key_id: str) -> tuple[bool, KeyRecord | None]:
        """(found, record): (True, None) is a cached "no such key"."""
        try:
            data = await self.client.get(self._key(key_id))
        except (RedisError, OSError) as exc:
            self.failed(exc)
            raise RedisDown() from None
        self.succeeded()
        if data is None:
            return False, None
        return True, None if data == NEGATIVE else decode_record(data)

    async def put_record(self, key_id: str, record: KeyRecord | None, ttl: float) -> None:
        value = NEGATIVE if record is None else encode_record(record)
        try:
            await self.client.set(self._key(key_id), value, px=max(1, int(ttl * 1000)))
        except (RedisError, OSError) as exc:
            self.failed(exc)

    async def publish_changes(self, key_ids: Sequence[str]) -> None:
        """After a committed change: drop the shared copies, then tell every worker."""
        await self.forget(key_ids)
        await self.client.publish(self.channel, ",".join(key_ids))

    async def forget(self, key_ids: Sequence[str]) -> None:
        if key_ids:  # one DEL per key: in a cluster they live in different slots
            pipe = self.pipeline()
            for key_id in key_ids:
                pipe.delete(self._key(key_id))
            await pipe.execute()

    # -- replay and rate limits: batched per tick -----------------------------------------
    def claim(self, token: bytes, ttl: float) -> asyncio.Future[Any]:
        """Record a replay token (``SET NX``, in this tick's batch): the future's result
        is ``None`` if any instance recorded it before. Not a coroutine: one layer less
        on the hot path."""
        return self._batch.submit("SET", f"{self.prefix}replay:{token.hex()}", b"1", "NX",
                                  "PX", max(1, int(ttl * 1000)))

    async def allow(self, key_id: str, rps: float, burst: int) -> tuple[bool, float]:
        """GCRA across every instance; (allowed, seconds until allowed)."""
        if self._gcra is None:
            try:
                self._gcra = await self.client.script_load(_GCRA)
            except (RedisError, OSError) as exc:
                self.failed(exc)
                raise RedisDown() from None
        interval = int(1_000_000 / rps)
        allowed, wait = await self._batch.submit(
            "EVALSHA", self._gcra, 1, f"{self.prefix}rate:{key_id}", interval,
            interval * burst)
        return bool(allowed), int(wait) / 1_000_000

    async def run_probe(self, on_recovered: Callable[[], None], interval: float = 0.5) -> None:
        """While unhealthy nobody sends Redis anything, so ping it until it answers.
        Messages published meanwhile were lost: ``on_recovered`` drops the cache."""
        while True:
            await asyncio.sleep(interval)
            if self.healthy:
                continue
            try:
                await self.client.ping()
            except (RedisError, OSError):
                continue
            self.succeeded()
            on_recovered()

    # -- invalidation ---------------------------------------------------------------------
    async def run_subscriber(self, on_keys: Callable[[list[str]], None],
                             on_subscribed: Callable[[], None]) -> None:
        """Listen for changes forever, re-subscribing with backoff when Redis goes away.
        Pub/sub delivers at most once, so every (re)subscription starts ``on_subscribed``
        (drop everything cached before it); the key_changes poll catches the rest."""
        backoff = 0.1
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.subscribed = True
                self.succeeded()
                backoff = 0.1
                on_subscribed()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message["type"] == "message":
                        on_keys(message["data"].decode().split(","))
            except (RedisError, OSError) as exc:
                self.subscribed = False
                self.failed(exc)
            finally:
                self.subscribed = False
                try:
                    await pubsub.aclose()
                except (RedisError, OSError):
                    pass
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)


