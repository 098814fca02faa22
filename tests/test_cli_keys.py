"""The ``gateway keys|kek|store`` commands, run as a user runs them, on both backends."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import itertools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from .keystore_fixtures import NOW

from gateway.cli import main
from gateway.cli.output import ProgressBar
from gateway.config import load_config
from gateway.kek import load_keyring
from gateway.keys.formats import generate_key_id, is_well_formed_secret
from gateway.keys.lifecycle import Actor, KeyManager, NewKey
from gateway.keys.record import API_FIELDS
from gateway.store import open_store

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def config(tmp_path: Path, store_url: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(f'[store]\nurl = "{store_url}"\n[kek]\nkeyring = "{tmp_path}/keyring.json"\n'
                    "[policy]\nmax_active_keys_per_principal = 3000\n")
    assert main(["kek", "generate", "--config", str(path)]) == 0
    return path


def gw(capsys: pytest.CaptureFixture[str], config: Path, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([*argv, "--config", str(config)])
    out, err = capsys.readouterr()
    return code, out, err


def gw_json(capsys: pytest.CaptureFixture[str], config: Path, *argv: str) -> Any:
    code, out, err = gw(capsys, config, *argv, "--json")
    assert code == 0, err
    return orjson.loads(out)


def test_create_prints_the_secret_once_and_never_again(
        capsys: pytest.CaptureFixture[str], config: Path) -> None:
    code, out, err = gw(capsys, config, "keys", "create", "--principal", "ci", "--name",
                        "deploy", "--scope", "api:read", "--scope", "api:write",
                        "--expires-in", "30d", "--rate-limit", "5", "--allow-cidr", "10.0.0.0/8")
    assert code == 0, err
    secrets = [w for w in out.split() if w.startswith("gws_")]
    assert len(secrets) == 1 and is_well_formed_secret(secrets[0])
    assert "shown only this once" in out
    created = gw_json(capsys, config, "keys", "create", "--principal", "ci")
    assert list(created) == ["key_id", "secret", *API_FIELDS[1:]]  # as DESIGN §4 shows it
    assert created["status"] == "active" and created["created_by"].startswith("cli:")
    for argv in (("keys", "list"), ("keys", "show", created["key_id"])):
        for extra in ((), ("--json",)):
            code, out, _ = gw(capsys, config, *argv, *extra)
            assert code == 0
            assert secrets[0] not in out and created["secret"] not in out and "gws_" not in out
    listing = gw_json(capsys, config, "keys", "list")
    assert listing["next_cursor"] is None and len(listing["items"]) == 2
    first = listing["items"][0]
    assert list(first) == list(API_FIELDS)
    assert first["scopes"] == ["api:read", "api:write"] and first["name"] == "deploy"
    assert first["rate_limit"] == {"rps": 5, "burst": 5}
    assert first["source_cidrs"] == ["10.0.0.0/8"]


def test_table_columns_are_aligned(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    for principal in ("a", "a-much-longer-principal"):
        assert gw(capsys, config, "keys", "create", "--principal", principal)[0] == 0
    _, out, _ = gw(capsys, config, "keys", "list")
    header, *rows = out.splitlines()
    assert len(rows) == 2
    status_col = header.index("STATUS")
    assert all(row[status_col:].startswith("active") for row in rows)


@pytest.mark.parametrize("action", ["show", "rotate", "renew", "revoke"])
def test_malformed_and_unknown_key_ids_are_told_apart(
        capsys: pytest.CaptureFixture[str], config: Path, action: str) -> None:
    code, out, err = gw(capsys, config, "keys", action, "gwk_not-a-key")
    assert (code, out) == (2, "") and "malformed key ID" in err and "Traceback" not in err
    absent = generate_key_id()
    code, out, err = gw(capsys, config, "keys", action, absent)
    assert (code, out) == (1, "") and f"no such key: {absent}" in err


def test_lifecycle_from_the_command_line_is_audited_without_secrets(
        capsys: pytest.CaptureFixture[str], config: Path) -> None:
    created = gw_json(capsys, config, "keys", "create", "--principal", "svc")
    key_id = created["key_id"]
    rotated = gw_json(capsys, config, "keys", "rotate", key_id, "--grace", "1h")
    assert rotated["rotated_from"] == key_id and is_well_formed_secret(rotated["secret"])
    old = gw_json(capsys, config, "keys", "show", key_id)
    assert old["status"] == "rotating" and old["rotated_to"] == rotated["key_id"]
    renewed = gw_json(capsys, config, "keys", "renew", rotated["key_id"], "--expires-in", "10d")
    assert renewed["expires_at"] > rotated["created_at"]
    revoked = gw_json(capsys, config, "keys", "revoke", key_id, "--reason", "leaked")
    assert (revoked["status"], revoked["revoke_reason"]) == ("revoked", "leaked")
    code, _, err = gw(capsys, config, "keys", "revoke", key_id)
    assert code == 1 and "already revoked" in err
    code, _, err = gw(capsys, config, "keys", "create", "--principal", "x", "--expires-in", "400d")
    assert code == 1 and "between 1d and 365d" in err

    async def audit() -> list[Any]:
        store = await open_store(load_config(config).store.url)
        try:
            return await store.list_audit()
        finally:
            await store.close()

    entries = asyncio.run(audit())
    assert [e.action for e in entries] == [
        "key.created", "key.rotated", "key.created", "key.renewed", "key.revoked"]
    for e in entries:
        assert e.actor_key_id is None and e.actor_principal.startswith("cli:") and e.source == "cli"
        dumped = orjson.dumps(e.details).decode()
        assert created["secret"] not in dumped and rotated["secret"] not in dumped


def test_kek_generate_refuses_to_overwrite(capsys: pytest.CaptureFixture[str],
                                           config: Path) -> None:
    keyring = Path(load_config(config).kek.keyring)
    before = keyring.read_bytes()
    code, _, err = gw(capsys, config, "kek", "generate")
    assert code == 1 and "refusing to overwrite" in err
    assert keyring.read_bytes() == before


def test_kek_add_activate_retire(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    secret = gw_json(capsys, config, "keys", "create", "--principal", "svc")
    assert gw_json(capsys, config, "kek", "add")["added"] == 2
    code, _, err = gw(capsys, config, "kek", "retire", "1")
    assert code == 1 and "current" in err
    activated = gw_json(capsys, config, "kek", "activate", "2")
    assert activated == {"current": 2, "versions": [1, 2], "rewrapped": 1}
    code, _, err = gw(capsys, config, "kek", "retire", "3")
    assert code == 1 and "not in the keyring" in err
    assert gw_json(capsys, config, "kek", "retire", "1")["versions"] == [2]
    keyring = load_keyring(load_config(config).kek.keyring)

    async def check() -> None:
        store = await open_store(load_config(config).store.url)
        try:
            _, got = await KeyManager(store, keyring, load_config(config).policy).get_with_secret(
                secret["key_id"])
            assert got.reveal() == secret["secret"]
        finally:
            await store.close()

    asyncio.run(check())


def test_retire_is_refused_while_a_record_uses_the_version(
        capsys: pytest.CaptureFixture[str], config: Path) -> None:
    gw_json(capsys, config, "keys", "create", "--principal", "svc")
    gw_json(capsys, config, "kek", "add")
    keyring = Path(load_config(config).kek.keyring)
    # make 2 current without re-wrapping: the record stays under version 1
    doc = orjson.loads(keyring.read_bytes())
    doc["current"] = 2
    keyring.write_bytes(orjson.dumps(doc))
    code, _, err = gw(capsys, config, "kek", "retire", "1")
    assert code == 1 and "still wraps 1 record" in err
    assert load_keyring(keyring).versions == (1, 2)


def test_store_migrate_reports_what_it_applied(capsys: pytest.CaptureFixture[str],
                                               tmp_path: Path) -> None:
    path = tmp_path / "g.toml"
    path.write_text(f'[store]\nurl = "sqlite://{tmp_path}/fresh/keys.db"\n')
    assert gw_json(capsys, path, "store", "migrate") == {"schema_version": 3, "applied": [1, 2, 3]}
    assert gw_json(capsys, path, "store", "migrate") == {"schema_version": 3, "applied": []}


@pytest.mark.parametrize("setup, needle", [
    pytest.param('[store]\nurl = "postgresql://u:hunter2@127.0.0.1:1/db"\n',
                 "cannot connect to PostgreSQL at 127.0.0.1:1/db", id="store-down"),
    pytest.param('[store]\nurl = "mysql://x"\n', "store.url", id="bad-url"),
    pytest.param('[stor]\n', "unknown setting stor", id="bad-config"),
])
def test_bad_setup_is_one_clear_line(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                     setup: str, needle: str) -> None:
    path = tmp_path / "g.toml"
    path.write_text(setup)
    code, out, err = gw(capsys, path, "keys", "list")
    assert code in (1, 2) and out == ""
    assert needle in err and "hunter2" not in err and len(err.splitlines()) == 1


def test_world_readable_keyring_is_refused(capsys: pytest.CaptureFixture[str],
                                           config: Path) -> None:
    os.chmod(load_config(config).kek.keyring, 0o644)
    code, _, err = gw(capsys, config, "keys", "create", "--principal", "svc")
    assert code == 1 and "chmod 600" in err


def test_kek_rotate_killed_midway_and_rerun_finishes(config: Path) -> None:
    """~2,000 keys: SIGKILL the real command after its first quarter, run it again."""
    cfg = load_config(config)
    keyring = load_keyring(cfg.kek.keyring)
    actor = Actor(principal="cli:test")

    async def create() -> dict[str, str]:
        store = await open_store(cfg.store.url)
        try:
            manager = KeyManager(store, keyring, cfg.policy)
            issued = await manager.create_many([NewKey(principal="bulk")] * 2000, actor=actor,
                                               now=NOW)
            return {i.record.key_id: i.secret.reveal() for i in issued}
        finally:
            await store.close()

    secrets = asyncio.run(create())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("GATEWAY_CONFIG", None)
    argv = [sys.executable, "-m", "gateway.cli", "kek", "rotate", "--config", str(config),
            "--batch-size", "10"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stderr is not None
    first, second = proc.stderr.readline(), proc.stderr.readline()  # 0%, then >= 25%
    proc.kill()
    proc.communicate()
    assert "0/2,000 (0%)" in first and "(25%)" in second

    async def versions() -> dict[int, int]:
        store = await open_store(cfg.store.url)
        try:
            return await store.count_by_kek_version()
        finally:
            await store.close()

    midway = asyncio.run(versions())
    assert midway.get(1, 0) > 0 and midway.get(2, 0) >= 500, midway  # genuinely half done
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "Resuming the unfinished re-wrap under KEK version 2" in done.stdout
    assert "(100%)" in done.stderr
    assert asyncio.run(versions()) == {2: 2000}
    ring = load_keyring(cfg.kek.keyring)
    assert ring.current == 2

    async def verify_all() -> int:
        store = await open_store(cfg.store.url)
        try:
            manager = KeyManager(store, ring, cfg.policy)
            message = b"GET\n/api/items\n"
            ok = 0
            for key_id, secret in secrets.items():
                _, unwrapped = await manager.get_with_secret(key_id)
                mac = hmac.new(unwrapped.hmac_key(), message, hashlib.sha256).digest()
                expected = hmac.new(secret.encode(), message, hashlib.sha256).digest()
                ok += hmac.compare_digest(mac, expected)
            return ok
        finally:
            await store.close()

    assert asyncio.run(verify_all()) == 2000


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_one_redrawn_line_on_a_terminal() -> None:
    ticks = itertools.count(0.0, 0.05)  # 100 updates over 5 s
    out = _Terminal()
    bar = ProgressBar("re-wrapping", stream=out, clock=lambda: next(ticks))
    for done in range(0, 100_001, 1000):
        bar(done, 100_000)
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")  # one line, ended once
    assert 20 <= text.count("\r") <= 51  # redrawn at most every 0.1 s, not once per batch
    assert "100,000/100,000 100%" in text


def test_progress_is_a_few_lines_elsewhere() -> None:
    out = io.StringIO()
    bar = ProgressBar("re-wrapping", stream=out, clock=lambda: 1.0)
    for done in range(0, 100_001, 1000):
        bar(done, 100_000)
    lines = out.getvalue().splitlines()
    assert [line.split(": ")[1].split(" ")[1] for line in lines] == [
        "(0%)", "(25%)", "(50%)", "(75%)", "(100%)"]
    assert "\r" not in out.getvalue()


def test_rotate_wait_idle_revoke_old(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    created = gw_json(capsys, config, "keys", "create", "--principal", "svc")
    code, _, err = gw(capsys, config, "keys", "rotate", created["key_id"], "--wait-idle", "1h")
    assert code == 2 and "--wait-idle and --revoke-old go together" in err
    assert gw_json(capsys, config, "keys", "show", created["key_id"])["status"] == "active"
    # zero idleness and zero flush interval: nothing to wait for, so no real sleep here
    config.write_text(config.read_text() + '[usage]\nflush = "0s"\n')
    code, out, err = gw(capsys, config, "keys", "rotate", created["key_id"], "--wait-idle", "0s",
                        "--revoke-old", "--json")
    assert code == 0, err
    new = orjson.loads(out)
    assert is_well_formed_secret(new["secret"]) and "revoked (rotated)" in err
    old = gw_json(capsys, config, "keys", "show", created["key_id"])
    assert (old["status"], old["revoke_reason"], old["rotated_to"]) == (
        "revoked", "rotated", new["key_id"])
