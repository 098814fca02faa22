"""The benchmark harness's own code (issue 8): a ~2-second scenario end to end, with
its own load generator and trivial upstream (no wrk or nginx needed). It checks the
report's structure and that every request sent was answered and logged — never a
timing: the figures themselves are the harness's to print, not the suite's to judge."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT


def test_smoke_scenario_reports_every_request(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--scenario", "smoke", "--duration", "0.5",
         "--open-duration", "0.5", "--warmup", "0.3", "--rounds", "1", "--loadgen", "python",
         "--upstream", "python", "--no-plot", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "round 1/1 gateway" in done.stderr  # the progress display
    (path,) = tmp_path.glob("bench-smoke-*.json")
    report = json.loads(path.read_text())
    env = report["environment"]
    assert {"cpu_model", "cpus", "python", "packages", "git_commit"} <= env.keys()
    (result,) = report["results"]
    assert result["scenario"]["name"] == "smoke"
    assert set(result["rows"]) == {"direct", "bare", "gateway"}
    for row in result["rows"].values():
        assert row["requests"] > 0
        assert row["rps"] > 0 and row["cpu_us_per_req"] > 0
        assert set(row["latency_ms"]) == {"p50", "p90", "p99", "p99.9"}
    assert "cpu gateway / bare" in result["ratios"]
    names = {t["target"] for t in result["targets_check"]}
    assert any("0.75 × bare" in n for n in names)
    assert any("load generator" in n for n in names)
    runs = [r for load in result["loads"] for r in load["warm"] + load["runs"] + load["open"]]
    assert {r["mode"] for r in runs} == {"closed", "open"}
    for load in result["loads"]:  # the sweep's point, summarised over its rounds
        (point,) = load["open_medians"]
        assert point["fraction_of_bare_max"] == 0.25 and point["rounds"] == 1
        assert point["latency_us"]["p99"] == load["open"][0]["latency_us"]["p99"]
    for r in runs:  # every request sent was answered, with a 2xx, and none was sent twice
        acc = r["accounting"]
        assert acc["ok"], (r["target"], acc)
        assert acc["sent"] == acc["completed"] == sum(r["statuses"].values())
        assert set(r["statuses"]) == {"200"}
        assert not acc["pool_exhausted"]
    (log_check,) = result["access_log_check"]  # and the gateway logged each one
    assert log_check["ok"] and log_check["access_log_lines"] == log_check["sent"]
    assert "gateway" in done.stdout and "CPU µs/req" in done.stdout  # the table
