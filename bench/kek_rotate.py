"""KEK rotation over many keys: time, progress, and kill-and-resume (DESIGN.md §3.3, §8).

For each backend: bulk-create N keys (the store's bulk path, not N CLI calls), run
``gateway kek rotate`` to completion and time it, run it again and SIGKILL it at a
random point, run it once more to finish, then check that every key still unwraps
to its original secret and that secret verifies an HMAC.

    python3 bench/kek_rotate.py                       # 100,000 keys, SQLite and PostgreSQL
    python3 bench/kek_rotate.py --backend sqlite --keys 20000
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test python3 bench/kek_rotate.py

PostgreSQL runs in a fresh database created on the server of ``DATABASE_URL`` and
dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.config import PolicyConfig, load_config
from gateway.kek import Keyring, create_keyring_file, load_keyring
from gateway.keys.lifecycle import Actor, KeyManager, NewKey
from gateway.store import KeyFilter, open_store

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
ACTOR = Actor(principal="cli:bench")
MESSAGE = b"AWS4-HMAC-SHA256\n20260301T120000Z\n20260301/local/gateway/aws4_request\n"


def log(text: str) -> None:
    print(text, flush=True)


async def bulk_create(url: str, keyring: Keyring, n: int, batch: int) -> dict[str, str]:
    store = await open_store(url)
    policy = replace(PolicyConfig(), max_active_keys_per_principal=batch)
    manager = KeyManager(store, keyring, policy)
    now = datetime.now(UTC)
    out: dict[str, str] = {}
    try:
        for start in range(0, n, batch):
            size = min(batch, n - start)
            issued = await manager.create_many(
                [NewKey(principal=f"bench-{start // batch}", scopes=("api:read",))] * size,
                actor=ACTOR, now=now)
            out.update((i.record.key_id, i.secret.reveal()) for i in issued)
    finally:
        await store.close()
    return out


async def versions(url: str) -> dict[int, int]:
    store = await open_store(url)
    try:
        return await store.count_by_kek_version()
    finally:
        await store.close()


async def verify_all(url: str, keyring: Keyring, expected: dict[str, str]) -> int:
    """Every record unwraps to its original secret, and that secret's HMAC verifies."""
    store = await open_store(url)
    ok = 0
    try:
        cursor = None
        while True:
            page = await store.list_keys(KeyFilter(), now=datetime.now(UTC), inactivity=0,
                                         limit=5000, cursor=cursor)
            for record in page.items:
                secret = keyring.unwrap_secret(record.key_id, record.wrapped)
                mac = hmac.new(secret.hmac_key(), MESSAGE, hashlib.sha256).digest()
                want = hmac.new(expected[record.key_id].encode(), MESSAGE, hashlib.sha256)
                ok += hmac.compare_digest(mac, want.digest())
            cursor = page.next_cursor
            if cursor is None:
                break
    finally:
        await store.close()
    return ok


def rotate_cmd(config: Path, batch: int) -> list[str]:
    return [sys.executable, "-m", "gateway.cli", "kek", "rotate", "--config", str(config),
            "--batch-size", str(batch)]


def run_rotate(config: Path, batch: int, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(rotate_cmd(config, batch), env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def bench_backend(name: str, url: str, work: Path, n: int, batch: int, rng: random.Random,
                  env: dict[str, str]) -> dict[str, float]:
    config = work / f"{name}.toml"
    keyring_path = work / f"{name}-keyring.json"
    config.write_text(f'[store]\nurl = "{url}"\n[kek]\nkeyring = "{keyring_path}"\n')
    create_keyring_file(keyring_path, Keyring.generate(datetime.now(UTC)))
    cfg = load_config(config)

    log(f"\n== {name}: bulk-creating {n:,} keys")
    t = time.perf_counter()
    expected = asyncio.run(bulk_create(cfg.store.url, load_keyring(keyring_path), n, batch))
    create_s = time.perf_counter() - t
    log(f"   created in {create_s:.1f}s ({create_s / n * 1e4:.2f}s per 10,000)")

    log(f"== {name}: gateway kek rotate (uninterrupted)")
    full_s = run_rotate(config, batch, env)
    log(f"   {full_s:.1f}s for {n:,} keys = {full_s / n * 1e4:.2f}s per 10,000 "
        "(whole command, start-up included)")

    kill_after = rng.uniform(0.1, 0.9) * full_s
    log(f"== {name}: gateway kek rotate, SIGKILL after {kill_after:.2f}s")
    proc = subprocess.Popen(rotate_cmd(config, batch), env=env, stdout=subprocess.DEVNULL)
    time.sleep(kill_after)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    midway = asyncio.run(versions(cfg.store.url))
    log(f"\n   killed; records per KEK version: {midway}")
    log(f"== {name}: gateway kek rotate again (resumes)")
    resume_s = run_rotate(config, batch, env)
    final = asyncio.run(versions(cfg.store.url))
    ring = load_keyring(keyring_path)
    log(f"   resumed in {resume_s:.1f}s; records per KEK version: {final}; "
        f"keyring current = {ring.current}")
    if set(final) != {ring.current}:
        raise SystemExit(f"{name}: records left under other versions: {final}")

    t = time.perf_counter()
    ok = asyncio.run(verify_all(cfg.store.url, ring, expected))
    log(f"   verified {ok:,}/{n:,} keys unwrap to their secret and verify an HMAC "
        f"({time.perf_counter() - t:.1f}s)")
    if ok != n:
        raise SystemExit(f"{name}: only {ok} of {n} keys verified")
    return {"create_s": create_s, "rotate_s": full_s, "per_10k_s": full_s / n * 1e4,
            "killed_at_s": kill_after, "resume_s": resume_s, "verified": ok}


async def pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(DATABASE_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    p.add_argument("--keys", type=int, default=100_000)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--seed", type=int, default=None, help="for a reproducible kill point")
    a = p.parse_args()
    rng = random.Random(a.seed)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("GATEWAY_CONFIG", None)
    results = {}
    with tempfile.TemporaryDirectory(prefix="kek-bench-") as tmp:
        work = Path(tmp)
        if a.backend in ("sqlite", "both"):
            results["sqlite"] = bench_backend("sqlite", f"sqlite://{work}/keys.db", work,
                                              a.keys, a.batch_size, rng, env)
        if a.backend in ("postgres", "both"):
            db = f"gwbench_{secrets.token_hex(4)}"
            asyncio.run(pg_admin(f'CREATE DATABASE "{db}"'))
            try:
                url = urlunsplit(urlsplit(DATABASE_URL)._replace(path=f"/{db}"))
                results["postgres"] = bench_backend("postgres", url, work, a.keys,
                                                    a.batch_size, rng, env)
            finally:
                asyncio.run(pg_admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
    log("\nbackend   keys      create  rotate  per 10k  killed at  resume  verified")
    for name, r in results.items():
        log(f"{name:<9} {a.keys:<9,} {r['create_s']:6.1f}s {r['rotate_s']:6.1f}s "
            f"{r['per_10k_s']:6.2f}s {r['killed_at_s']:8.2f}s {r['resume_s']:6.1f}s "
            f"{int(r['verified']):,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
