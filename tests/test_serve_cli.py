"""``gateway serve`` start-up errors, the admin listener's health endpoints, and
``gateway demo`` as a new user runs it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from gateway.kek import Keyring, create_keyring_file

from .conftest import ROOT, free_port
from .gateway_fixtures import GatewayProcess, stop, wait_for_port


def serve(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--config",
                           str(config)], capture_output=True, text=True, timeout=30, cwd=ROOT,
                          env={k: v for k, v in os.environ.items()
                               if not k.startswith("GATEWAY_")})


@pytest.fixture
def keyring(tmp_path: Path) -> Path:
    path = tmp_path / "keyring.json"
    create_keyring_file(path, Keyring.generate(datetime.now(UTC)))
    return path


@pytest.mark.parametrize(("text", "status", "says"), [
    ("[server\n", 2, "is not valid TOML"),
    ("[server]\nlisten_on = 1\n", 2, "unknown setting server.listen_on"),
    ("[auth]\nclock_skew = \"5 minutes\"\n", 2, "setting auth.clock_skew"),
    ("[store]\nurl = \"postgresql://postgres@127.0.0.1:1/x\"\n[kek]\nkeyring = \"{keyring}\"\n",
     1, "cannot connect to PostgreSQL"),
    ("[store]\nurl = \"sqlite://{tmp}/k.db\"\n[kek]\nkeyring = \"{tmp}/absent.json\"\n", 1,
     "does not exist; create it with `gateway kek generate"),
])
def test_configuration_errors_are_one_clear_line(tmp_path: Path, keyring: Path, text: str,
                                                 status: int, says: str) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(text.format(keyring=keyring, tmp=tmp_path))
    done = serve(config)
    assert done.returncode == status
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in done.stderr, done.stderr


def test_a_keyring_readable_by_others_is_refused(tmp_path: Path, keyring: Path) -> None:
    keyring.chmod(0o644)
    config = tmp_path / "gateway.toml"
    config.write_text(f'[store]\nurl = "sqlite://{tmp_path}/k.db"\n[kek]\nkeyring = "{keyring}"\n')
    done = serve(config)
    assert done.returncode == 1 and "chmod 600" in done.stderr


async def test_health_readiness_and_metrics(gateway: GatewayProcess) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(gateway.admin_url + "/healthz") as r:
            assert (r.status, await r.json()) == (200, {"status": "ok"})
        async with s.get(gateway.admin_url + "/readyz") as r:
            assert (r.status, await r.json()) == (200, {"status": "ok"})
        async with s.get(gateway.url + "/nowhere") as r:
            assert r.status == 404
        async with s.get(gateway.admin_url + "/metrics") as r:
            text = await r.text()
    assert r.status == 200
    assert re.search(r'gateway_requests_total\{outcome="route_not_found",route="-",'
                     r'status="404"\} [1-9]', text), text
    assert "gateway_cache_entries" in text


async def test_expect_100_continue_is_answered(gateway: GatewayProcess) -> None:
    key = await gateway.create_key()
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-v", "-o", "/dev/null", "-w", "%{http_code}",
        "--aws-sigv4", "aws:amz:local:gateway",
        "--user", f"{key.record.key_id}:{key.secret.reveal()}",
        "-H", "Expect: 100-continue", "--data-binary", "x" * 4096,
        gateway.url + "/api/expect", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert out == b"200", err.decode()[-1000:]
    assert b"HTTP/1.1 100 Continue" in err


def test_demo_prints_a_curl_command_that_works(tmp_path: Path) -> None:
    port, admin = free_port(), free_port()
    out = tmp_path / "demo.out"
    with out.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "demo", "--port",
                                 str(port), "--admin-port", str(admin)], cwd=ROOT,
                                stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_for_port(admin, proc, "gateway demo", out)
        deadline = time.monotonic() + 10
        while "curl --aws-sigv4" not in out.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        text = out.read_text()
        command = text[text.index("curl --aws-sigv4"):].split("\n\n")[0].replace("\\\n", " ")
        done = subprocess.run(shlex.split(command) + ["-sS"], capture_output=True, text=True,
                              timeout=30)
        assert done.returncode == 0, done.stderr
        echo = json.loads(done.stdout)
        assert echo["target"] == "/hello?name=world"
        assert echo["headers"]["X-Gateway-Principal"] == "demo"
    finally:
        stop(proc)
