"""The processes and listeners: the data plane on aiohttp's low-level server (its
hardened llhttp parsing and limits, without the router), the admin listener
(:mod:`gateway.admin`), background tasks, graceful shutdown, and workers.

Even aiohttp's own parse errors are answered with the catalogue's JSON (DESIGN §3.4).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler

from ..admin import admin_app
from ..config import Config, parse_listen
from ..events.deliver import DeliveryWorker
from ..events.scheduler import Scheduler
from ..kek import load_keyring
from ..keys.lifecycle import KeyManager
from ..store import Store, open_store
from .accesslog import AccessLog
from .forward import Forwarder, SessionForwarder
from .keycache import KeyCache
from .lean import LeanForwarder
from .limits import Limits
from .master import Master
from .pipeline import DataPlane
from .shared import SharedTier
from .usage import UsageRecorder

__all__ = ["Gateway", "serve"]

log = logging.getLogger("gateway")


DRAIN_DELAY = 0.5
GC_THRESHOLDS = (20_000, 50, 100)  # Python's defaults: (700, 10, 10)
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
        # decide after this loop iteration's I/O: if the loop itself was held up, the
        # head may be sitting unread, and that is no fault of the client
        self._loop.call_soon(self._head_check)

    def _head_check(self) -> None:
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
        e = config.events
        self.deliveries = DeliveryWorker(store, self.keyring, e)
        self.scheduler = Scheduler(store, inactivity=config.policy.inactivity,
                                   warning=config.auth.expiry_warning,
                                   interval=e.scheduler_interval)
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
            asyncio.create_task(self.deliveries.run()),
            asyncio.create_task(self.scheduler.run()),
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
        # connections accepted just before the listener closed still owe us their request
        # head, and aiohttp ignores bytes on a connection it is shutting down: let those
        # heads arrive first
        await asyncio.sleep(DRAIN_DELAY)
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


async def _run_worker(config: Config, sock: socket.socket | None,
                      ready_fd: int | None) -> None:
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
    # The cyclic GC (DESIGN §6): what is loaded by now lives as long as the process, so
    # no collection need look at it again; young collections are made rarer, so fewer
    # in-flight objects are promoted and full collections — which walk every cached
    # key — come far less often.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    if ready_fd is not None:  # tell the master this worker accepts requests
        os.write(ready_fd, b"r")
        os.close(ready_fd)
    await stop.wait()
    await gateway.stop()


def _worker_main(config: Config, sock: socket.socket | None, ready_fd: int | None) -> None:
    import uvloop

    uvloop.run(_run_worker(config, sock, ready_fd))


def serve(config: Config, reload: Callable[[], Config] | None = None) -> int:
    """Run the gateway until SIGTERM/SIGINT. With ``workers > 1`` a master process owns
    the listening socket, forks the workers and, on SIGHUP, reloads the configuration
    (``reload``) and restarts them without dropping a request (gateway/proxy/master.py)."""
    if config.server.workers == 1:
        _worker_main(config, None, None)
        return 0
    return Master(config, reload, _worker_main).run()
