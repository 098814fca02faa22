"""Pools of pre-signed requests: every request carries a fresh random, signed
``x-gateway-nonce`` (as the SDK does), so each one is unique and replay protection
stays on. Heads are written to one file separated by NUL bytes; the body (``x`` ×
size, the same for every request) is appended by the load generator.

Each head also carries ``X-Bench-Hmac``: HMAC-SHA256 over ``method \\n target \\n nonce``
under :data:`NJS_KEY`, which the nginx + njs baseline checks.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from gateway.signing.signer import sign_rfc9421, sign_sigv4

__all__ = ["HOST", "NJS_KEY", "TARGET", "make_pool"]

HOST = "bench.local"  # the gateway runs with [server] public_authority = HOST
TARGET = "/api/items?page=2"
NJS_KEY = b"bench-njs-hmac-key-0123456789abcdef"
Key = tuple[str, str]  # (key ID, secret)


def head(scheme: str, key: Key, body: bytes, now: float, nonce: str) -> bytes:
    method = "POST" if body else "GET"
    signed = [("x-gateway-nonce", nonce)]
    if body:
        signed.append(("Content-Type", "application/octet-stream"))
    sign = sign_sigv4 if scheme == "sigv4" else sign_rfc9421
    added = sign(method, TARGET, HOST, signed, body, key_id=key[0],
                 secret=key[1].encode("ascii"), now=now)
    mac = hmac.new(NJS_KEY, f"{method}\n{TARGET}\n{nonce}".encode(), hashlib.sha256)
    lines = [f"{method} {TARGET} HTTP/1.1", f"Host: {HOST}",
             *(f"{n}: {v}" for n, v in (*signed, *added)), f"X-Bench-Hmac: {mac.hexdigest()}"]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _chunk(scheme: str, keys: Sequence[Key], start: int, n: int, body_size: int,
           now: float) -> bytes:
    body = b"x" * body_size
    return b"".join(head(scheme, keys[(start + j) % len(keys)], body, now,
                         secrets.token_hex(12)) + b"\0" for j in range(n))


def make_pool(path: Path, *, scheme: str, keys: Sequence[Key], n: int, body_size: int,
              start: int = 0, now: float | None = None, processes: int = 0) -> Path:
    """Write ``n`` uniquely signed request heads; request *j* uses key
    ``keys[(start + j) % len(keys)]`` (uniform over the keys, each once before any twice)."""
    now = time.time() if now is None else now
    processes = processes or min(2, os.cpu_count() or 1)
    if n < 4000 or processes == 1:
        data = _chunk(scheme, keys, start, n, body_size, now)
    else:
        step = -(-n // processes)
        with ProcessPoolExecutor(processes) as ex:
            parts = ex.map(_chunk, *zip(*[(scheme, keys, start + i, min(step, n - i),
                                           body_size, now) for i in range(0, n, step)]))
            data = b"".join(parts)
    path.write_bytes(data)
    return path
