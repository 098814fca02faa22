"""``python -m bench run``: start the upstream, the baselines and the gateway of a
scenario, measure them side by side in interleaved rounds, and report.

Every gateway request is uniquely signed (fresh nonce, fresh signature) and sent at
most once; baselines replay one such request (they check nothing that would care).
"""

from __future__ import annotations

import hashlib
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import targets as T
from .keyset import KeySet, drop_postgres, postgres_keyset, sqlite_keyset
from .measure import have_wrk, run_load
from .pool import make_pool
from .scenarios import Scenario

__all__ = ["Settings", "run_scenario"]

MAX_POOL = 600_000
# scenarios with the Redis tier use this server, under a key prefix of the run's own
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


@dataclass(frozen=True)
class Settings:
    duration: float = 5.0  # seconds per measured closed-loop run
    open_duration: float = 4.0  # seconds per open-loop point
    rounds: int = 3
    connections: int = 64
    warmup: float = 1.0
    loadgen: str = "auto"  # wrk | python | auto
    upstream: str = "auto"  # nginx | python | auto
    cache_dir: Path = Path(tempfile.gettempdir()) / "gateway-bench-cache"
    cold_rate: float = 200.0
    keys: int | None = None  # override the scenario's key count (smoke test)
    gateway_src: Path = T.ROOT  # the checkout whose `gateway serve` is measured


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


@dataclass
class Load:
    """One row of the table: a target, and which requests it is sent."""

    label: str
    target: T.Target
    keys: list[tuple[str, str]] | None = None  # gateway: keys to sign with; None: replay one
    spread: bool = False
    rate: float = 2000.0  # estimate, for sizing pools
    offset: int = 0
    runs: list[dict[str, Any]] = field(default_factory=list)
    open: list[dict[str, Any]] = field(default_factory=list)
    warm: list[dict[str, Any]] = field(default_factory=list)


