"""The scenarios of issue 8. Each one names what the gateway is given (scheme, body,
replay, keys, store, workers) and which baselines run beside it in the same run."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SCENARIOS", "Scenario"]


@dataclass(frozen=True)
class Scenario:
    name: str
    about: str
    scheme: str = "sigv4"  # sigv4 | rfc9421
    body: int = 0  # request body bytes (0: GET, else POST)
    replay: str = "all"  # [auth] replay
    keys: int = 1  # keys in the store
    spread: bool = False  # spread requests uniformly over all keys (else one hot key)
    store: str = "sqlite"  # sqlite | postgresql
    workers: tuple[int, ...] = (1,)  # one gateway per entry, measured side by side
    baselines: tuple[str, ...] = ("direct", "bare")
    open_loop: tuple[float, ...] = ()  # offered load, as fractions of the bare proxy's max
    cold: bool = False  # first request per key (open loop, every request a new key)
    hot_too: bool = False  # many keys: also a hot-key pool on the same gateway
    cache_ttl: str = "60s"
    redis: bool = True  # the Redis tier (replay and rate limits shared through it)


_ALL = ("direct", "bare", "nginx", "njs")
SCENARIOS = {s.name: s for s in [
    Scenario("hot", "hot key, SigV4, 0-byte body, replay on, Redis tier on, access log on: "
             "the main scenario, every baseline, open-loop latency sweep", baselines=_ALL,
             open_loop=(0.1, 0.25, 0.5, 0.75)),
    Scenario("rfc9421", "hot key, RFC 9421, 0-byte body", scheme="rfc9421", baselines=_ALL),
    # these two also measure p99 at half load without the Redis round trip on the path
    Scenario("redis-off", "hot key, SigV4, no [redis] section: replay protection per "
             "process", redis=False, baselines=("direct", "bare", "njs"), open_loop=(0.5,)),
    Scenario("replay-off", "hot key, SigV4, replay protection off", replay="off",
             baselines=("direct", "bare", "njs"), open_loop=(0.5,)),
    Scenario("body-1k", "hot key, SigV4, 1 KiB POST body", body=1024, baselines=_ALL),
    Scenario("body-64k", "hot key, SigV4, 64 KiB POST body", body=64 * 1024, baselines=_ALL),
    Scenario("body-1m", "hot key, SigV4, 1 MiB POST body", body=1024 * 1024, baselines=_ALL),
    Scenario("many-keys", "100,000 keys in the store (bulk-created), requests spread "
             "uniformly after a warm-up that loads every key, beside the hot key on the same "
             "gateway ([cache] ttl 10m so warm-up entries outlive the run)",
             keys=100_000, spread=True, hot_too=True, cache_ttl="10m"),
    Scenario("workers-2", "hot key, SigV4: `--workers 2` beside `--workers 1`; CPU µs "
             "per request summed over the workers", workers=(1, 2)),
    Scenario("cold-sqlite", "cold start, SQLite: first request for each key (open loop, "
             "every request a key no cache holds), beside the hot key", keys=4000,
             spread=True, cold=True, baselines=()),
    Scenario("cold-postgresql", "cold start, PostgreSQL: as cold-sqlite", keys=4000,
             spread=True, cold=True, store="postgresql", baselines=()),
    Scenario("smoke", "a ~2-second run of the whole pipeline for the test suite",
             baselines=("direct", "bare"), open_loop=(0.25,)),
]}
MAIN = ("hot", "rfc9421", "redis-off", "replay-off", "body-1k", "body-64k", "body-1m", "many-keys",
        "workers-2", "cold-sqlite", "cold-postgresql")
