"""``gateway kek generate|add|activate|rotate|retire`` and ``gateway store migrate``.

``activate N`` makes N current in the keyring file first, then re-wraps every record
``WHERE kek_version <> N`` in batches: killed midway, running it again finishes the
job. ``rotate`` is add + activate; if an earlier rotation was interrupted (records
not under the current version) it finishes that one instead of adding a version.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from gateway.cli.common import Context
from gateway.cli.output import ProgressBar, print_json
from gateway.kek import Keyring, KeyringError, create_keyring_file, replace_keyring_file
from gateway.keys.rewrap import rewrap_all

__all__ = ["add_parsers"]


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    kek = sub.add_parser("kek", help="the key-encryption keyring")
    ks = kek.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = ks.add_parser("generate", parents=[common],
                      help="write a new keyring at kek.keyring (refuses to overwrite)")
    p.set_defaults(run=_generate, needs_keyring=False, needs_store=False)
    p = ks.add_parser("add", parents=[common], help="append a new version, not yet current")
    p.set_defaults(run=_add, needs_keyring=True, needs_store=False)
    batch = argparse.ArgumentParser(add_help=False)
    batch.add_argument("--batch-size", type=_positive, default=1000, metavar="N",
                       help="records re-wrapped per transaction (default 1000)")
    p = ks.add_parser("activate", parents=[common, batch],
                      help="make version N current and re-wrap every record under it")
    p.add_argument("version", type=_positive, metavar="N")
    p.set_defaults(run=_activate, needs_keyring=True)
    p = ks.add_parser("rotate", parents=[common, batch], help="add a version and activate it")
    p.set_defaults(run=_rotate, needs_keyring=True)
    p = ks.add_parser("retire", parents=[common],
                      help="remove version N (refused while any record uses it)")
    p.add_argument("version", type=_positive, metavar="N")
    p.set_defaults(run=_retire, needs_keyring=True)

    store = sub.add_parser("store", help="the key store")
    ss = store.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = ss.add_parser("migrate", parents=[common], help="create or migrate the schema now")
    p.set_defaults(run=_migrate, needs_keyring=False)


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return n


def _ring(ctx: Context) -> Keyring:
    if ctx.keyring is None:  # pragma: no cover - every kek command but generate loads it
        raise KeyringError("no keyring loaded")
    return ctx.keyring


def _report(ctx: Context, doc: dict[str, Any], text: str) -> int:
    if ctx.json:
        print_json(doc)
    else:
        print(text)
    return 0


async def _generate(ctx: Context) -> int:
    path = ctx.config.kek.keyring
    ring = Keyring.generate(ctx.now)
    create_keyring_file(path, ring)
    return _report(ctx, {"keyring": path, "versions": list(ring.versions), "current": 1},
                   f"Keyring written to {path} (mode 0600) with version 1, current.")


async def _add(ctx: Context) -> int:
    ring = _ring(ctx).with_new_version(ctx.now)
    replace_keyring_file(ctx.config.kek.keyring, ring)
    new = ring.versions[-1]
    return _report(ctx, {"keyring": ctx.config.kek.keyring, "versions": list(ring.versions),
                         "current": ring.current, "added": new},
                   f"Added KEK version {new} (not current; current is {ring.current}). "
                   f"Copy the keyring to every instance, then run `gateway kek activate {new}`.")


async def _rewrap_to(ctx: Context, ring: Keyring) -> int:
    if ring.current != _ring(ctx).current:
        replace_keyring_file(ctx.config.kek.keyring, ring)  # new writes use it from now on
    bar = ProgressBar(f"re-wrapping under KEK version {ring.current}")
    try:
        done = await rewrap_all(ctx.store, ring, actor=ctx.actor, now=lambda: datetime.now(UTC),
                                batch_size=ctx.args.batch_size, progress=bar)
    finally:
        bar.close()
    return _report(ctx, {"current": ring.current, "versions": list(ring.versions),
                         "rewrapped": done},
                   f"KEK version {ring.current} is current; re-wrapped {done:,} record(s).")


async def _activate(ctx: Context) -> int:
    return await _rewrap_to(ctx, _ring(ctx).activated(ctx.args.version))


async def _rotate(ctx: Context) -> int:
    ring = _ring(ctx)
    counts = await ctx.store.count_by_kek_version()
    if any(v != ring.current and n for v, n in counts.items()):
        if not ctx.json:
            print(f"Resuming the unfinished re-wrap under KEK version {ring.current}.")
        return await _rewrap_to(ctx, ring)
    added = ring.with_new_version(ctx.now)
    return await _rewrap_to(ctx, added.activated(added.versions[-1]))


async def _retire(ctx: Context) -> int:
    version = ctx.args.version
    ring = _ring(ctx)
    smaller = ring.without(version)  # refuses the current version and unknown ones
    users = (await ctx.store.count_by_kek_version()).get(version, 0)
    if users:
        raise KeyringError(f"KEK version {version} still wraps {users:,} record(s); run "
                           f"`gateway kek activate {ring.current}` to re-wrap them first")
    replace_keyring_file(ctx.config.kek.keyring, smaller)
    return _report(ctx, {"versions": list(smaller.versions), "current": smaller.current,
                         "retired": version},
                   f"Retired KEK version {version}; versions left: "
                   f"{', '.join(map(str, smaller.versions))}.")


async def _migrate(ctx: Context) -> int:
    applied = list(ctx.store.applied_migrations)
    version = await ctx.store.schema_version()
    return _report(ctx, {"schema_version": version, "applied": applied},
                   f"Schema at version {version}; applied now: "
                   f"{', '.join(map(str, applied)) if applied else 'none (already current)'}.")
