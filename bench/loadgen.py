"""The harness's own load generator (uvloop, raw ``Protocol``, keep-alive connections).

Open loop (``--rate R``): request *k* is due at ``t0 + k/R`` whatever happened to the
ones before it. Connections are opened up to ``--connections``; a due request that
finds none idle waits in a queue, and its latency is measured from its due time, so a
stalled target is charged for every request that waited (no coordinated omission). A
request sent at once is measured from the moment it is written (libuv timers tick in
milliseconds: the generator's own lateness is not the target's).
Closed loop (``--rate 0``): each of ``--connections`` sends its next request as soon
as the previous answer is complete (the fallback when ``wrk`` is not installed).

Reads the same pool file as ``bench/pool.lua`` and prints one ``BENCH-JSON`` line.

    python -m bench.loadgen --port P --pool FILE [--body N] [--unique] [--rate R]
                            [--connections C] [--duration S]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import time
from typing import Any

import orjson
import uvloop


class Conn(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self, gen: Generator) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.due = 0.0
        self.status = 0
        self.need = -1  # body bytes still expected; -1 while reading the head
        self.chunked = False
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, request: bytes, due: float) -> None:
        self.busy, self.due, self.need, self.chunked = True, due, -1, False
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.need < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            del self.buf[:end + 4]
            self.status = int(head[9:12])
            self.chunked = b"\r\ntransfer-encoding: chunked" in head
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                self.need = int(head[at + 17:stop if stop > 0 else None])
            else:
                self.need = 0
        if self.chunked:
            # enough for our targets: wait for the terminating zero-size chunk
            if not self.buf.endswith(b"0\r\n\r\n"):
                return
            self.buf.clear()
        else:
            if len(self.buf) < self.need:
                return
            del self.buf[:self.need]
        self.busy = False
        self.gen.completed(self, self.status, time.perf_counter() - self.due)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gen.lost(self)


class Generator:
    def __init__(self, host: str, port: int, requests: list[bytes], *, unique: bool,
                 rate: float, connections: int, duration: float) -> None:
        self.host, self.port = host, port
        self.requests, self.unique = requests, unique
        self.rate, self.max_conns, self.duration = rate, connections, duration
        self.next = 0
        self.sent = 0
        self.exhausted = False
        self.statuses: collections.Counter[int] = collections.Counter()
        self.latencies: list[float] = []
        self.errors = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}
        self.idle: list[Conn] = []
        self.conns: set[Conn] = set()
        self.opening = 0
        self.queue: collections.deque[float] = collections.deque()
        self.stopping = False
        self.done = asyncio.Event()

    def take(self) -> bytes | None:
        if self.next >= len(self.requests):
            if self.unique:
                self.exhausted = True
                return None
            self.next = 0
        request = self.requests[self.next]
        self.next += 1
        return request

    def dispatch(self, conn: Conn, due: float) -> bool:
        request = self.take()
        if request is None:
            self.idle.append(conn)
            return False
        self.sent += 1
        conn.send(request, due)
        return True

    def completed(self, conn: Conn, status: int, latency: float) -> None:
        self.statuses[status] += 1
        self.latencies.append(latency)
        if not 200 <= status < 400:
            self.errors["status"] += 1
        if self.stopping:
            self.idle.append(conn)
            if not any(c.busy for c in self.conns):
                self.done.set()
            return
        if self.rate == 0:
            if not self.dispatch(conn, time.perf_counter()):
                self.stopping = True
                if not any(c.busy for c in self.conns):
                    self.done.set()
        elif self.queue:
            self.dispatch(conn, self.queue.popleft())
        else:
            self.idle.append(conn)

    def lost(self, conn: Conn) -> None:
        self.conns.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)
        if conn.busy:
            self.errors["read"] += 1
        if self.stopping and not any(c.busy for c in self.conns):
            self.done.set()

    async def open(self) -> Conn | None:
        loop = asyncio.get_running_loop()
        self.opening += 1
        try:
            _, conn = await loop.create_connection(lambda: Conn(self), self.host, self.port)
        except OSError:
            self.errors["connect"] += 1
            return None
        finally:
            self.opening -= 1
        self.conns.add(conn)
        return conn

    async def _open_and_send(self, due: float) -> None:
        conn = await self.open()
        if conn is None:
            return
        if self.stopping:
            self.idle.append(conn)
        else:
            self.dispatch(conn, due)

    async def run(self) -> dict[str, Any]:
        start = time.perf_counter()
        end = start + self.duration
        if self.rate == 0:
            for _ in range(self.max_conns):
                conn = await self.open()
                if conn is not None:
                    self.dispatch(conn, time.perf_counter())
            await asyncio.sleep(max(0.0, end - time.perf_counter()))
        else:
            interval, k = 1.0 / self.rate, 0
            total = int(self.rate * self.duration)
            tasks = set()
            while k < total and not self.exhausted:
                now = time.perf_counter()
                if now >= end:
                    break
                while k < total and start + k * interval <= now:
                    due = start + k * interval
                    k += 1
                    if self.idle:  # sent now: the timer's own lateness is not the target's
                        self.dispatch(self.idle.pop(), now)
                    elif len(self.conns) + self.opening < self.max_conns:
                        task = asyncio.ensure_future(self._open_and_send(now))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                    else:
                        self.queue.append(due)
                # libuv timers tick in milliseconds: a shorter sleep returns at once and
                # the generator would spin a core away from the target it measures
                await asyncio.sleep(0.001)
        self.stopping = True
        elapsed = time.perf_counter() - start
        # in-flight answers may still arrive: wait briefly, then count the rest as lost
        if any(c.busy for c in self.conns):
            try:
                await asyncio.wait_for(self.done.wait(), 5.0)
            except TimeoutError:
                self.errors["timeout"] += sum(c.busy for c in self.conns)
        for conn in list(self.conns):
            if conn.transport is not None:
                conn.transport.close()
        return self.result(elapsed)

    def result(self, elapsed: float) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(p: float) -> float:
            return lat[min(len(lat) - 1, int(len(lat) * p / 100))] * 1e6 if lat else 0.0

        return {
            "duration_us": int(elapsed * 1e6), "requests": len(lat), "sent": self.sent,
            "pool": len(self.requests), "exhausted_threads": int(self.exhausted),
            "unsent_due": len(self.queue),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": self.errors,
            "latency_us": {"mean": sum(lat) / len(lat) * 1e6 if lat else 0.0,
                           "max": lat[-1] * 1e6 if lat else 0.0, "p50": pct(50),
                           "p90": pct(90), "p99": pct(99), "p99.9": pct(99.9)},
        }


def read_pool(path: str, body: int) -> list[bytes]:
    tail = b"x" * body
    with open(path, "rb") as f:
        return [head + tail for head in f.read().split(b"\0") if head]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pool", required=True)
    ap.add_argument("--body", type=int, default=0)
    ap.add_argument("--unique", action="store_true")
    ap.add_argument("--rate", type=float, default=0.0, help="requests/s; 0 = closed loop")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--duration", type=float, default=5.0)
    args = ap.parse_args(argv)
    requests = read_pool(args.pool, args.body)
    gen = Generator(args.host, args.port, requests, unique=args.unique, rate=args.rate,
                    connections=args.connections, duration=min(args.duration, 600.0))
    result = uvloop.run(gen.run())
    print("BENCH-JSON " + orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()
