"""Leaked secrets (issue 13): ``gateway scan`` finds exactly our checksum-valid secrets
and key IDs in a tree, masks the secrets and fails the build; ``--revoke`` and
``POST /v1/leaks`` revoke the keys at once, with the location in the audit trail."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.keys.formats import generate_key_id, generate_secret
from gateway.keys.scan import Finding, Skipped, scan_bytes, scan_paths

from .admin_client import Key, admin, bootstrap_admin, data
from .conftest import ROOT
from .gateway_fixtures import GatewayProcess, Upstream, start_gateway, stop


def wrong_checksum(token: str) -> str:
    last = token[-1]
    return token[:-1] + ("A" if last != "A" else "B")


# -- the scanner itself (pure) --------------------------------------------------------------

def test_scan_bytes_finds_valid_tokens_with_their_lines_and_nothing_else() -> None:
    secret, key_id = generate_secret(), generate_key_id()
    text = (f"a\r\nexport GATEWAY_SECRET={secret}\n{key_id}:{secret}x\n"
            f"{wrong_checksum(secret)} {wrong_checksum(key_id)} gws_{'A' * 48} "
            f"xgws_{secret[4:]}\n").encode()
    found = scan_bytes(text, "f")
    assert [(f.line, f.kind, f.token) for f in found] == [
        (2, "secret", secret), (3, "key_id", key_id), (3, "secret", secret),
        (4, "secret", secret)]  # a prefix glued to a word is still our secret
    assert found[0].masked == secret[:8] + "…" and secret not in repr(found[0])
    assert found[1].masked == key_id  # key IDs are public


def test_scan_paths_skips_binaries_big_files_symlinks_and_reads_stdin(tmp_path: Path) -> None:
    secret = generate_secret()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "ok.txt").write_text(f"{secret}\n")
    (tmp_path / "d" / "bin.dat").write_bytes(b"\x89PNG\0" + secret.encode())
    (tmp_path / "d" / "late-nul.txt").write_bytes(b"x" * 9000 + b"\0\n" + secret.encode())
    (tmp_path / "d" / "big.log").write_text("x" * 10_000 + secret)
    (tmp_path / "d" / "link.txt").symlink_to(tmp_path / "d" / "ok.txt")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "o.txt").write_text(secret)
    (tmp_path / "d" / "linkdir").symlink_to(tmp_path / "outside")
    got = list(scan_paths([str(tmp_path / "d"), "-"], max_size=10_000,
                          stdin=io.BytesIO(f"\n{secret}".encode())))
    findings = [(Path(g.path).name, g.line) for g in got if isinstance(g, Finding)]
    assert findings == [("late-nul.txt", 2), ("ok.txt", 1), ("-", 2)]
    assert [(Path(g.path).name, g.reason) for g in got if isinstance(g, Skipped)] == [
        ("big.log", "larger than --max-size (10000 bytes)")]


# -- the command, against a real store ------------------------------------------------------

@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
            ) -> Iterator[GatewayProcess]:
    gw = start_gateway(tmp_path_factory.mktemp("leaks"), upstream, '[usage]\nflush = "100ms"\n')
    yield gw
    stop(gw.proc)


@pytest.fixture(scope="module")
def root(gateway: GatewayProcess) -> Key:
    return bootstrap_admin(gateway, "ops-root")


def scan(gw: GatewayProcess, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "scan", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT),
                               "GATEWAY_CONFIG": str(gw.config_path)})


async def test_scan_finds_the_real_secrets_masks_them_and_revoke_kills_them(
        gateway: GatewayProcess, root: Key, tmp_path: Path) -> None:
    live = [Key.of(await gateway.create_key()) for _ in range(2)]
    dead = Key.of(await gateway.create_key())
    assert (await admin(gateway, root, "POST", f"/v1/keys/{dead.key_id}/revoke",
                        {"reason": "offboarded"}))[0] == 200
    foreign = generate_secret()  # well-formed, checksum right, but no key of ours
    tree = tmp_path / "repo"
    (tree / "ci").mkdir(parents=True)
    (tree / "ci" / "deploy.yml").write_text(
        f"env:\n  KEY_ID: {live[0].key_id}\n  SECRET: {live[0].secret}\n")
    (tree / "notes.md").write_text(
        f"old key {dead.secret}\nlook-alikes: {wrong_checksum(live[1].secret)} "
        f"gws_{'x' * 49} {wrong_checksum(live[0].key_id)}\n")
    (tree / "ci" / "log.txt").write_text(f"line\nline\ncurl --user K:{live[1].secret}\n"
                                         f"{foreign}\n")
    (tree / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0" + live[1].secret.encode())

    done = scan(gateway, ".", "--json", cwd=tree)
    assert done.returncode == 1, done.stderr
    findings = json.loads(done.stdout)["findings"]
    assert [(f["path"], f["line"], f["kind"]) for f in findings] == [
        ("./notes.md", 1, "secret"), ("./ci/deploy.yml", 2, "key_id"),
        ("./ci/deploy.yml", 3, "secret"), ("./ci/log.txt", 3, "secret"),
        ("./ci/log.txt", 4, "secret")]
    assert findings[1]["key_id"] == live[0].key_id
    assert findings[2] == {"path": "./ci/deploy.yml", "line": 3, "kind": "secret",
                           "key_id": None, "masked": live[0].secret[:8] + "…"}
    people = scan(gateway, ".", cwd=tree)
    assert people.returncode == 1
    assert "./ci/log.txt:3: secret " + live[1].secret[:8] + "…" in people.stdout
    for out in (done.stdout, done.stderr, people.stdout, people.stderr):
        assert not any(k.secret in out for k in (*live, dead)) and foreign not in out
    # key IDs alone are public: listed, exit 0
    (tmp_path / "ids.txt").write_text(live[0].key_id)
    assert scan(gateway, "ids.txt", cwd=tmp_path).returncode == 0

    done = scan(gateway, ".", "--json", "--revoke", cwd=tree)
    assert done.returncode == 1, done.stderr
    verdicts = [(f["path"], f["line"], f.get("key_id"), f.get("verdict"))
                for f in json.loads(done.stdout)["findings"] if f["kind"] == "secret"]
    assert verdicts == [("./notes.md", 1, dead.key_id, "already_revoked"),
                        ("./ci/deploy.yml", 3, live[0].key_id, "revoked"),
                        ("./ci/log.txt", 3, live[1].key_id, "revoked"),
                        ("./ci/log.txt", 4, None, "not_ours")]
    for key, where in ((live[0], "./ci/deploy.yml:3"), (live[1], "./ci/log.txt:3")):
        status, doc = await admin(gateway, root, "GET", f"/v1/keys/{key.key_id}")
        assert (doc["status"], doc["revoke_reason"]) == ("revoked", "leaked")
        status, doc = await admin(gateway, root, "GET",
                                  f"/v1/audit?key_id={key.key_id}&action=key.revoked")
        (entry,) = doc["items"]
        assert entry["details"] == {"reason": "leaked", "source": where}
        assert entry["actor_principal"].startswith("cli:")
        status, doc = await data(gateway, key, "GET", "/api/x")  # the change poll: 100 ms
        assert (status, doc["error"]) == (401, "key_revoked")


async def test_scan_bad_input(gateway: GatewayProcess, tmp_path: Path) -> None:
    done = scan(gateway, "no-such-dir", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (
        2, "gateway: error: no-such-dir: no such file or directory\n")
    done = scan(gateway, ".", "--max-size", "lots", cwd=tmp_path)
    assert done.returncode == 2 and "expected a size" in done.stderr
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "scan", "-"], cwd=tmp_path,
                          input=generate_secret(), capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert done.returncode == 1 and "-:1: secret gws_" in done.stdout  # no config needed


# -- POST /v1/leaks -------------------------------------------------------------------------

async def test_leak_reports_revoke_live_secrets_and_say_nothing_else(
        gateway: GatewayProcess, root: Key, tmp_path: Path, upstream: Upstream) -> None:
    scanner = Key.of(await gateway.create_key(principal="secret-scanner",
                                              scopes=("leaks:report",)))
    live, used = [Key.of(await gateway.create_key()) for _ in range(2)]
    dead = Key.of(await gateway.create_key())
    await admin(gateway, root, "POST", f"/v1/keys/{dead.key_id}/revoke", {})
    # a second instance on the same store, with the default change poll (1 s)
    home = gateway.config_path.parent
    other = start_gateway(tmp_path, upstream, store_url=f"sqlite://{home / 'keys.db'}",
                          keyring=home / "keyring.json", name="other", change_poll="1s")
    try:
        for gw in (gateway, other):
            assert (await data(gw, used, "GET", "/api/before"))[0] == 200  # now cached
        url = "https://github.com/acme/app/blob/main/.env#L3"
        tokens = [live.secret, dead.secret, generate_secret(), "gws_short", "hello",
                  wrong_checksum(live.secret), live.key_id, used.secret, live.secret, ""]
        status, doc = await admin(gateway, scanner, "POST", "/v1/leaks",
                                  {"tokens": [{"token": t, "url": url} for t in tokens]})
        answered = time.monotonic()
        assert status == 200, doc
        assert doc == {"results": [{"index": i, "verdict": v} for i, v in enumerate([
            "revoked", "already_revoked", "not_ours", "not_ours", "not_ours", "not_ours",
            "not_ours", "revoked", "already_revoked", "not_ours"])]}
        # refused at once by the instance that took the report ...
        status, body = await data(gateway, used, "GET", "/api/after")
        assert (status, body["error"]) == (401, "key_revoked")
        # ... and within a second by the other one
        while (got := await data(other, used, "GET", "/api/after"))[0] == 200:
            assert time.monotonic() - answered < 1.5, "still accepted after 1.5 s"
            await asyncio.sleep(0.05)
        assert (got[0], got[1]["error"]) == (401, "key_revoked")
        print(f"leaked key refused by the other instance after "
              f"{time.monotonic() - answered:.2f} s")
    finally:
        stop(other.proc)
    for key in (live, used):
        status, rec = await admin(gateway, root, "GET", f"/v1/keys/{key.key_id}")
        assert (rec["status"], rec["revoke_reason"]) == ("revoked", "leaked")
        status, audit = await admin(gateway, root, "GET",
                                    f"/v1/audit?key_id={key.key_id}&action=key.revoked")
        (entry,) = audit["items"]
        assert (entry["actor_key_id"], entry["actor_principal"], entry["details"]) == (
            scanner.key_id, "secret-scanner", {"reason": "leaked", "source": url})


async def test_leak_reports_need_their_scope_and_a_valid_body(gateway: GatewayProcess,
                                                              root: Key) -> None:
    scanner = Key.of(await gateway.create_key(scopes=("leaks:report",)))
    plain = Key.of(await gateway.create_key(scopes=("api:*", "admin:keys:read")))
    victim = Key.of(await gateway.create_key())
    body: dict[str, Any] = {"tokens": [{"token": victim.secret, "url": "u"}]}
    status, doc = await admin(gateway, plain, "POST", "/v1/leaks", body)
    assert (status, doc["error"]) == (403, "scope_denied")
    status, doc = await admin(gateway, scanner, "GET", "/v1/keys")  # it can do nothing else
    assert (status, doc["error"]) == (403, "scope_denied")
    for bad in ({}, {"tokens": "x"}, {"tokens": [{"token": 1, "url": "u"}]},
                {"tokens": [{"token": "t"}]}, {"tokens": [], "more": 1},
                {"tokens": [{"token": "t", "url": "u"}] * 1001}):
        status, doc = await admin(gateway, scanner, "POST", "/v1/leaks", bad)
        assert (status, doc["error"]) in ((400, "invalid_request"), (413, "body_too_large")), bad
    status, rec = await admin(gateway, root, "GET", f"/v1/keys/{victim.key_id}")
    assert rec["status"] == "active"
    status, doc = await admin(gateway, scanner, "POST", "/v1/leaks", {"tokens": []})
    assert (status, doc) == (200, {"results": []})
    status, doc = await admin(gateway, root, "POST", "/v1/leaks", body)  # admin may too
    assert (status, doc) == (200, {"results": [{"index": 0, "verdict": "revoked"}]})
