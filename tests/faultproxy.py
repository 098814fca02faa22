"""A TCP proxy of the test's own, to cut or restore the way to a shared server
(PostgreSQL, Redis) without stopping it (DESIGN §8). Runs its own event loop in a
thread, so it keeps working while the test blocks."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from .conftest import free_port


class FaultProxy:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self._cut = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(5)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port))
        ready.set()
        self._loop.run_forever()
        server.close()
        for task in asyncio.all_tasks(self._loop):
            task.cancel()
        self._loop.run_until_complete(asyncio.sleep(0))
        self._loop.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
                      ) -> None:
        if self._cut:
            client_w.close()
            return
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        self._writers |= {client_w, server_w}

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            w.close()

        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))
        self._writers -= {client_w, server_w}

    def sever(self) -> None:
        """Drop every connection now and refuse new ones until :meth:`restore`."""
        def cut() -> None:
            self._cut = True
            for w in list(self._writers):
                w.transport.abort()
        self._loop.call_soon_threadsafe(cut)

    def restore(self) -> None:
        def heal() -> None:
            self._cut = False
        self._loop.call_soon_threadsafe(heal)

    def close(self) -> None:
        self.sever()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
