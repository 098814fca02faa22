"""The processes and listeners: the data plane on aiohttp's low-level server (its
hardened llhttp parsing and limits, without the router), the admin listener
(:mod:`gateway.admin`), background tasks, graceful shutdown, and workers.

Even aiohttp's own parse errors are answered with the catalogue's JSON (DESIGN §3.4).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler

from ..admin import admin_app
from ..config import Config
from ..kek import load_keyring
from ..keys.lifecycle import KeyManager
from ..store import Store, open_store
from .accesslog import AccessLog
from .forward import Forwarder, SessionForwarder
from .keycache import KeyCache
from .lean import LeanForwarder
from .limits import Limits
from .pipeline import DataPlane
from .shared import SharedTier
from .usage import UsageRecorder

__all__ = ["Gateway", "parse_listen", "serve"]

log = logging.getLogger("gateway")


_HEAD_OVERDUE = orjson.dumps({"error": "malformed_request",
                              "message": "the request head did not arrive in time"})


class _JsonErrorHandler(RequestHandler):
    """aiohttp answers framing and header errors itself, in plain text; we answer them
    in the catalogue's JSON, and never with a traceback. A connection must also deliver
    its first request head within ``[server] header_timeout`` (slow-header clients hold
    connections open at almost no cost to themselves); later heads fall under the
    keep-alive timeout."""

    head_timeout = 10.0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._head_timer = self._loop.call_later(self.head_timeout, self._head_overdue)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)

    def _head_overdue(self) -> None:
        if self._request_count == 0 and self.transport is not None:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json"
                                 b"\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
                                 % (len(_HEAD_OVERDUE), _HEAD_OVERDUE))
            self.transport.close()

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("the response has begun; the connection is closed instead")
        if isinstance(exc, LineTooLong) or (
                isinstance(exc, BadHttpMessage) and "Too many headers" in str(exc)):
            status, code, text = 431, "headers_too_large", "the request head is too large"
        elif status == 400 or isinstance(exc, BadHttpMessage):
            status, code, text = 400, "malformed_request", "the request is not valid HTTP/1.1"
        elif status == 504:
            code, text = "upstream_timeout", "the request took too long"
        else:
            log.error("unexpected error handling a request", exc_info=exc)
            status, code, text = 500, "internal_error", "the gateway failed to handle the request"
        response = web.Response(status=status, content_type="application/json",
                                body=orjson.dumps({"error": code, "message": text}))
        response.force_close()
        return response


class _Server(web.Server):
    head_timeout = 10.0

    def __call__(self) -> RequestHandler:
        handler = _JsonErrorHandler(self, loop=self._loop, **self._kwargs)
        handler.head_timeout = self.head_timeout
        return handler


class _JsonAppRunner(web.AppRunner):
    """The admin listener's runner: its aiohttp parse errors are JSON too (DESIGN §3.4)."""

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        return _Server(made.request_handler, request_factory=made.request_factory,
                       loop=made._loop, **made._kwargs)


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


