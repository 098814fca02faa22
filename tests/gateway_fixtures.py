"""End-to-end fixtures: a recording upstream process and a real ``gateway serve``
process on free ports, with a SQLite store and keyring of their own."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_config
from gateway.kek import Keyring, create_keyring_file, load_keyring
from gateway.keys.lifecycle import Actor, Issued, KeyManager, NewKey
from gateway.store import open_store

from .conftest import ROOT, free_port

ACTOR = Actor(principal="cli:test")


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path,
                  host: str = "127.0.0.1") -> None:
    import socket

    deadline = time.monotonic() + 15
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        with socket.socket(family) as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}: {log.read_text()[-2000:]}")


@dataclass
class Upstream:
    port: int
    log: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def records(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


def start_upstream(tmp: Path) -> Upstream:
    port = free_port()
    log = tmp / f"upstream-{port}.jsonl"
    out = tmp / f"upstream-{port}.out"
    with out.open("wb") as sink:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([sys.executable, "-m", "tests.upstream", str(port), str(log)],
                                cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
    wait_for_port(port, proc, "the test upstream", out)
    return Upstream(port, log, proc)


ROUTES = """
[[routes]]
prefix = "/api/"
upstream = "{upstream}"
scopes = {{ GET = "api:read", HEAD = "api:read", POST = "api:write", PUT = "api:write" }}
max_body = "1MiB"

[[routes]]
prefix = "/open/"
upstream = "{upstream}"
replay = "off"
allow_unsigned_payload = true
allow_presigned_methods = ["GET", "HEAD", "POST"]

[[routes]]
prefix = "/strip/"
upstream = "{upstream}"
strip_prefix = true

[[routes]]
prefix = "/slow/"
upstream = "{upstream}"
timeout = "1s"

[[routes]]
prefix = "/dead/"
upstream = "http://127.0.0.1:{dead_port}"
connect_timeout = "1s"
"""


@dataclass
class GatewayProcess:
    port: int
    admin_port: int
    config_path: Path
    proc: subprocess.Popen[bytes]
    upstream: Upstream
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    listen_host: str = "127.0.0.1"  # the data plane's; the admin listener stays on 127.0.0.1

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def host(self) -> str:
        return f"{authority(self.listen_host)}:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    async def create_key(self, *, principal: str | None = None, scopes: tuple[str, ...] = (
            "api:*",), expiry: float | None = 86400.0, now: datetime | None = None,
                         **kw: Any) -> Issued:
        config = load_config(self.config_path, env={})
        store = await open_store(config.store.url)
        try:
            manager = KeyManager(store, load_keyring(config.kek.keyring), config.policy)
            return await manager.create(  # a principal of its own: no key limit to meet
                NewKey(principal=principal or f"svc-{secrets.token_hex(4)}", scopes=scopes, expiry=expiry, **kw),
                actor=ACTOR, now=now or datetime.now(UTC))
        finally:
            await store.close()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway.cli", *args, "--config",
                               str(self.config_path)], cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, **self.env}, timeout=60)

    def rss_peak_kib(self) -> int:
        """VmHWM of the gateway process (peak resident set, KiB)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise RuntimeError("no VmHWM")


def authority(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def write_config(tmp: Path, upstream: Upstream, extra: str = "", *, server: str = "",
                 policy: str = "", store_url: str | None = None, keyring: Path | None = None,
                 name: str = "gateway", change_poll: str = "100ms",
                 listen_host: str = "127.0.0.1") -> tuple[Path, int, int]:
    """A config on free ports. ``server`` / ``policy`` add lines to those sections,
    ``extra`` more sections; ``store_url`` and ``keyring`` (an existing file) let several
    gateways share one store and KEK (instances sharing ``tmp`` share its keyring too);
    ``listen_host`` is the data plane's address (``::1`` for IPv6)."""
    port, admin_port = free_port(), free_port()
    config = tmp / f"{name}.toml"
    config.write_text(f"""
[server]
listen = "{authority(listen_host)}:{port}"
header_timeout = "1s"
body_timeout = "2s"
{server}
[admin]
listen = "127.0.0.1:{admin_port}"
[store]
url = "{store_url or f"sqlite://{tmp / 'keys.db'}"}"
[kek]
keyring = "{keyring or tmp / 'keyring.json'}"
[cache]
change_poll = "{change_poll}"
[policy]
min_lifetime = "1s"
inactivity = "30d"
{policy}
[log]
access_log = true
{extra}
""" + ROUTES.format(upstream=upstream.url, dead_port=free_port()))
    if keyring is None and not (tmp / "keyring.json").exists():
        create_keyring_file(tmp / "keyring.json", Keyring.generate(datetime.now(UTC)))
    return config, port, admin_port


def start_gateway(tmp: Path, upstream: Upstream, extra: str = "", **kw: Any) -> GatewayProcess:
    """``gateway serve`` in a process of its own; ``kw`` as for :func:`write_config`."""
    config, port, admin_port = write_config(tmp, upstream, extra, **kw)
    log = tmp / f"{config.stem}.out"
    with log.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config",
                                 str(config)], cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
    host = kw.get("listen_host", "127.0.0.1")
    wait_for_port(port, proc, "gateway serve", log, host)
    wait_for_port(admin_port, proc, "the admin listener", log)
    return GatewayProcess(port, admin_port, config, proc, upstream, log, listen_host=host)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    """A recording upstream process, for tests that start gateways of their own."""
    up = start_upstream(tmp_path_factory.mktemp("upstream"))
    yield up
    stop(up.proc)


@pytest.fixture(scope="module", params=["lean", "aiohttp"])
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[GatewayProcess]:
    """A running gateway with a recording upstream of its own, once with each
    forwarder: both must pass every test."""
    tmp = tmp_path_factory.mktemp(f"gateway-{request.param}")
    up = start_upstream(tmp)
    gw = start_gateway(tmp, up, server=f'forwarder = "{request.param}"')
    yield gw
    stop(gw.proc)
    stop(up.proc)


def days_ago(n: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=n)


