"""A recording upstream for end-to-end tests, run as its own process:

    python -m tests.upstream PORT LOGFILE

Every request is answered with a JSON echo of what arrived (method, raw target,
header lines, body length and SHA-256) and appended to LOGFILE as one JSON line,
so a test can also prove that a refused request had no effect upstream.
Special endpoints (the last two path segments): ``big/N`` streams N bytes;
``slow/S`` answers after S seconds; ``chunked/N`` sends N chunks without a length;
``status/N`` answers status N with no body; ``cookies/N`` sets N cookies;
``bigheader/N`` sends an N-byte response header; ``abort/N`` promises 1 MiB, sends
N bytes and closes; ``hints/1`` sends a 103 Early Hints first.
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
        "peer_port": request.transport.get_extra_info("peername")[1] if request.transport
        else None,
    }
    with open(request.app[LOG], "a") as log:
        log.write(json.dumps(record) + "\n")
    parts = request.path.split("/")
    kind, arg = (parts[-2], parts[-1]) if len(parts) >= 3 else ("", "")
    if kind == "big":
        return await stream(request, int(arg), content_length=True)
    if kind == "chunked":
        return await stream(request, int(arg) * 1000, content_length=False, piece=1000)
    if kind == "slow":
        await asyncio.sleep(float(arg))
    if kind == "status":
        return web.Response(status=int(arg), headers={"ETag": '"v1"'})
    if kind == "cookies":
        response = web.json_response(record)
        for i in range(int(arg)):
            response.headers.add("Set-Cookie", f"c{i}=v{i}; Path=/")
        return response
    if kind == "bigheader":
        return web.json_response(record, headers={"X-Big": "b" * int(arg)})
    if kind == "abort":
        response = web.StreamResponse(headers={"Content-Length": str(1 << 20)})
        await response.prepare(request)
        await response.write(b"a" * int(arg))
        assert request.transport is not None
        request.transport.close()
        return response
    if kind == "hints" and request.transport is not None:
        request.transport.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n")
    return web.json_response(record, headers={"Connection": "X-Upstream-Hop",
                                              "X-Upstream-Hop": "must not reach the client",
                                              "X-Upstream": "yes"})


async def stream(request: web.Request, size: int, *, content_length: bool,
                 piece: int = 65536) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    if content_length:
        response.content_length = size
    else:
        response.enable_chunked_encoding()
    await response.prepare(request)
    if request.method == "HEAD":  # a HEAD answer announces the length, sends no body
        return response
    chunk = b"x" * piece
    while size > 0:
        await response.write(chunk[:size])
        size -= piece
    await response.write_eof()
    return response


def main() -> None:
    port, log = int(sys.argv[1]), sys.argv[2]
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[LOG] = log
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
