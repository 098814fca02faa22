"""``python -m bench``: the benchmark harness (issue 8; see bench/README.md).

    python -m bench list
    python -m bench run --scenario hot [--scenario many-keys ...] [--duration 5] [--rounds 3]
    python -m bench run --scenario main          # every scenario of the issue, in turn
    python -m bench micro                        # hot-path pieces in isolation, µs per op
    python -m bench plot RESULTS.json            # the PNG again, from a run's JSON
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .scenarios import MAIN, SCENARIOS


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the scenarios")
    run = sub.add_parser("run", help="run scenarios, print the table, write JSON and a plot")
    run.add_argument("--scenario", action="append", required=True,
                     help="a scenario name (repeatable), or 'main' for all of the issue's")
    run.add_argument("--duration", type=float, default=5.0, help="seconds per closed-loop run")
    run.add_argument("--open-duration", type=float, default=4.0,
                     help="seconds per open-loop point")
    run.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians)")
    run.add_argument("--connections", type=int, default=64)
    run.add_argument("--warmup", type=float, default=1.0)
    run.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    run.add_argument("--upstream", choices=("auto", "nginx", "python"), default="auto")
    run.add_argument("--keys", type=int, help="override the scenario's key count")
    run.add_argument("--cold-rate", type=float, default=200.0,
                     help="arrival rate of the cold-start scenarios (requests/s)")
    run.add_argument("--gateway-src", type=Path, default=None,
                     help="measure the `gateway serve` of another checkout (default: this one)")
    run.add_argument("--out", type=Path, default=Path(__file__).with_name("results"),
                     help="directory for the JSON file and the plot")
    run.add_argument("--no-plot", action="store_true")
    replot = sub.add_parser("plot", help="draw the PNG again from a run's JSON file")
    replot.add_argument("json", type=Path)
    micro = sub.add_parser("micro", help="hot-path pieces in isolation, µs per operation")
    micro.add_argument("--seconds", type=float, default=0.3)
    micro.add_argument("--rounds", type=int, default=5)
    micro.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    if args.command == "list":
        for s in SCENARIOS.values():
            print(f"{s.name:<16} {s.about}")
        print(f"{'main':<16} all of: {', '.join(MAIN)}")
        return 0
    if args.command == "micro":
        from .micro import main as micro_main

        return micro_main(seconds=args.seconds, rounds=args.rounds, as_json=args.json)

    from .report import plot, table, write_json

    if args.command == "plot":
        import json

        png = plot(json.loads(args.json.read_text())["results"], args.json.with_suffix(".png"))
        print(f"plot: {png}")
        return 0 if png else 1
    from .run import Settings, run_scenario

    names = [n for name in args.scenario for n in (MAIN if name == "main" else (name,))]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario {', '.join(unknown)} (see: python -m bench list)")
    settings = Settings(duration=args.duration, open_duration=args.open_duration,
                        rounds=args.rounds, connections=args.connections, warmup=args.warmup,
                        loadgen=args.loadgen, upstream=args.upstream, keys=args.keys,
                        cold_rate=args.cold_rate,
                        **({"gateway_src": args.gateway_src.resolve()} if args.gateway_src else {}))
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    stem = args.out / f"bench-{'+'.join(args.scenario)}-{stamp}"
    results = []
    for name in names:
        result = run_scenario(SCENARIOS[name], settings)
        results.append(result)
        print(table(result), flush=True)
        print(flush=True)
        write_json(results, stem.with_suffix(".json"))  # after each scenario: nothing lost
    print(f"JSON: {stem.with_suffix('.json')}")
    if not args.no_plot:
        png = plot(results, stem.with_suffix(".png"))
        print(f"plot: {png}" if png else "plot: none (no open-loop sweep, or matplotlib "
              "missing: pip install '.[bench]')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
