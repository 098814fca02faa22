"""A recording upstream for end-to-end tests, run as its own process:

    python -m tests.upstream PORT LOGFILE

Every request is answered with a JSON echo of what arrived (method, raw target,
header lines, body length and SHA-256) and appended to LOGFILE as one JSON line,
so a test can also prove that a refused request had no effect upstream.
``/…/big/N`` streams N bytes; ``/…/slow/S`` answers after S seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys

from aiohttp import web

LOG = web.AppKey("log", str)


async def handle(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    record = {
        "method": request.method,
        "target": request.raw_path,
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.raw_headers],
        "body_bytes": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest(),
    }
    with open(request.app[LOG], "a") as log:
        log.write(json.dumps(record) + "\n")
    parts = request.path.split("/")
    if len(parts) >= 2 and parts[-2] == "big":
        size = int(parts[-1])
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = size
        await response.prepare(request)
        chunk = b"x" * 65536
        while size > 0:
            await response.write(chunk[:size])
            size -= len(chunk)
        await response.write_eof()
        return response
    if len(parts) >= 2 and parts[-2] == "slow":
        await asyncio.sleep(float(parts[-1]))
    return web.json_response(record, headers={"Connection": "X-Upstream-Hop",
                                              "X-Upstream-Hop": "must not reach the client",
                                              "X-Upstream": "yes"})


def main() -> None:
    port, log = int(sys.argv[1]), sys.argv[2]
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[LOG] = log
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
