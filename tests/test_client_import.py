"""``import gateway.client`` stays light: no HTTP library, nothing of the server,
under 150 ms of import time (``python -X importtime``), adapters loaded on use."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("aiohttp", "requests", "httpx", "urllib3", "redis", "asyncpg", "cryptography",
         "orjson", "uvloop", "yarl", "multidict")
BUDGET_US = 150_000


def python(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          check=True, timeout=60)


def import_time_us() -> int:
    """Cumulative import time of gateway.client, as ``-X importtime`` reports it."""
    out = python("-X", "importtime", "-c", "import gateway.client").stderr
    match = re.search(r"^import time:\s+\d+ \|\s+(\d+) \| gateway\.client$", out, re.MULTILINE)
    assert match, out[-2000:]
    return int(match.group(1))


def test_import_time_is_under_150_ms() -> None:
    best = min(import_time_us() for _ in range(3))  # the least disturbed of three runs
    print(f"import gateway.client: {best / 1000:.1f} ms")
    assert best < BUDGET_US


def test_importing_pulls_in_no_http_library_and_nothing_of_the_server() -> None:
    code = ("import sys, gateway.client; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))")
    assert python("-c", code).stdout.strip() == "[]"


def test_each_adapter_loads_its_library_on_first_use() -> None:
    code = ("import sys, gateway.client as c; c.RequestsAuth; "
            "print('requests' in sys.modules, 'httpx' in sys.modules, 'aiohttp' in sys.modules)")
    assert python("-c", code).stdout.split() == ["True", "False", "False"]
