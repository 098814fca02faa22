"""A trivial upstream for when nginx is not installed: a raw uvloop ``Protocol`` that
answers every request ``200 ok`` on a keep-alive connection, reading (and discarding)
the request body by ``Content-Length``.

    python -m bench.upstream PORT
"""

from __future__ import annotations

import asyncio
import sys

import uvloop

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n"


class Trivial(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = bytearray()
        self.need = -1  # body bytes still to discard; -1 while reading a head
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        out = []
        while True:
            if self.need < 0:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    break
                head = bytes(self.buf[:end]).lower()
                del self.buf[:end + 4]
                length = 0
                at = head.find(b"\r\ncontent-length:")
                if at >= 0:
                    length = int(head[at + 17:head.find(b"\r\n", at + 2) if head.find(
                        b"\r\n", at + 2) > 0 else None].strip())
                self.need = length
            take = min(self.need, len(self.buf))
            del self.buf[:take]
            self.need -= take
            if self.need > 0:
                break
            self.need = -1
            out.append(ANSWER)
        if out and self.transport is not None:
            self.transport.write(b"".join(out))


async def _main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Trivial, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(_main(int(sys.argv[1])))
