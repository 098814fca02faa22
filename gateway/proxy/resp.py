"""One raw RESP connection for the hot path's batches (DESIGN §7): a redis-py pipeline
costs ~14 CPU µs per command in Python; hiredis packs and parses in C for ~1 µs.

Used for the replay ``SET NX`` and rate-limit ``EVALSHA`` batches of a single Redis
server (``redis://``, ``rediss://``, ``unix://``); Redis Cluster keeps redis-py's
cluster pipeline, which knows the slots. Everything else (cache records, pub/sub,
probes) stays on redis-py: none of it runs per request.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.connection import SSLConnection, parse_url

__all__ = ["RespConnection"]

ReplyError = hiredis.ReplyError  # an error reply: returned in its command's place


class RespConnection(asyncio.Protocol):
    """Pipelined commands on one connection; replies come back in order, so each
    batch takes the next ``len(batch)`` of them."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader()
        self._waiting: deque[tuple[int, list[Any], asyncio.Future[list[Any]]]] = deque()
        self.transport: asyncio.Transport | None = None

    @classmethod
    async def open(cls, url: str, timeout: float) -> RespConnection:
        """Connect, then ``AUTH`` and ``SELECT`` as the URL says; raises ``OSError``,
        ``TimeoutError`` or ``ConnectionError`` (an AUTH or SELECT refused)."""
        options = parse_url(url)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            if "path" in options:
                _, conn = await loop.create_unix_connection(cls, options["path"])
            else:
                tls = ssl.create_default_context() \
                    if options.get("connection_class") is SSLConnection else None
                _, conn = await loop.create_connection(
                    cls, options.get("host", "localhost"), options.get("port", 6379), ssl=tls)
            setup: list[tuple[Any, ...]] = []
            if options.get("password") is not None:
                setup.append(("AUTH", *filter(None, (options.get("username"),)),
                              options["password"]))
            if options.get("db"):
                setup.append(("SELECT", options["db"]))
            if setup:
                for reply in await conn.execute(setup, loop):
                    if isinstance(reply, ReplyError):
                        conn.close()
                        raise ConnectionError(f"Redis refused the connection set-up: {reply}")
        return conn

    @property
    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def execute(self, commands: Sequence[Sequence[Any]], loop: asyncio.AbstractEventLoop
                ) -> asyncio.Future[list[Any]]:
        """Send ``commands`` in one write; the future gets their replies, in order."""
        future: asyncio.Future[list[Any]] = loop.create_future()
        if self.transport is None or self.transport.is_closing():
            future.set_exception(ConnectionError("the Redis connection is closed"))
            return future
        self._waiting.append((len(commands), [], future))
        self.transport.write(b"".join(map(hiredis.pack_command, commands)))
        return future

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()  # replies still on their way must not reach anyone

    # -- asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                if not self._waiting:  # a reply nobody asked for: trust nothing after it
                    raise hiredis.ProtocolError("unexpected reply")
                n, replies, future = self._waiting[0]
                replies.append(reply)
                if len(replies) == n:
                    self._waiting.popleft()
                    if not future.done():
                        future.set_result(replies)
        except hiredis.ProtocolError:
            self._fail(ConnectionError("Redis sent a malformed reply"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError("the Redis connection was lost"))

    def _fail(self, exc: Exception) -> None:
        while self._waiting:
            _, _, future = self._waiting.popleft()
            if not future.done():
                future.set_exception(exc)