class Runner:
    def __init__(self, scenario: Scenario, settings: Settings, workdir: Path) -> None:
        self.s, self.st, self.dir = scenario, settings, workdir
        self.loadgen = settings.loadgen if settings.loadgen != "auto" else (
            "wrk" if have_wrk() else "python")
        up = settings.upstream if settings.upstream != "auto" else (
            "nginx" if T.have_nginx() else "python")
        self.upstream_kind = up
        self.targets: list[T.Target] = []
        self.loads: list[Load] = []
        self.notes: list[str] = []
        self.pools = 0

    # pools --------------------------------------------------------------------------
    def pool(self, load: Load, n: int) -> Path:
        self.pools += 1
        path = self.dir / f"pool-{self.pools}.bin"
        keys = load.keys or [self.keyset.keys[0]]
        n = max(1, min(n, MAX_POOL))
        if load.keys is not None and not load.spread:
            keys = keys[:1]
        make_pool(path, scheme=self.s.scheme, keys=keys, n=n, body_size=self.s.body,
                  start=load.offset)
        load.offset += n
        return path

    def sized(self, load: Load, seconds: float, rate: float = 0.0) -> int:
        if rate:
            return int(rate * seconds * 1.2) + 200
        # the fastest any load on this target went: a cold warm-up says little
        fastest = max(ld.rate for ld in self.loads if ld.target is load.target)
        return int(fastest * seconds * 2) + 2000

    def measure(self, load: Load, *, duration: float, rate: float = 0.0,
                n: int | None = None, exhaust: bool = False) -> dict[str, Any]:
        """One run; ``exhaust``: the pool is meant to run out (the many-keys warm-up
        sends each key once and stops)."""
        unique = load.keys is not None
        if unique:
            pool = self.pool(load, n or self.sized(load, duration, rate))
        else:
            pool = self.single
        r = run_load(load.target, pool, body=self.s.body, unique=unique, duration=duration,
                     connections=self.st.connections, rate=rate, loadgen=self.loadgen)
        r["target"] = load.label
        if exhaust and r["accounting"]["pool_exhausted"]:
            acc = r["accounting"]
            acc["ok"] = acc["non_2xx"] == 0 and 0 <= acc["in_flight_at_stop"] <= (
                self.st.connections + 1)
        if rate == 0 and r["rps"] and not exhaust:
            load.rate = max(load.rate if load.runs else 0.0, r["rps"])
        if not r["accounting"]["ok"]:
            self.notes.append(f"{load.label}: accounting not clean in one run: "
                              f"{r['accounting']} errors={r['errors']}")
        return r

    # set-up ---------------------------------------------------------------------------
    def start(self) -> None:
        s, st = self.s, self.st
        n_keys = st.keys or s.keys
        log(f"keys: {n_keys} in {s.store}")
        if s.store == "postgresql":
            self.keyset: KeySet = postgres_keyset(self.dir, n_keys)
        else:
            # another checkout migrates its store its own way: a cache of its own
            digest = hashlib.sha1(str(st.gateway_src).encode()).hexdigest()[:10]
            cache = st.cache_dir if st.gateway_src == T.ROOT else st.cache_dir / f"src-{digest}"
            self.keyset = sqlite_keyset(cache, n_keys)
        self.single = make_pool(self.dir / "single.bin", scheme=s.scheme,
                                keys=self.keyset.keys[:1], n=1, body_size=s.body)
        log(f"upstream: {self.upstream_kind}; load generator: {self.loadgen}")
        direct = self.spawn(T.start_direct(self.dir, self.upstream_kind))
        if "direct" in s.baselines:
            self.loads.append(Load("direct", direct))
        if "bare" in s.baselines:
            self.loads.append(Load("bare", self.spawn(T.start_bare(self.dir, direct.url))))
        for name in ("nginx", "njs"):
            if name not in s.baselines:
                continue
            if name == "njs" and not T.have_njs():
                self.notes.append("njs baseline skipped: nginx's js module is not installed "
                                  "(apt-get install libnginx-mod-http-js)")
                continue
            if not T.have_nginx():
                self.notes.append(f"{name} baseline skipped: nginx is not installed")
                continue
            self.loads.append(Load(name, self.spawn(
                T.start_nginx_proxy(self.dir, direct.port, njs=name == "njs"))))
        for workers in s.workers:
            label = "gateway" if len(s.workers) == 1 else f"gateway --workers {workers}"
            gw = self.spawn(T.start_gateway(
                self.dir, f"gateway-w{workers}", direct.url, store_url=self.keyset.store_url,
                keyring=self.keyset.keyring, replay=s.replay, workers=workers,
                redis_url=REDIS_URL if s.redis else "",
                cache_ttl=s.cache_ttl, body_limit=s.body, src=st.gateway_src))
            if s.hot_too:
                self.loads.append(Load(label + " (hot key)", gw, keys=self.keyset.keys))
            self.loads.append(Load(
                label + (f" ({len(self.keyset.keys):,} keys)" if s.spread else ""), gw,
                keys=self.keyset.keys, spread=s.spread))

    def spawn(self, target: T.Target) -> T.Target:
        self.targets.append(target)
        return target

    def stop(self) -> None:
        for t in reversed(self.targets):
            t.stop()
        if self.s.store == "postgresql" and hasattr(self, "keyset"):
            drop_postgres(self.keyset)
        prefixes = [t.info["redis_prefix"] for t in self.targets if t.info.get("redis_prefix")]
        if prefixes:  # the replay tokens would expire anyway; leave nothing behind
            import redis

            client = redis.Redis.from_url(REDIS_URL)
            for prefix in prefixes:
                keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
                for i in range(0, len(keys), 1000):
                    client.delete(*keys[i:i + 1000])
            client.close()

    # phases ---------------------------------------------------------------------------
    def warm_up(self) -> None:
        for load in self.loads:
            if load.spread and not self.s.cold:
                n = len(load.keys or ())
                log(f"warm-up {load.label}: one request for each of {n:,} keys")
                r = self.measure(load, duration=min(300.0, max(5.0, n / 500)), n=n,
                                 exhaust=True)
            else:
                log(f"warm-up {load.label}: {self.st.warmup:g} s")
                n = int(30_000 * self.st.warmup) + 1000  # enough for 30,000 req/s
                r = self.measure(load, duration=self.st.warmup, n=n if load.keys else None)
            load.warm.append(r)
            log(f"  {r['rps']:,.0f} req/s")

    def rounds(self) -> None:
        for i in range(self.st.rounds):
            for load in self.loads:  # interleaved: machine noise hits every target alike
                r = self.measure(load, duration=self.st.duration)
                load.runs.append(r)
                log(f"round {i + 1}/{self.st.rounds} {load.label:<28} {r['rps']:>9,.0f} req/s "
                    f"{r['cpu_us_per_req'] or 0:>7.1f} CPU µs/req  "
                    f"p99 {r['latency_us']['p99'] / 1000:.2f} ms")

    def sweep(self, bare_max: float) -> None:
        """Open loop at fractions of the bare proxy's maximum, in interleaved rounds like
        the closed loop: one 4-second point is at the mercy of whatever else the machine
        did in those seconds."""
        for i in range(self.st.rounds):
            for fraction in self.s.open_loop:
                rate = round(fraction * bare_max)
                for load in self.loads:
                    r = self.measure(load, duration=self.st.open_duration, rate=rate)
                    r["fraction_of_bare_max"] = fraction
                    load.open.append(r)
                    lat = r["latency_us"]
                    log(f"round {i + 1}/{self.st.rounds} open loop {rate:>6,} req/s "
                        f"{load.label:<22} p50 {lat['p50'] / 1000:.2f} "
                        f"p99 {lat['p99'] / 1000:.2f} p99.9 {lat['p99.9'] / 1000:.2f} ms")

    def cold(self) -> None:
        """Every request a key no cache holds, at a modest fixed rate; the hot key beside."""
        (gw,) = [ld for ld in self.loads if ld.keys is not None]
        hot = Load("gateway (hot key)", gw.target, keys=self.keyset.keys)
        gw.label = "gateway (cold: first request per key)"
        rate, n_keys = self.st.cold_rate, len(self.keyset.keys)
        per = int(rate * self.st.open_duration)
        rounds = max(1, min(self.st.rounds, n_keys // max(1, per)))
        log(f"warm-up gateway (hot key): {self.st.warmup:g} s")
        hot.warm.append(self.measure(hot, duration=self.st.warmup,
                                     n=int(30_000 * self.st.warmup) + 1000))
        gw.offset = 1  # key 0 is the hot key: every cold request uses a fresh one
        for i in range(rounds):
            for load in (gw, hot):
                r = self.measure(load, duration=self.st.open_duration, rate=rate,
                                 n=per if load is gw else None)
                load.open.append(r)
                lat = r["latency_us"]
                log(f"round {i + 1}/{rounds} {load.label:<38} p50 {lat['p50'] / 1000:.2f} "
                    f"p99 {lat['p99'] / 1000:.2f} p99.9 {lat['p99.9'] / 1000:.2f} ms")
        if gw.offset > n_keys:
            self.notes.append("cold start: ran out of fresh keys; some requests hit the cache")
        self.loads.append(hot)

    def access_log_check(self) -> list[dict[str, Any]]:
        """After the gateways stopped (flushing their logs): every completed request is
        in the access log, and nothing was logged that was not sent."""
        out = []
        for t in self.targets:
            if not t.unique:
                continue
            runs = [r for ld in self.loads if ld.target is t
                    for r in ld.warm + ld.runs + ld.open]
            with open(str(t.info["access_log"]), "rb") as f:
                lines = sum(1 for _ in f)
            completed = sum(r["requests"] for r in runs)
            sent = sum(r["sent"] for r in runs)
            out.append({"target": t.name, "sent": sent, "completed": completed,
                        "access_log_lines": lines, "ok": completed <= lines <= sent})
        return out


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(load: Load) -> dict[str, Any]:
    runs = load.runs or load.open
    return {
        "rps": _median([r["rps"] for r in runs]),
        "cpu_us_per_req": _median([r["cpu_us_per_req"] for r in runs]),
        "latency_ms": {p: _median([r["latency_us"][p] / 1000 for r in runs])
                       for p in ("p50", "p90", "p99", "p99.9")},
        "loadgen_cpu_us_per_req": _median([r["loadgen_cpu_us_per_req"] for r in runs]),
        "requests": sum(r["requests"] for r in runs),
        # each process of the front (nginx master + worker, gateway master + workers)
        "cpu_us_per_req_by_process": [
            _median([sorted(r["cpu_by_process_s"].values(), reverse=True)[i] * 1e6
                     / r["requests"] for r in runs if r["requests"]
                     and len(r["cpu_by_process_s"]) > i])
            for i in range(max((len(r["cpu_by_process_s"]) for r in runs), default=0))],
        "mode": runs[0]["mode"] if runs else None,
    }


def run_scenario(scenario: Scenario, settings: Settings) -> dict[str, Any]:
    started = time.time()
    with tempfile.TemporaryDirectory(prefix=f"bench-{scenario.name}-") as tmp:
        runner = Runner(scenario, settings, Path(tmp))
        try:
            runner.start()
            if scenario.cold:
                runner.cold()
            else:
                runner.warm_up()
                runner.rounds()
                bare = next((ld for ld in runner.loads if ld.label == "bare"), None)
                if scenario.open_loop and bare is not None:
                    runner.sweep(summarise(bare)["rps"] or 1000.0)
        finally:
            runner.stop()
        checks = runner.access_log_check()
        gateway = next((t.info for t in runner.targets if t.unique), {})
    rows = {ld.label: summarise(ld) for ld in runner.loads}
    checks_of_targets = targets_check(rows, scenario) + latency_added(runner.loads)
    return {
        "scenario": asdict(scenario), "settings": {k: str(v) if isinstance(v, Path) else v
                                                   for k, v in asdict(settings).items()},
        "loadgen": runner.loadgen, "upstream": runner.upstream_kind,
        "started": started, "seconds": time.time() - started,
        "rows": rows, "ratios": ratios(rows), "targets_check": checks_of_targets,
        "access_log_check": checks, "notes": runner.notes,
        "gateway_config": gateway.get("config"), "gateway_src": gateway.get("src"),
        "gateway_commit": gateway.get("commit"),
        "loads": [{"label": ld.label, "warm": ld.warm, "runs": ld.runs, "open": ld.open,
                   "open_medians": open_medians(ld)} for ld in runner.loads],
    }


def open_medians(load: Load) -> list[dict[str, Any]]:
    """One point per offered load of the sweep: medians over its rounds."""
    points = []
    for fraction in dict.fromkeys(r["fraction_of_bare_max"] for r in load.open
                                  if "fraction_of_bare_max" in r):
        runs = [r for r in load.open if r.get("fraction_of_bare_max") == fraction]
        points.append({
            "fraction_of_bare_max": fraction, "offered_rps": runs[0]["offered_rps"],
            "rounds": len(runs), "rps": _median([r["rps"] for r in runs]),
            "cpu_us_per_req": _median([r["cpu_us_per_req"] for r in runs]),
            "latency_us": {p: _median([r["latency_us"][p] for r in runs])
                           for p in ("p50", "p90", "p99", "p99.9")}})
    return points


def latency_added(loads: list[Load]) -> list[dict[str, Any]]:
    """The gateway's p99 against the bare proxy's at 50 % of the bare proxy's max
    (medians over the rounds): issue 8 allows 1 ms more, issue 12 none. The rounds are
    interleaved, so each round's two points saw the same machine: how many of them the
    gateway was lower in is reported beside (a median of a few rounds hides a tie)."""
    by = {ld.label: ld for ld in loads}
    if "gateway" not in by or "bare" not in by:
        return []
    for g, b in zip(open_medians(by["gateway"]), open_medians(by["bare"])):
        if b["fraction_of_bare_max"] != 0.5:
            continue
        added = (g["latency_us"]["p99"] - b["latency_us"]["p99"]) / 1000
        rounds = [(gr["latency_us"]["p99"], br["latency_us"]["p99"])
                  for gr, br in zip(by["gateway"].open, by["bare"].open)
                  if br.get("fraction_of_bare_max") == 0.5]
        name = "p99 added by the gateway over the bare proxy at 50 % of its max throughput"
        return [
            {"target": f"{name} ≤ 1 ms (open loop, ms)", "value": round(added, 3),
             "limit": 1.0, "met": added <= 1.0},
            {"target": f"{name} ≤ 0: no worse than the bare proxy (open loop, ms)",
             "value": round(added, 3), "limit": 0.0, "met": added <= 0.0},
            {"target": f"reported: of {len(rounds)} rounds at 50 %, those in which the "
             "gateway's p99 was below the bare proxy's", "value": sum(gp < bp for gp, bp in rounds),
             "limit": None, "met": None},
        ]
    return []


def ratios(rows: dict[str, dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    gateways = [k for k in rows if k.startswith("gateway")]
    for g in gateways:
        for base in ("bare", "nginx", "njs"):
            if base in rows and rows[g]["cpu_us_per_req"] and rows[base]["cpu_us_per_req"]:
                out[f"cpu {g} / {base}"] = rows[g]["cpu_us_per_req"] / rows[base]["cpu_us_per_req"]
        if "direct" in rows and rows[g]["rps"] and rows["direct"]["rps"] and \
                rows[g]["mode"] == "closed":
            out[f"rps direct / {g} (load generator headroom)"] = rows["direct"]["rps"] / rows[g]["rps"]
    return out


def targets_check(rows: dict[str, dict[str, Any]], s: Scenario) -> list[dict[str, Any]]:
    """The issue's targets that this scenario measures, with met / missed."""
    out = []

    def add(name: str, value: float | None, limit: float, better: str) -> None:
        if value is None:
            return
        met = value <= limit if better == "<=" else value >= limit
        out.append({"target": name, "value": round(value, 3), "limit": limit,
                    "met": met})

    g = rows.get("gateway")
    if g and "bare" in rows and rows["bare"]["cpu_us_per_req"] and g["cpu_us_per_req"]:
        r = g["cpu_us_per_req"] / rows["bare"]["cpu_us_per_req"]
        add("gateway CPU µs/req ≤ 0.75 × bare aiohttp proxy", r, 0.75, "<=")
        add("stretch: gateway CPU µs/req ≤ 0.40 × bare aiohttp proxy", r, 0.40, "<=")
    if g and "direct" in rows and g["rps"] and rows["direct"]["rps"] and g["mode"] == "closed":
        add("load generator ≥ 2 × gateway throughput (direct / gateway req/s)",
            rows["direct"]["rps"] / g["rps"], 2.0, ">=")
    many = [k for k in rows if k.endswith(" keys)")]
    hot = rows.get("gateway (hot key)")
    if many and hot and hot["rps"] and rows[many[0]]["rps"] and not s.cold:
        add("many keys: throughput within 15 % of hot key (many / hot)",
            rows[many[0]]["rps"] / hot["rps"], 0.85, ">=")
    w1, w2 = rows.get("gateway --workers 1"), rows.get("gateway --workers 2")
    if w1 and w2 and w1["rps"] and w2["rps"]:
        out.append({"target": "reported, not a target (DESIGN §9): throughput --workers 2 / "
                    "--workers 1", "value": round(w2["rps"] / w1["rps"], 3), "limit": 1.7,
                    "met": None})
        if w1["cpu_us_per_req"] and w2["cpu_us_per_req"]:
            out.append({"target": "reported: CPU µs/req summed over workers, --workers 2 / "
                        "--workers 1", "value": round(w2["cpu_us_per_req"] / w1["cpu_us_per_req"], 3),
                        "limit": None, "met": None})
    cold = rows.get("gateway (cold: first request per key)")
    if cold:
        add(f"cold start p99 ≤ 5 ms ({s.store})", cold["latency_ms"]["p99"], 5.0, "<=")
    return out
