"""Operations: with ``--workers 2`` one master owns the socket; SIGHUP re-reads the
configuration (a new route appears) and replaces every worker while clients keep
sending — not one request dropped or failed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

from .gateway_fixtures import start_gateway, start_upstream, stop
from .test_proxy_e2e import ours, send


def workers_of(pid: int) -> set[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


async def test_sighup_restarts_workers_under_load_without_a_failure(tmp_path: Path) -> None:
    up = start_upstream(tmp_path)
    gw = start_gateway(tmp_path, up, server="workers = 2")
    try:
        key = await gw.create_key()
        before = workers_of(gw.proc.pid)
        assert len(before) == 2
        results: list[int] = []
        stop_load = asyncio.Event()

        async def client(n: int) -> None:
            i = 0
            while not stop_load.is_set():
                target = f"/api/restart/{n}-{i}"
                status, answer, _ = await send(gw, "GET", target, ours(gw, key, "GET", target))
                results.append(status)
                if status != 200:
                    print("refused:", status, answer)
                i += 1

        load = [asyncio.create_task(client(n)) for n in range(8)]
        await asyncio.sleep(0.5)
        # a route that did not exist: the reload must bring it in
        gw.config_path.write_text(gw.config_path.read_text() + '''
[[routes]]
prefix = "/added/"
upstream = "''' + up.url + '''"
''')
        os.kill(gw.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # new generation up, old one gone
            now = workers_of(gw.proc.pid)
            if len(now) == 2 and not now & before:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        stop_load.set()
        await asyncio.gather(*load)
        after = workers_of(gw.proc.pid)
        failed = [s for s in results if s != 200]
        print(f"restart under load: {len(results)} requests, {len(failed)} failed; "
              f"workers {sorted(before)} -> {sorted(after)}")
        assert not failed and len(results) > 50
        assert len(after) == 2 and not after & before
        status, _, _ = await send(gw, "GET", "/added/x", ours(gw, key, "GET", "/added/x"))
        assert status == 200
    finally:
        stop(gw.proc)
        stop(up.proc)
