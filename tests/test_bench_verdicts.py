"""The harness's verdict on p99 at half load (issues 8 and 12): judged on the medians
over the rounds, with the rounds the gateway was lower in beside it — a reader of the
report must not see MET where the gateway's tail is above the bare proxy's."""

from __future__ import annotations

from typing import Any

from bench.report import table
from bench.run import Load, latency_added


def _point(fraction: float, p99_ms: float) -> dict[str, Any]:
    return {"fraction_of_bare_max": fraction, "offered_rps": 1000.0 * fraction, "rps": 1.0,
            "cpu_us_per_req": 1.0,
            "latency_us": {"p50": 500.0, "p90": 800.0, "p99": p99_ms * 1000, "p99.9": 9e3}}


def _loads(gateway: list[float], bare: list[float]) -> list[Load]:
    """Interleaved rounds of a sweep over 25 % and 50 %: only the 50 % points count."""
    def sweep(p99s: list[float]) -> list[dict[str, Any]]:
        return [p for p99 in p99s for p in (_point(0.25, 0.1), _point(0.5, p99))]
    return [Load("bare", None, open=sweep(bare)),  # type: ignore[arg-type]
            Load("gateway", None, open=sweep(gateway))]  # type: ignore[arg-type]


def _verdict(loads: list[Load], words: str) -> dict[str, Any]:
    (verdict,) = [t for t in latency_added(loads) if words in t["target"]]
    return verdict


def test_a_gateway_tail_above_the_bare_proxys_is_missed_however_few_rounds_it_lost() -> None:
    # medians 5.2 against 5.0 ms: within issue 8's 1 ms, above issue 12's none
    loads = _loads(gateway=[4.5, 5.5, 5.2], bare=[4.0, 6.0, 5.0])
    assert _verdict(loads, "≤ 1 ms") | {"target": ""} == {
        "target": "", "value": 0.2, "limit": 1.0, "met": True}
    assert _verdict(loads, "no worse")["met"] is False
    rounds = _verdict(loads, "rounds")
    assert rounds["value"] == 1 and "of 3 rounds" in rounds["target"]


def test_a_gateway_tail_below_the_bare_proxys_is_met_and_printed_as_such() -> None:
    # medians (3.0 + 3.5) / 2 against (4.0 + 5.0) / 2: 1.25 ms below; lower in 3 of 4
    loads = _loads(gateway=[3.0, 3.5, 2.5, 4.0], bare=[4.0, 3.0, 5.0, 6.0])
    result = {"scenario": {"name": "t", "about": "t"}, "loadgen": "python",
              "upstream": "python", "settings": {"connections": 1, "rounds": 4},
              "rows": {}, "loads": [], "ratios": {}, "targets_check": latency_added(loads),
              "access_log_check": [], "notes": []}
    lines = table(result).splitlines()
    assert "target p99 added by the gateway over the bare proxy at 50 % of its max " \
        "throughput ≤ 0: no worse than the bare proxy (open loop, ms): -1.25 " \
        "(MET, limit 0.0)" in lines
    assert "target reported: of 4 rounds at 50 %, those in which the gateway's p99 was " \
        "below the bare proxy's: 3 (reported)" in lines
