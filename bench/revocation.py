"""Revocation propagation: how long from a committed revoke until every instance
refuses the key, with clients hammering all instances meanwhile.

    python3 bench/revocation.py [--keys 200] [--instances 3] [--json]

Starts its own upstream and N ``gateway serve`` processes sharing the PostgreSQL at
$DATABASE_URL (a fresh database of its own) and the Redis at $REDIS_URL (a key prefix
of its own); the change-log poll is set to 30 s, so what is measured is the pub/sub
path. Keys are revoked one by one through the lifecycle API (as the CLI and admin API
do); for each, every instance is probed until it answers 401 key_revoked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.config import load_config  # noqa: E402
from gateway.kek import load_keyring  # noqa: E402
from gateway.keys.lifecycle import Actor, KeyManager, NewKey  # noqa: E402
from gateway.proxy.shared import SharedTier  # noqa: E402
from gateway.store import open_store  # noqa: E402
from tests.gateway_fixtures import start_gateway, start_upstream, stop  # noqa: E402
from tests.test_proxy_e2e import ours, send  # noqa: E402

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


async def hammer(gws, keys, stop_at: list[bool]) -> int:  # type: ignore[no-untyped-def]
    n = 0
    while not stop_at:
        gw = gws[n % len(gws)]
        await send(gw, "GET", f"/api/load/{n}", ours(gw, keys[n % len(keys)], "GET",
                                                     f"/api/load/{n}"))
        n += 1
    return n


async def main(args: argparse.Namespace) -> dict[str, object]:
    name = f"gwbench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(DATABASE_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    db_url = DATABASE_URL.rsplit("/", 1)[0] + f"/{name}"
    tmp = Path(tempfile.mkdtemp(prefix="gw-revoke-"))
    prefix = f"gwbench:{secrets.token_hex(4)}:"
    up = start_upstream(tmp)
    redis_section = f'[redis]\nurl = "{REDIS_URL}"\nprefix = "{prefix}"\n'
    gws = [start_gateway(tmp, up, store_url=db_url, extra=redis_section, name=f"gw{i}",
                         change_poll="30s") for i in range(args.instances)]
    try:
        config = load_config(gws[0].config_path, env={})
        store = await open_store(config.store.url)
        assert config.redis is not None
        tier = SharedTier(config.redis)
        store.change_listener = tier.publish_changes
        manager = KeyManager(store, load_keyring(config.kek.keyring), config.policy)
        now = datetime.now(UTC)
        victims = await manager.create_many([NewKey(principal=f"v{i}") for i in range(args.keys)],
                                            actor=Actor("cli:bench"), now=now)
        bystanders = await manager.create_many([NewKey(principal=f"b{i}") for i in range(4)],
                                               actor=Actor("cli:bench"), now=now)
        for key in victims:  # cached on every instance
            await asyncio.gather(*(send(gw, "GET", "/api/warm", ours(gw, key, "GET", "/api/warm"))
                                   for gw in gws))
        done: list[bool] = []
        load = asyncio.gather(*(hammer(gws, bystanders, done) for _ in range(4)))
        delays: list[float] = []
        for i, key in enumerate(victims):
            started = time.perf_counter()
            await manager.revoke(key.record.key_id, actor=Actor("cli:bench"),
                                 now=datetime.now(UTC), reason="bench")

            async def first_refusal(gw):  # type: ignore[no-untyped-def]
                while True:
                    status, answer, _ = await send(gw, "GET", "/api/probe",
                                                   ours(gw, key, "GET", "/api/probe"))
                    if status == 401 and answer.get("error") == "key_revoked":
                        return time.perf_counter() - started

            delays += await asyncio.gather(*(first_refusal(gw) for gw in gws))
            if not args.json and (i + 1) % 20 == 0:
                print(f"  {i + 1}/{args.keys} keys revoked", file=sys.stderr)
        done.append(True)
        served = sum(await load)
        await tier.close()
        await store.close()
    finally:
        for gw in gws:
            stop(gw.proc)
        stop(up.proc)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    ms = sorted(d * 1000 for d in delays)
    return {"keys": args.keys, "instances": args.instances, "measurements": len(ms),
            "background_requests": served,
            "p50_ms": statistics.median(ms), "p99_ms": ms[int(len(ms) * 0.99) - 1],
            "max_ms": ms[-1]}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=200)
    ap.add_argument("--instances", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    result = asyncio.run(main(ap.parse_args()))
    if "--json" in sys.argv:
        print(json.dumps(result, indent=2))
    else:
        print(f"revoke → refused on every instance, {result['measurements']} measurements "
              f"({result['keys']} keys × {result['instances']} instances), "
              f"{result['background_requests']} background requests:")
        print(f"  p50 {result['p50_ms']:.1f} ms   p99 {result['p99_ms']:.1f} ms   "
              f"max {result['max_ms']:.1f} ms")