class Gateway:
    """One worker: the data plane, the admin listener and their background tasks."""

    def __init__(self, config: Config, store: Store) -> None:
        self.config = config
        self.store = store
        self.keyring = load_keyring(config.kek.keyring)
        self.shared = SharedTier(config.redis) if config.redis is not None else None
        if self.shared is not None:  # every committed change, announced to every instance
            store.change_listener = self.shared.publish_changes
        c = config.cache
        self.cache = KeyCache(store, self.keyring, ttl=c.ttl, negative_ttl=c.negative_ttl,
                              max_entries=c.max_entries, serve_stale=c.serve_stale,
                              inactivity=config.policy.inactivity, shared=self.shared)
        self.usage = UsageRecorder(store)
        self.forwarder: Forwarder = (LeanForwarder() if config.server.forwarder == "lean"
                                     else SessionForwarder())
        self.access_log = AccessLog(enabled=config.log.access_log)
        self.data_plane = DataPlane(config, self.cache, self.forwarder, self.usage,
                                    self.access_log, Limits(self.shared),
                                    KeyManager(store, self.keyring, config.policy))
        self.draining = False
        self._tasks: list[asyncio.Task[None]] = []
        self._servers: list[asyncio.AbstractServer] = []
        self._low_level: _Server | None = None
        self._admin: _JsonAppRunner | None = None

    async def start(self, sock: socket.socket | None = None) -> None:
        s = self.config.server
        await self.cache.poll_changes()  # the change log's position, before any key is cached
        self._low_level = _Server(
            self.data_plane.handle, max_line_size=s.max_request_line,
            max_field_size=s.max_headers, max_headers=256, auto_decompress=False,
            keepalive_timeout=s.keepalive_timeout, access_log=None)
        self._low_level.head_timeout = s.header_timeout
        loop = asyncio.get_running_loop()
        ssl_context = None
        if s.tls_cert:
            import ssl

            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_context.load_cert_chain(s.tls_cert, s.tls_key)
        if sock is None:
            host, port = parse_listen(s.listen)
            server = await loop.create_server(self._low_level, host, port, ssl=ssl_context,
                                              reuse_address=True, backlog=1024)
        else:
            server = await loop.create_server(self._low_level, sock=sock, ssl=ssl_context,
                                              backlog=1024)
        self._servers.append(server)
        self._admin = _JsonAppRunner(admin_app(self), access_log=None,
                                     max_line_size=s.max_request_line,
                                     max_field_size=s.max_headers)
        await self._admin.setup()
        host, port = parse_listen(self.config.admin.listen)
        await web.TCPSite(self._admin, host, port, reuse_port=sock is not None).start()
        self._tasks += [
            asyncio.create_task(self.cache.run_change_poll(self.config.cache.change_poll)),
            asyncio.create_task(self.usage.run(self.config.usage.flush)),
            asyncio.create_task(self.access_log.run()),
        ]
        if self.shared is not None:
            self._tasks += [
                asyncio.create_task(self.shared.run_subscriber(self.cache.drop,
                                                               self.cache.clear)),
                asyncio.create_task(self.shared.run_probe(self.cache.clear)),
            ]

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish up to shutdown_grace, flush."""
        self.draining = True
        for server in self._servers:
            server.close()
        if self._low_level is not None:
            await self._low_level.shutdown(self.config.server.shutdown_grace)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.forwarder.close()
        if self.shared is not None:
            await self.shared.close()
        if self._admin is not None:
            await self._admin.cleanup()
        await self.store.close()


async def _run_worker(config: Config, sock: socket.socket | None) -> None:
    store = await open_store(config.store.url)
    gateway = Gateway(config, store)
    await gateway.start(sock)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(orjson.dumps({"event": "listening", "listen": config.server.listen,
                        "admin": config.admin.listen, "pid": os.getpid()}).decode(),
          file=sys.stderr, flush=True)
    await stop.wait()
    await gateway.stop()


def _worker_main(config: Config, sock: socket.socket | None) -> None:
    import uvloop

    uvloop.run(_run_worker(config, sock))


def serve(config: Config) -> int:
    """Run the gateway until SIGTERM/SIGINT. With ``workers > 1`` one master process
    owns the listening socket and forks the workers (DESIGN §8: a closing
    SO_REUSEPORT listener would drop queued connections)."""
    workers = config.server.workers
    if workers == 1:
        _worker_main(config, None)
        return 0
    host, port = parse_listen(config.server.listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    children: set[int] = set()

    def spawn() -> None:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            try:
                _worker_main(config, sock)
            finally:
                os._exit(0)
        children.add(pid)

    stopping = False

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for _ in range(workers):
        spawn()
    while children:
        try:
            pid, _status = os.wait()
        except ChildProcessError:
            break
        children.discard(pid)
        if not stopping:  # a worker died: replace it
            log.error("worker %d exited; starting another", pid)
            spawn()
    return 0
