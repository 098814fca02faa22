"""``gateway scan PATH... [--json] [--max-size N] [--revoke]`` (DESIGN §4.1 "Scan").

Exit status 1 when a secret is found (so it fails a pre-commit hook or a CI step),
0 when there are none (key IDs alone are public: listed, not a failure), 2 for a
path that does not exist. ``--revoke`` revokes, with reason ``leaked`` and the
file and line in the audit trail, every key whose secret it found — after checking
the secret against the key's own in constant time. Secrets are only ever printed
masked.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gateway.cli.common import Context, UsageError
from gateway.cli.output import print_json
from gateway.config import parse_size
from gateway.keys.leaks import Verdict, revoke_leaked
from gateway.keys.lifecycle import KeyManager
from gateway.keys.scan import DEFAULT_MAX_SIZE, Finding, ScanError, Skipped, scan_paths

__all__ = ["add_parsers"]


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _revoking(args: argparse.Namespace) -> bool:
    return bool(args.revoke)


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("scan", parents=[common],
                       help="find leaked key IDs and secrets in files; exit 1 on a secret")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="a file, a directory (recursively), or - for standard input")
    p.add_argument("--max-size", type=_size, default=DEFAULT_MAX_SIZE, metavar="N",
                   help="skip files larger than this, e.g. 1MiB (default 10MiB)")
    p.add_argument("--revoke", action="store_true",
                   help="revoke the keys whose secrets are found (store and keyring of "
                        "--config)")
    p.set_defaults(run=_scan, needs_store=_revoking, needs_keyring=_revoking)


async def _scan(ctx: Context) -> int:
    a = ctx.args
    findings: list[Finding] = []
    try:
        for item in scan_paths(a.paths, max_size=a.max_size, stdin=sys.stdin.buffer):
            if isinstance(item, Skipped):
                print(f"gateway scan: skipped {item.path}: {item.reason}", file=sys.stderr)
            else:
                findings.append(item)
    except ScanError as exc:
        raise UsageError(str(exc)) from None
    verdicts: dict[int, tuple[Verdict, str | None]] = {}
    if a.revoke:
        manager = KeyManager(ctx.store, ctx.keyring, ctx.config.policy)
        for i, f in enumerate(findings):
            if f.kind == "secret":
                verdict, record = await revoke_leaked(manager, f.token, source=f.location,
                                                      actor=ctx.actor, now=ctx.now)
                verdicts[i] = verdict, record.key_id if record else None
    docs = [_doc(f, verdicts.get(i)) for i, f in enumerate(findings)]
    if ctx.json:
        print_json({"findings": docs})
    else:
        for doc in docs:
            print(_line(doc))
    secrets = sum(1 for f in findings if f.kind == "secret")
    if secrets and not ctx.json:
        advice = "" if a.revoke else "; revoke them (gateway scan --revoke) and remove them"
        print(f"gateway scan: {secrets} secret(s) found{advice}", file=sys.stderr)
    return 1 if secrets else 0


def _doc(f: Finding, verdict: tuple[Verdict, str | None] | None) -> dict[str, Any]:
    doc: dict[str, Any] = {"path": f.path, "line": f.line, "kind": f.kind,
                           "key_id": f.token if f.kind == "key_id" else None,
                           "masked": f.masked}
    if verdict is not None:
        doc["key_id"], doc["verdict"] = verdict[1], verdict[0]
    return doc


def _line(doc: dict[str, Any]) -> str:
    where = f"{doc['path']}:{doc['line']}"
    if doc["kind"] == "key_id":
        return f"{where}: key ID {doc['masked']}"
    verdict = doc.get("verdict")
    if verdict is None:
        return f"{where}: secret {doc['masked']}"
    if verdict == "not_ours":
        return f"{where}: secret {doc['masked']} (no key of this store)"
    return f"{where}: secret {doc['masked']} of {doc['key_id']} ({verdict.replace('_', ' ')})"
