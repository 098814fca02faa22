"""The production forwarder (DESIGN §7): per upstream, a pool of persistent HTTP/1.1
connections speaking to an asyncio ``Protocol``; the request head built once as bytes
and written with the body in one write; responses parsed with ``httptools`` (llhttp).
Responses up to 64 KiB are buffered and answered in one write; larger, chunked or
close-delimited ones are streamed with backpressure.

Framing is where a pooled proxy goes wrong, so the rules are strict: a parse error,
unexpected bytes or a timeout closes the connection; a response delimited by
connection close is never pooled; a HEAD exchange is not pooled (llhttp cannot be told
that its response has no body); 1xx responses are skipped; a stale pooled connection
is retried once, only for an idempotent method and only if no response byte arrived.
"""

from __future__ import annotations

import asyncio
import math
import ssl
import time
from collections import deque
from http import HTTPStatus

import httptools
from aiohttp import web
from aiohttp.helpers import rfc822_formatted_time

from ..errors import GatewayError
from .forward import UpstreamRequest
from .headers import raw_response_headers, response_headers
from .routes import Route

__all__ = ["LeanForwarder"]

BUFFER_LIMIT = 64 * 1024  # answered in one write up to this size
HIGH_WATER = 256 * 1024  # pause reading the upstream above this much unsent data
LOW_WATER = 64 * 1024
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
_REASONS = {s.value: s.phrase.encode("ascii") for s in HTTPStatus}


class _Expired(Exception):
    """The route's upstream timeout ran out during the exchange."""


class _Closed(Exception):
    """The upstream connection ended; ``started`` tells whether any response byte came."""

    def __init__(self, started: bool) -> None:
        super().__init__("upstream connection closed")
        self.started = started


