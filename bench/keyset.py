"""Key stores for a run: a keyring and N keys created through the bulk path
(``KeyManager.create_many``), with their secrets kept for signing.

SQLite sets are cached under the cache directory (100,000 keys take a while to make
and never change); PostgreSQL sets live in a fresh database on the server of
``DATABASE_URL``, dropped when the run ends.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from gateway.config import PolicyConfig
from gateway.kek import Keyring, create_keyring_file, load_keyring
from gateway.keys.lifecycle import Actor, KeyManager, NewKey
from gateway.store import open_store

__all__ = ["KeySet", "drop_postgres", "postgres_keyset", "sqlite_keyset"]

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
ACTOR = Actor(principal="cli:bench")
BATCH = 5000


@dataclass(frozen=True)
class KeySet:
    store_url: str
    keyring: Path
    keys: list[tuple[str, str]]  # (key ID, secret)
    database: str | None = None  # PostgreSQL database to drop afterwards


async def _create(url: str, keyring: Keyring, n: int) -> list[tuple[str, str]]:
    store = await open_store(url)
    policy = replace(PolicyConfig(), max_active_keys_per_principal=BATCH)
    manager = KeyManager(store, keyring, policy)
    now = datetime.now(UTC)
    out: list[tuple[str, str]] = []
    try:
        for start in range(0, n, BATCH):
            issued = await manager.create_many(
                [NewKey(principal=f"bench-{start // BATCH}", scopes=("api:*",),
                        expiry=30 * 86400.0)] * min(BATCH, n - start), actor=ACTOR, now=now)
            out += [(i.record.key_id, i.secret.reveal()) for i in issued]
    finally:
        await store.close()
    return out


def sqlite_keyset(cache: Path, n: int) -> KeySet:
    """N keys in a SQLite store, made once and reused from ``cache``."""
    home = cache / f"sqlite-{n}"
    done = home / "secrets.json"
    if not done.exists() or json.loads(done.read_text())["created"] < (
            datetime.now(UTC).timestamp() - 20 * 86400):  # keys live 30 days
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        create_keyring_file(home / "keyring.json", Keyring.generate(datetime.now(UTC)))
        keys = asyncio.run(_create(f"sqlite://{home / 'keys.db'}",
                                   load_keyring(home / "keyring.json"), n))
        done.write_text(json.dumps({"created": datetime.now(UTC).timestamp(), "keys": keys}))
    keys = [(k[0], k[1]) for k in json.loads(done.read_text())["keys"]]
    return KeySet(f"sqlite://{home / 'keys.db'}", home / "keyring.json", keys)


async def _admin(sql: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(DATABASE_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def postgres_keyset(workdir: Path, n: int) -> KeySet:
    """N keys in a fresh PostgreSQL database (dropped by :func:`drop_postgres`)."""
    name = f"gwbench_{secrets.token_hex(4)}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    parts = urlsplit(DATABASE_URL)
    url = urlunsplit(parts._replace(path=f"/{name}"))
    keyring = workdir / "pg-keyring.json"
    create_keyring_file(keyring, Keyring.generate(datetime.now(UTC)))
    keys = asyncio.run(_create(url, load_keyring(keyring), n))
    return KeySet(url, keyring, keys, database=name)


def drop_postgres(keyset: KeySet) -> None:
    if keyset.database:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{keyset.database}" WITH (FORCE)'))
