"""The run's outputs: a table on the terminal, a JSON file with every figure and the
environment, and a PNG of latency percentiles against offered load."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from .targets import ROOT

__all__ = ["environment", "plot", "table"]


def _version(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0] if text else None


def environment() -> dict[str, Any]:
    cpu = next((ln.split(":", 1)[1].strip() for ln in
                Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    packages: dict[str, str | None] = {}
    for name in ("aiohttp", "uvloop", "orjson", "cryptography", "asyncpg", "yarl",
                 "multidict", "httptools", "hmac-gateway", "matplotlib"):
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "cpu_model": cpu, "cpus": os.cpu_count(), "kernel": platform.release(),
        "python": platform.python_version(), "packages": packages,
        "nginx": _version(["nginx", "-v"]), "wrk": _version(["wrk", "-v"]),
        "njs_module": Path("/usr/lib/nginx/modules/ngx_http_js_module.so").exists(),
        "git_commit": _version(["git", "-C", str(ROOT), "rev-parse", "HEAD"]),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }


def _f(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def table(result: dict[str, Any]) -> str:
    rows = result["rows"]
    width = max([len(k) for k in rows] + [6])
    lines = [f"== {result['scenario']['name']}: {result['scenario']['about']}",
             (f"   load generator {result['loadgen']}, upstream {result['upstream']}, "
              f"{result['settings']['connections']} connections, "
              f"{result['settings']['rounds']} interleaved rounds (medians); gateway from "
              f"{result.get('gateway_src')} at {str(result.get('gateway_commit'))[:10]}"),
             (f"{'target':<{width}}  {'mode':>6}  {'req/s':>9}  {'CPU µs/req':>10}  "
              f"{'p50 ms':>7}  {'p90 ms':>7}  {'p99 ms':>7}  {'p99.9 ms':>8}  {'requests':>9}")]
    for name, r in rows.items():
        lat = r["latency_ms"]
        lines.append(f"{name:<{width}}  {r['mode'] or '-':>6}  {_f(r['rps'], ',.0f'):>9}  "
                     f"{_f(r['cpu_us_per_req'], '.1f'):>10}  {_f(lat['p50'], '.2f'):>7}  "
                     f"{_f(lat['p90'], '.2f'):>7}  {_f(lat['p99'], '.2f'):>7}  "
                     f"{_f(lat['p99.9'], '.2f'):>8}  {r['requests']:>9,}")
    for name, r in rows.items():
        per = [v for v in r.get("cpu_us_per_req_by_process", []) if v is not None]
        if "--workers" in name and len(per) > 1:
            lines.append(f"  {name}: CPU µs/req by process (workers first, then the master): "
                         + " + ".join(f"{v:.1f}" for v in per))
    sweep = [(ld["label"], r) for ld in result["loads"] if ld["runs"]
             for r in ld["open_medians"]]
    if sweep:
        lines.append(f"open loop (fixed arrival rate; medians of {sweep[0][1]['rounds']} "
                     "interleaved rounds):")
        for label, r in sweep:
            lat = r["latency_us"]
            lines.append(f"  {label:<{width}} {r['offered_rps']:>7,.0f} req/s offered  "
                         f"{r['rps']:>7,.0f} done  CPU {_f(r['cpu_us_per_req'], '.1f'):>6} µs/req"
                         f"  p50 {lat['p50'] / 1000:.2f}  p99 {lat['p99'] / 1000:.2f}  "
                         f"p99.9 {lat['p99.9'] / 1000:.2f} ms")
    for name, value in result["ratios"].items():
        lines.append(f"ratio {name}: {value:.2f}")
    for t in result["targets_check"]:
        verdict = "reported" if t["met"] is None else "MET" if t["met"] else "MISSED"
        limit = "" if t["limit"] is None else f", limit {t['limit']}"
        lines.append(f"target {t['target']}: {t['value']} ({verdict}{limit})")
    for c in result["access_log_check"]:
        lines.append(f"accounting {c['target']}: sent {c['sent']:,}, completed "
                     f"{c['completed']:,}, access-log lines {c['access_log_lines']:,} "
                     f"({'ok' if c['ok'] else 'MISMATCH'})")
    lines += [f"note: {n}" for n in result["notes"]]
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> Path | None:
    """Latency percentiles against offered load, for every target of every scenario
    that has an open-loop sweep. None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    sweeps = [r for r in results if any(ld["open_medians"] and ld["runs"]
                                        for ld in r["loads"])]
    if not sweeps:
        return None
    pcts = ("p50", "p99", "p99.9")
    fig, axes = plt.subplots(len(sweeps), len(pcts), figsize=(15, 4.2 * len(sweeps)),
                             squeeze=False)
    for row, result in zip(axes, sweeps):
        loads = [ld for ld in result["loads"] if ld["open_medians"] and ld["runs"]]
        for ax, pct in zip(row, pcts):
            for n, load in enumerate(loads):
                ax.plot([r["offered_rps"] for r in load["open_medians"]],
                        [r["latency_us"][pct] / 1000 for r in load["open_medians"]],
                        marker="o",
                        color=f"C{n}", label=load["label"])
            ax.set_yscale("log")
            ax.set_xlabel("offered load (requests/s, open loop)")
            ax.set_ylabel(f"{pct} latency (ms)")
            ax.set_title(f"{result['scenario']['name']}: {pct} vs offered load")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_json(results: list[dict[str, Any]], path: Path) -> Path:
    path.write_text(json.dumps({"environment": environment(), "results": results}, indent=1))
    return path
