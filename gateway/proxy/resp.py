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
from collections.abc import Callable, Sequence
from typing import Any

import hiredis
from redis.connection import SSLConnection, parse_url

__all__ = ["RespConnection"]

ReplyError = hiredis.ReplyError  # an error reply: returned in its command's place


# called once per batch: with its replies in order, or with the exception that ended it
Done = Callable[[list[Any] | BaseException], None]


class RespConnection(asyncio.Protocol):
    """Pipelined commands on one connection; replies come back in order, so each
    batch takes the next ``len(batch)`` of them. A batch not answered within
    ``timeout`` fails, with every batch behind it, and closes the connection (late
    replies must not be read as the next batch's). One timer watches the oldest batch
    (a timer per batch costs µs to arm and cancel on every request at low load)."""

    def __init__(self, timeout: float) -> None:
        self._reader = hiredis.Reader()
        self._waiting: deque[tuple[int, list[Any], Done, float]] = deque()
        self._timeout = timeout
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None

    @classmethod
    async def open(cls, url: str, timeout: float) -> RespConnection:
        """Connect, then ``AUTH`` and ``SELECT`` as the URL says; raises ``OSError``,
        ``TimeoutError`` or ``ConnectionError`` (an AUTH or SELECT refused)."""
        options = parse_url(url)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            if "path" in options:
                _, conn = await loop.create_unix_connection(lambda: cls(timeout),
                                                            options["path"])
            else:
                tls = ssl.create_default_context() \
                    if options.get("connection_class") is SSLConnection else None
                _, conn = await loop.create_connection(
                    lambda: cls(timeout), options.get("host", "localhost"),
                    options.get("port", 6379), ssl=tls)
            setup: list[tuple[Any, ...]] = []
            if options.get("password") is not None:
                setup.append(("AUTH", *filter(None, (options.get("username"),)),
                              options["password"]))
            if options.get("db"):
                setup.append(("SELECT", options["db"]))
            if setup:
                answered: asyncio.Future[list[Any] | BaseException] = loop.create_future()
                conn.execute(setup, lambda r: answered.done() or answered.set_result(r))
                replies = await answered
                if isinstance(replies, BaseException):
                    raise replies
                for reply in replies:
                    if isinstance(reply, ReplyError):
                        conn.close()
                        raise ConnectionError(f"Redis refused the connection set-up: {reply}")
        return conn

    @property
    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def execute(self, commands: Sequence[Sequence[Any]], done: Done) -> None:
        """Send ``commands`` in one write; ``done`` gets their replies, in order, as
        soon as the last one is read (or the exception that ended the batch)."""
        if self.transport is None or self.transport.is_closing():
            done(ConnectionError("the Redis connection is closed"))
            return
        due = self._loop.time() + self._timeout
        self._waiting.append((len(commands), [], done, due))
        if self._timer is None:
            self._timer = self._loop.call_at(due, self._overdue)
        self.transport.write(b"".join(map(hiredis.pack_command, commands)))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()  # replies still on their way must not reach anyone

    def _overdue(self) -> None:
        self._timer = None
        if not self._waiting:
            return
        due = self._waiting[0][3]
        if due <= self._loop.time() + 0.001:  # (libuv timers tick in milliseconds)
            self._fail(TimeoutError("Redis did not answer in time"))
            self.close()
        else:  # the batch watched was answered: watch the oldest one now
            self._timer = self._loop.call_at(due, self._overdue)

    # -- asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                if not self._waiting:  # a reply nobody asked for: trust nothing after it
                    raise hiredis.ProtocolError("unexpected reply")
                n, replies, done, _ = self._waiting[0]
                replies.append(reply)
                if len(replies) == n:
                    self._waiting.popleft()
                    done(replies)
        except hiredis.ProtocolError:
            self._fail(ConnectionError("Redis sent a malformed reply"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError("the Redis connection was lost"))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fail(self, exc: Exception) -> None:
        while self._waiting:
            _, _, done, _ = self._waiting.popleft()
            done(exc)
