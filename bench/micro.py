"""``python -m bench micro``: the gateway's hot-path pieces in isolation, µs per
operation (CPU time), medians of interleaved rounds — the request of the ``hot``
scenario (``GET /api/items?page=2``, signed nonce, 0-byte body) unless stated.

Each piece is the gateway's own code, called as the pipeline calls it: parse + verify
per scheme (the SigV4 derived key is cached per key and day inside the verifier), a
key-cache hit (``await KeyCache.get``), the AES-256-GCM secret unwrap of a cache miss,
the replay guard, the key-ID checksum, the upstream header rewrite and one access-log
line. ``bench/signing.py`` compares the verifiers with botocore and
http-message-signatures instead.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson

from gateway.config import PolicyConfig
from gateway.kek import Keyring, create_keyring_file, load_keyring
from gateway.keys.formats import is_well_formed_key_id
from gateway.keys.lifecycle import Actor, KeyManager, NewKey
from gateway.proxy.headers import upstream_headers
from gateway.proxy.keycache import KeyCache
from gateway.proxy.replay import ReplayGuard
from gateway.signing import EMPTY_BODY, Body, Policy, Request, parse
from gateway.store import open_store

from .pool import HOST, TARGET, head

__all__ = ["main"]


def _headers(raw: bytes) -> tuple[tuple[str, str], ...]:
    lines = raw.decode("latin-1").split("\r\n")[1:]
    return tuple((n, v.lstrip()) for n, _, v in (ln.partition(":") for ln in lines if ln))


async def _cases(tmp: Path) -> tuple[dict[str, Callable[[], object]], list[object]]:
    create_keyring_file(tmp / "keyring.json", Keyring.generate(datetime.now(UTC)))
    keyring = load_keyring(tmp / "keyring.json")
    store = await open_store(f"sqlite://{tmp / 'keys.db'}")
    issued = await KeyManager(store, keyring, PolicyConfig()).create(
        NewKey(principal="bench", scopes=("api:*",), expiry=86400.0),
        actor=Actor("cli:bench"), now=datetime.now(UTC))
    key = (issued.record.key_id, issued.secret.reveal())
    secret = key[1].encode()
    cache = KeyCache(store, keyring, ttl=3600, negative_ttl=10, max_entries=100_000,
                     serve_stale=900, inactivity=PolicyConfig().inactivity)
    await cache.get(key[0])  # loaded: every later get is a hit
    policy = Policy()
    now = time.time()
    sigv4 = _headers(head("sigv4", key, b"", now, secrets.token_hex(12)))
    rfc = _headers(head("rfc9421", key, b"", now, secrets.token_hex(12)))
    body_1k = b"x" * 1024
    sigv4_1k = _headers(head("sigv4", key, body_1k, now, secrets.token_hex(12)))
    for h in (sigv4, rfc):
        parse(Request("GET", TARGET, h, authority=HOST), policy, now).verify(secret, EMPTY_BODY)
    parse(Request("POST", TARGET, sigv4_1k, authority=HOST), policy, now).verify(
        secret, Body(body_1k))
    guard = ReplayGuard()
    wrapped = issued.record.wrapped
    identity = [("X-Gateway-Key-Id", key[0]), ("X-Gateway-Principal", "bench"),
                ("X-Request-Id", "5f0c6a2e")]
    entry = {"at": now, "request_id": "5f0c6a2e9d3b4c1a8e7f6a5b4c3d2e1f", "peer": "127.0.0.1",
             "method": "GET", "path": "/api/items", "status": 200, "key_id": key[0],
             "ms": 1.234}
    loop = asyncio.get_running_loop()

    def cache_hit() -> object:  # one await of the coroutine, as the pipeline does
        coro = cache.get(key[0])
        try:
            coro.send(None)
        except StopIteration as stop:
            return stop.value
        raise RuntimeError("a cache hit must not suspend")

    cases: dict[str, Callable[[], object]] = {
        "sigv4 parse + verify (0 B)": lambda: parse(
            Request("GET", TARGET, sigv4, authority=HOST), policy, time.time()).verify(
            secret, EMPTY_BODY),
        "sigv4 parse + verify (1 KiB body)": lambda: parse(
            Request("POST", TARGET, sigv4_1k, authority=HOST), policy, time.time()).verify(
            secret, Body(body_1k)),
        "rfc9421 parse + verify (0 B)": lambda: parse(
            Request("GET", TARGET, rfc, authority=HOST), policy, time.time()).verify(
            secret, EMPTY_BODY),
        "key cache hit (await KeyCache.get)": cache_hit,
        "secret unwrap (AES-256-GCM, cache miss)": lambda: keyring.unwrap_secret(
            key[0], wrapped).hmac_key(),
        "key-ID checksum": lambda: is_well_formed_key_id(key[0]),
        "replay guard first use": lambda: guard.first_use(secrets.token_bytes(16),
                                                          int(time.time()) + 300, time.time()),
        "upstream header rewrite": lambda: upstream_headers(
            sigv4, peer="127.0.0.1", peer_trusted=False, scheme="http", host=HOST,
            identity=identity),
        "access-log line (orjson)": lambda: orjson.dumps(entry,
                                                         option=orjson.OPT_APPEND_NEWLINE),
    }
    del loop
    return cases, [store]


def _measure(fn: Callable[[], object], seconds: float) -> float:
    n, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - wall0 < seconds:
        for _ in range(100):
            fn()
        n += 100
    return (time.process_time() - cpu0) / n * 1e6


def main(*, seconds: float = 0.3, rounds: int = 5, as_json: bool = False) -> int:
    async def run() -> dict[str, float]:
        with tempfile.TemporaryDirectory(prefix="bench-micro-") as tmp:
            cases, closers = await _cases(Path(tmp))
            us: dict[str, list[float]] = {name: [] for name in cases}
            for r in range(rounds):  # interleaved: noise hits every case alike
                for name, fn in cases.items():
                    us[name].append(_measure(fn, seconds))
                if not as_json:
                    print(f"round {r + 1}/{rounds} done", flush=True)
            for store in closers:
                await store.close()  # type: ignore[attr-defined]
            return {name: statistics.median(v) for name, v in us.items()}

    result = asyncio.run(run())
    if as_json:
        print(json.dumps({"rounds": rounds, "us_per_op": result}, indent=2))
        return 0
    width = max(map(len, result))
    print(f"{'hot-path piece':<{width}}  {'CPU µs/op':>9}")
    for name, value in result.items():
        print(f"{name:<{width}}  {value:>9.2f}")
    total = sum(result[n] for n in ("sigv4 parse + verify (0 B)",
                                    "key cache hit (await KeyCache.get)",
                                    "replay guard first use", "key-ID checksum",
                                    "upstream header rewrite", "access-log line (orjson)"))
    print(f"{'sum for one hot-key SigV4 request':<{width}}  {total:>9.2f}"
          f"   (DESIGN §7 budget for the auth path: ≤ 15 µs)")
    return 0
