"""Micro-benchmark: signature verifications per second on a typical request, beside
botocore's ``SigV4Auth.add_auth`` (signing the same request) and the
``http-message-signatures`` verifier, measured in the same run, interleaved.

    python -m bench.signing [--rounds 7] [--seconds 0.3] [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from http_message_signatures import HTTPMessageVerifier, MappingKeyResolver
from http_message_signatures.algorithms import HMAC_SHA256
from http_message_signatures.structures import CaseInsensitiveDict

from gateway.signing import Body, Policy, Request, parse
from gateway.signing.signer import sign_rfc9421

KEY_ID = "gwk_7fXyQ2bLpR9sT4vW1zA3cD5eFg0H1j"
SECRET = "gws_Zq8Rk1LmN3pQ5sT7vX9yB2dF4hJ6kM8nP0rS2uW4xY6zA8cE0gI2"
HOST = "api.internal:8080"
TARGET = "/api/v1/items?limit=10&page=2"
BODY = json.dumps({"name": "widget", "tags": ["a", "b", "c"], "count": 3,
                   "description": "x" * 200}).encode()
HEADERS = [("Content-Type", "application/json"), ("Accept", "application/json"),
           ("User-Agent", "bench/1.0"), ("X-Request-Id", "5f0c6a2e-bench")]


def botocore_request() -> AWSRequest:
    return AWSRequest(method="POST", url=f"http://{HOST}{TARGET}", headers=dict(HEADERS),
                      data=BODY)


def cases() -> dict[str, Callable[[], object]]:
    creds = Credentials(KEY_ID, SECRET)
    signer = SigV4Auth(creds, "gateway", "local")
    signed = botocore_request()
    signer.add_auth(signed)
    sigv4_headers = (("Host", HOST), *signed.headers.items())
    rfc_headers = (("Host", HOST), *HEADERS, *sign_rfc9421(
        "POST", TARGET, HOST, HEADERS, BODY, key_id=KEY_ID, secret=SECRET.encode(),
        now=time.time()))
    policy = Policy()
    secret = SECRET.encode()

    def our_sigv4() -> object:
        now = time.time()
        return parse(Request("POST", TARGET, sigv4_headers), policy, now).verify(
            secret, Body(BODY))

    def our_rfc9421() -> object:
        now = time.time()
        return parse(Request("POST", TARGET, rfc_headers), policy, now).verify(
            secret, Body(BODY))

    def botocore_sign() -> object:
        request = botocore_request()
        signer.add_auth(request)
        return request

    class Message:
        method = "POST"
        url = f"http://{HOST}{TARGET}"
        headers = CaseInsensitiveDict(rfc_headers)

    verifier = HTTPMessageVerifier(signature_algorithm=HMAC_SHA256, key_resolver=(
        MappingKeyResolver(public_keys={KEY_ID: secret}, private_keys={})))

    def hms_verify() -> object:
        return verifier.verify(Message(), body=BODY)

    for check in (our_sigv4, our_rfc9421, hms_verify):  # every case must really verify
        check()
    assert urlsplit(signed.url).path == TARGET.split("?")[0]
    return {
        "gateway sigv4 verify": our_sigv4,
        "gateway rfc9421 verify": our_rfc9421,
        "botocore SigV4Auth.add_auth (sign)": botocore_sign,
        "http-message-signatures verify": hms_verify,
    }


def measure(fn: Callable[[], object], seconds: float) -> tuple[float, float]:
    """Run ``fn`` for about ``seconds``; return (calls per second, CPU µs per call)."""
    n, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - wall0 < seconds:
        for _ in range(50):
            fn()
        n += 50
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return n / wall, cpu / n * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=0.3, help="per case per round")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    fns = cases()
    rates: dict[str, list[float]] = {name: [] for name in fns}
    cpus: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(args.rounds):  # interleaved rounds: machine noise hits every case alike
        for name, fn in fns.items():
            rate, cpu = measure(fn, args.seconds)
            rates[name].append(rate)
            cpus[name].append(cpu)
        if not args.json:
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    result = {name: {"per_second": statistics.median(rates[name]),
                     "cpu_us": statistics.median(cpus[name])} for name in fns}
    botocore = result["botocore SigV4Auth.add_auth (sign)"]["per_second"]
    for row in result.values():
        row["x_botocore_sign"] = row["per_second"] / botocore
    if args.json:
        print(json.dumps({"rounds": args.rounds, "cases": result}, indent=2))
        return 0
    width = max(map(len, result))
    print(f"{'case':<{width}}  {'per second':>11}  {'CPU µs/call':>11}  {'× botocore sign':>15}")
    for name, row in result.items():
        print(f"{name:<{width}}  {row['per_second']:>11,.0f}  {row['cpu_us']:>11.1f}  "
              f"{row['x_botocore_sign']:>15.2f}")
    print(f"(medians of {args.rounds} interleaved rounds; {dt.date.today()}; "
          f"{len(BODY)}-byte body, {len(HEADERS) + 1} headers)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
