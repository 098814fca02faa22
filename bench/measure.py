"""One measured load run against one target: the load generator (``wrk`` with
bench/pool.lua, or bench/loadgen.py), the front process's CPU before and after, and
the accounting of every request sent."""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from .targets import ROOT, Target

__all__ = ["have_wrk", "run_load"]

LUA = Path(__file__).with_name("pool.lua")


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_load(target: Target, pool: Path, *, body: int, unique: bool, duration: float,
             connections: int, rate: float = 0.0, loadgen: str = "wrk") -> dict[str, Any]:
    """Closed loop (``rate == 0``) or open loop at ``rate`` requests/s for ``duration`` s."""
    if rate == 0 and loadgen == "wrk":
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s",
                "--timeout", "10s", "-s", str(LUA), target.url, "--", str(pool), str(body),
                "unique" if unique else "cycle"]
        generator = "wrk -t1"
    else:
        argv = [sys.executable, "-m", "bench.loadgen", "--port", str(target.port), "--pool",
                str(pool), "--body", str(body), "--rate", str(rate), "--connections",
                str(connections), "--duration", str(duration)] + (["--unique"] if unique else [])
        generator = "bench.loadgen"
    by0 = target.cpu_by_process()
    cpu0, gen0 = target.cpu(), _children_cpu()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True,
                          timeout=duration + 60, check=False)
    cpu1, gen1 = target.cpu(), _children_cpu()
    by1 = target.cpu_by_process()
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH-JSON ")), None)
    if line is None:
        raise RuntimeError(f"{generator} against {target.name} printed no result "
                           f"(exit {done.returncode}): {done.stderr[-1500:]}")
    r: dict[str, Any] = json.loads(line.removeprefix("BENCH-JSON "))
    seconds = r["duration_us"] / 1e6
    completed = r["requests"]
    r["generator"] = generator
    r["mode"] = "closed" if rate == 0 else "open"
    r["offered_rps"] = rate or None
    r["connections"] = connections
    r["rps"] = completed / seconds if seconds else 0.0
    r["cpu_s"] = cpu1 - cpu0
    r["cpu_us_per_req"] = (cpu1 - cpu0) * 1e6 / completed if completed else None
    r["cpu_by_process_s"] = {str(pid): round(by1[pid] - by0.get(pid, 0.0), 3) for pid in by1}
    r["loadgen_cpu_s"] = gen1 - gen0
    r["loadgen_cpu_us_per_req"] = (gen1 - gen0) * 1e6 / completed if completed else None
    in_flight = r["sent"] - completed
    errors = r["errors"]
    r["accounting"] = {
        "sent": r["sent"], "completed": completed, "non_2xx": errors["status"],
        "socket_errors": errors["connect"] + errors["read"] + errors["write"]
        + errors["timeout"],
        "in_flight_at_stop": in_flight,  # wrk abandons these when the clock runs out
        "pool_exhausted": bool(r["exhausted_threads"]),
        # one more than the connections: wrk may ask for the next request as it stops
        "ok": (errors["status"] == 0 and 0 <= in_flight <= connections + 1
               and not r["exhausted_threads"] and errors["connect"] == 0),
    }
    return r