class _Deadlines:
    """The deadlines of the exchanges in flight, watched by one timer set for the
    earliest: arming and cancelling a timer per exchange costs µs on every request,
    while this timer, under steady load, fires about once per route timeout."""

    def __init__(self) -> None:
        self._due: dict[_Connection, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._at = math.inf

    def watch(self, conn: _Connection, deadline: float, loop: asyncio.AbstractEventLoop) -> None:
        self._due[conn] = deadline
        if deadline < self._at:
            self._arm(deadline, loop)

    def forget(self, conn: _Connection) -> None:
        self._due.pop(conn, None)

    def _arm(self, at: float, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._at = at
        self._timer = loop.call_at(at, self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer, self._at = None, math.inf
        now = loop.time() + 0.001  # (libuv timers tick in milliseconds)
        for conn in [c for c, at in self._due.items() if at <= now]:
            del self._due[conn]
            conn.expire()
        if self._due:
            self._arm(min(self._due.values()), loop)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._due.clear()


class _Connection(asyncio.Protocol):
    """One upstream connection; one exchange at a time."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._loop = asyncio.get_running_loop()  # once per connection, not per request
        self._reset()

    def _reset(self) -> None:
        self._parser: httptools.HttpResponseParser | None = None
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self._head: asyncio.Future[None] | None = None
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self._complete = False
        self._started = False
        self._wakeup: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._paused = False
        self.keep_alive = False
        self.close_delimited = False
        self.content_length = -1  # -1: chunked or delimited by the end of the connection

    # -- asyncio.Protocol --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._parser is None:  # bytes nobody asked for: this connection cannot be trusted
            self.close()
            return
        self._started = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail(GatewayError("upstream_unreachable",
                                    "the upstream sent a malformed response"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._parser is not None and not self._complete:
            if self.close_delimited and self._head is not None and self._head.done():
                self.on_message_complete()  # the body ran to the end of the connection
            else:
                self._fail(_Closed(self._started))
        self.pool.forget(self)

    # -- httptools callbacks -----------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.status:  # (headers after the final response's: see on_headers_complete)
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        if self.status:  # a second final response to one request: never trust this again
            self._fail(GatewayError("upstream_unreachable",
                                    "the upstream sent more than one response"))
            self.close()
            return
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # informational: wait for the real answer
            self.headers = []
            return
        self.status = status
        self.keep_alive = self._parser.should_keep_alive()
        length = None
        chunked = False
        for name, value in self.headers:  # (the length check spares most names a lower())
            if len(name) == 14 and name.lower() == b"content-length":
                length = value
            elif len(name) == 17 and name.lower() == b"transfer-encoding":
                chunked = True
        self.content_length = int(length) if length is not None and length.isdigit() else -1
        self.close_delimited = length is None and not chunked and status not in (204, 304)
        if self._head is not None and not self._head.done():
            self._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._queued += len(body)
        if self._queued > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()  # the client is slower than the upstream
        self._wake()

    def on_message_complete(self) -> None:
        if self.status == 0:  # the end of a 1xx message
            return
        self._complete = True
        self._wake()

    # -- the exchange ------------------------------------------------------------------
    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        self._error = exc  # later waits raise it at once
        for future in (self._head, self._wakeup):
            if future is not None and not future.done():
                future.set_exception(exc)

    def expire(self) -> None:
        self._fail(_Expired())
        self.close()

    async def send(self, data: bytes, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """Write one request and wait for the response head; the exchange, body included,
        must end by ``deadline``."""
        self._reset()
        self._loop = loop
        self.pool.deadlines.watch(self, deadline, loop)
        self._parser = httptools.HttpResponseParser(self)
        self._head = loop.create_future()
        if self.transport is None or self.closed:
            raise _Closed(False)
        self.transport.write(data)
        await self._head
        if self._error is not None:  # the same read held something that broke the exchange
            raise self._error

    def _check(self) -> None:
        if self._error is not None:
            raise self._error
        if self.closed:
            raise _Closed(True)

    async def next_chunk(self) -> bytes | None:
        """The next piece of the body; ``None`` at its end."""
        while not self._chunks:
            if self._complete:
                return None
            self._check()
            self._wakeup = self._loop.create_future()
            await self._wakeup
        chunk = self._chunks.popleft()
        self._queued -= len(chunk)
        if self._paused and self._queued < LOW_WATER and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return chunk

    async def read_all(self) -> bytes:
        """The whole (small) body."""
        while not self._complete:
            self._check()
            self._wakeup = self._loop.create_future()
            await self._wakeup
        body = b"".join(self._chunks)
        self._chunks.clear()
        self._queued = 0
        return body

    @property
    def reusable(self) -> bool:
        return self._complete and self.keep_alive and not self.close_delimited \
            and not self.closed

    def finish(self) -> None:
        """The exchange is over: pool the connection if it may carry another."""
        self.pool.deadlines.forget(self)
        if self.reusable:
            self._parser = None
            self.pool.put_back(self)
        else:
            self.close()

    def close(self) -> None:
        self.closed = True
        self.pool.deadlines.forget(self)
        if self.transport is not None:
            self.transport.close()


class _Pool:
    def __init__(self, route: Route, *, max_idle: int, idle_timeout: float,
                 limit: int) -> None:
        self.deadlines = _Deadlines()
        self.host = route.upstream_host
        self.port = route.upstream_port
        self.ssl = ssl.create_default_context() if route.upstream_tls else None
        default = 443 if route.upstream_tls else 80
        self.host_header = self.host if self.port == default else f"{self.host}:{self.port}"
        self._idle: deque[_Connection] = deque()
        self._max_idle = max_idle
        self._idle_timeout = idle_timeout
        self._limit = limit  # exchanges at once; more wait their turn, first come first served
        self._busy = 0
        self._queue: deque[asyncio.Future[None]] = deque()

    def pooled(self) -> _Connection | None:
        """The most recently used idle connection still fit for use (the likeliest alive)."""
        if not self._idle:
            return None
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < self._idle_timeout:
                return conn
            conn.close()
        return None

    async def connect(self, connect_timeout: float) -> _Connection:
        """A new connection."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self), self.host, self.port, ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None)
        except TimeoutError:
            raise GatewayError("upstream_timeout", "the upstream did not accept a connection "
                                                   "in time") from None
        except OSError:
            raise GatewayError("upstream_unreachable",
                               "the upstream could not be reached") from None
        return conn

    async def acquire(self, loop: asyncio.AbstractEventLoop) -> None:
        """A slot for one exchange (an ``asyncio.Semaphore`` costs µs more per request)."""
        if self._busy < self._limit and not self._queue:
            self._busy += 1
            return
        turn = loop.create_future()
        self._queue.append(turn)
        try:
            await turn  # release() hands its slot over: _busy stays counted
        except BaseException:
            if turn.done() and not turn.cancelled():
                self.release()  # handed a slot as we were cancelled: pass it on
            elif turn in self._queue:  # (release() may have skipped it already)
                self._queue.remove(turn)
            raise

    def release(self) -> None:
        while self._queue:
            turn = self._queue.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self._busy -= 1

    def put_back(self, conn: _Connection) -> None:
        if len(self._idle) >= self._max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    def forget(self, conn: _Connection) -> None:
        try:
            self._idle.remove(conn)
        except ValueError:
            pass

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
        self.deadlines.close()


def _request_head(upstream: UpstreamRequest, host: str) -> bytes:
    lines = [f"{upstream.method} {upstream.target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in upstream.headers]
    if upstream.body or upstream.method not in ("GET", "HEAD", "OPTIONS", "DELETE", "TRACE"):
        lines.append(f"Content-Length: {len(upstream.body)}")
    head = "\r\n".join(lines) + "\r\n\r\n"
    # header values came off the wire as bytes: give them back exactly
    return head.encode("utf-8", "surrogateescape")


class LeanForwarder:
    def __init__(self, *, max_idle: int = 64, idle_timeout: float = 30.0,
                 limit: int = 512) -> None:
        self._pools: dict[str, _Pool] = {}
        self._max_idle = max_idle
        self._idle_timeout = idle_timeout
        self._limit = limit
        self._loop: asyncio.AbstractEventLoop | None = None

    async def close(self) -> None:
        for pool in self._pools.values():
            pool.close()

    def _pool(self, route: Route) -> _Pool:
        pool = self._pools.get(route.upstream)
        if pool is None:
            pool = self._pools[route.upstream] = _Pool(
                route, max_idle=self._max_idle, idle_timeout=self._idle_timeout,
                limit=self._limit)
        return pool

    async def forward(self, client: web.BaseRequest, route: Route, upstream: UpstreamRequest,
                      extra_headers: list[tuple[str, str]]) -> web.StreamResponse:
        pool = self._pool(route)
        data = _request_head(upstream, pool.host_header) + upstream.body
        started: list[web.StreamResponse] = []
        loop = self._loop or asyncio.get_running_loop()  # held: a getpid per call on 3.11
        self._loop = loop
        deadline = loop.time() + route.timeout
        await pool.acquire(loop)
        try:
            conn = await self._exchange(pool, route, upstream.method, data, loop, deadline)
            try:
                return await self._answer(client, conn, extra_headers, started,
                                          head=upstream.method == "HEAD")
            except BaseException:
                conn.close()
                raise
        except _Expired:
            if started:  # the answer has begun: all we can do is cut the connection
                if client.transport is not None:
                    client.transport.close()
                return started[0]
            raise GatewayError("upstream_timeout",
                               "the upstream did not answer in time") from None
        finally:
            pool.release()

    async def _exchange(self, pool: _Pool, route: Route, method: str, data: bytes,
                        loop: asyncio.AbstractEventLoop, deadline: float) -> _Connection:
        for attempt in (1, 2):
            conn = pool.pooled()
            reused = conn is not None
            if conn is None:
                conn = await pool.connect(route.connect_timeout)
            try:
                await conn.send(data, loop, deadline)
                return conn
            except _Closed as exc:
                conn.close()
                # a pooled connection the upstream had already closed: try once more
                if attempt == 1 and reused and not exc.started and method in IDEMPOTENT:
                    continue
                raise GatewayError("upstream_unreachable",
                                   "the upstream closed the connection") from None
            except BaseException:
                conn.close()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _answer(self, client: web.BaseRequest, conn: _Connection,
                      extra_headers: list[tuple[str, str]], started: list[web.StreamResponse],
                      *, head: bool) -> web.StreamResponse:
        if head or conn.status in (204, 304):
            if head:  # llhttp would wait for the body a HEAD response does not have
                conn.keep_alive = False
            response = _Buffered(conn.status, conn.headers, extra_headers, None,
                                 keep_length=head)
            conn.finish()
            return response
        if 0 <= conn.content_length <= BUFFER_LIMIT:
            body = await conn.read_all()
            response = _Buffered(conn.status, conn.headers, extra_headers, body,
                                 keep_length=False)
            conn.finish()
            return response
        headers = response_headers((n.decode("latin-1"), v.decode("latin-1"))
                                   for n, v in conn.headers)
        response = web.StreamResponse(status=conn.status)
        _copy(response, headers, extra_headers, keep_length=True)
        if conn.content_length < 0:
            response.enable_chunked_encoding()
        started.append(response)
        await response.prepare(client)
        try:
            while (chunk := await conn.next_chunk()) is not None:
                await response.write(chunk)  # waits while the client is slow
        except (_Closed, _Expired, GatewayError):
            # the answer has begun: all that is left is to cut the client's connection too
            conn.close()
            if client.transport is not None:
                client.transport.close()
            return response
        await response.write_eof()
        conn.finish()
        return response


def _copy(response: web.StreamResponse, headers: list[tuple[str, str]],
          extra: list[tuple[str, str]], *, keep_length: bool) -> None:
    for name, value in headers:
        if keep_length or name.lower() != "content-length":
            response.headers.add(name, value)
    for name, value in extra:
        response.headers[name] = value


class _Buffered(web.StreamResponse):
    """A whole upstream response (``body=None``: one that has no body — HEAD, 204,
    304) written to the client in one write, its head serialised once from the raw
    lines the upstream sent: no header objects built and read back."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]],
                 extra: list[tuple[str, str]], body: bytes | None, *,
                 keep_length: bool) -> None:
        super().__init__(status=status)
        self._lines, self._dated = raw_response_headers(headers, keep_length=keep_length)
        self._extra = extra
        self._content = body

    async def prepare(self, request: web.BaseRequest) -> None:
        if self._eof_sent:
            return
        version = request.version
        keep_alive = self._keep_alive = request.keep_alive
        status = self.status
        parts = [b"HTTP/%d.%d %d %s\r\n" % (version.major, version.minor, status,
                                                _REASONS.get(status, b"Unknown"))]
        parts += self._lines
        parts += [f"{n}: {v}\r\n".encode("latin-1") for n, v in self._extra]
        if not self._dated:  # RFC 9110 §6.6.1: a proxy adds the Date the origin left out
            parts.append(b"Date: %s\r\n" % rfc822_formatted_time().encode("ascii"))
        body = self._content
        if body is not None:
            parts.append(b"Content-Length: %d\r\n" % len(body))
        if version.minor == 0 and keep_alive:
            parts.append(b"Connection: keep-alive\r\n")
        elif version.minor == 1 and not keep_alive:
            parts.append(b"Connection: close\r\n")
        parts.append(b"\r\n")
        if body and request.method != "HEAD":
            parts.append(body)
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client went away")
        transport.write(b"".join(parts))
        self._eof_sent = True
        if transport.get_write_buffer_size() > BUFFER_LIMIT:
            await request._payload_writer.drain()  # a client that does not read: wait

    async def write_eof(self, data: bytes = b"") -> None:
        return None  # written whole by prepare()
