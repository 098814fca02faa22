"""Can an attacker tell an unknown key ID from a known key with a wrong signature by
the time the gateway takes to refuse? Both are answered 401 signature_invalid; this
measures their response-time distributions, interleaved, and compares them with the
two-sample Kolmogorov–Smirnov statistic.

    python3 bench/timing.py [--requests 3000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from yarl import URL

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.keys.formats import generate_key_id  # noqa: E402
from gateway.signing.signer import sign_sigv4  # noqa: E402
from tests.gateway_fixtures import start_gateway, start_upstream, stop  # noqa: E402


def ks(a: list[float], b: list[float]) -> tuple[float, float]:
    """Two-sample Kolmogorov–Smirnov: the statistic D and its asymptotic p-value."""
    a, b = sorted(a), sorted(b)
    i = j = 0
    d = 0.0
    while i < len(a) and j < len(b):
        if a[i] <= b[j]:
            i += 1
        else:
            j += 1
        d = max(d, abs(i / len(a) - j / len(b)))
    n = len(a) * len(b) / (len(a) + len(b))
    lam = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * d
    p = 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
    return d, min(1.0, max(0.0, p))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(args: argparse.Namespace) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="gw-timing-"))
    up = start_upstream(tmp)
    gw = start_gateway(tmp, up)
    try:
        known = await gw.create_key()
        unknown_id = generate_key_id()  # well formed, checksum valid, not in the store
        samples: dict[str, list[float]] = {"unknown key ID": [], "known key, wrong signature": []}
        async with aiohttp.ClientSession() as session:
            async def once(key_id: str, secret: bytes, n: int) -> float:
                target = f"/api/timing/{n}"
                headers = [("Host", gw.host), *sign_sigv4(
                    "GET", target, gw.host, [], b"", key_id=key_id, secret=secret,
                    now=time.time())]
                started = time.perf_counter()
                async with session.get(URL(gw.url + target, encoded=True),
                                       headers=headers) as r:
                    await r.read()
                    assert r.status == 401 and "signature_invalid" in await r.text()
                return time.perf_counter() - started

            for n in range(50):  # warm-up: both cached (the unknown ID negatively)
                await once(unknown_id, b"gws_wrong", n)
                await once(known.record.key_id, b"gws_wrong", n)
            cases = {"unknown key ID": unknown_id,
                     "known key, wrong signature": known.record.key_id}
            for n in range(args.requests):  # interleaved in random order: drift hits both
                for name in random.sample(list(cases), 2):
                    samples[name].append(await once(cases[name], b"gws_wrong", n))
                if not args.json and (n + 1) % 1000 == 0:
                    print(f"  {n + 1}/{args.requests}", file=sys.stderr)
    finally:
        stop(gw.proc)
        stop(up.proc)
    d, p = ks(*samples.values())
    return {"requests_each": args.requests, "ks_statistic": d, "ks_p_value": p,
            "cases": {name: {"p50_us": percentile(v, 0.5) * 1e6, "p90_us": percentile(v, 0.9) * 1e6,
                             "p99_us": percentile(v, 0.99) * 1e6} for name, v in samples.items()}}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--json", action="store_true")
    result = asyncio.run(main(ap.parse_args()))
    if "--json" in sys.argv:
        print(json.dumps(result, indent=2))
    else:
        print(f"{'case':<28} {'p50 µs':>8} {'p90 µs':>8} {'p99 µs':>8}")
        for name, row in result["cases"].items():  # type: ignore[union-attr]
            print(f"{name:<28} {row['p50_us']:>8.0f} {row['p90_us']:>8.0f} {row['p99_us']:>8.0f}")
        print(f"Kolmogorov–Smirnov D = {result['ks_statistic']:.4f}, "
              f"p = {result['ks_p_value']:.3f} ({result['requests_each']} requests each)")
