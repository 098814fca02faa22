"""``gateway keys create|update|list|show|rotate|renew|revoke|activity|apply-policy``
(DESIGN.md §4, §4.1)."""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.cli.common import Context, UsageError, duration, rfc3339_arg
from gateway.cli.output import print_fields, print_json, print_table
from gateway.keys.errors import KeyNotFound
from gateway.keys.idle import revoke_when_idle
from gateway.keys.lifecycle import (
    NEVER,
    UNCHANGED,
    Expiry,
    Issued,
    KeyManager,
    NewKey,
    Unchanged,
    check_key_id,
    format_duration,
)
from gateway.keys.record import STATUSES, KeyRecord, RateLimit, rfc3339
from gateway.keys.retro import Change, Rule, apply, plan
from gateway.store import KeyFilter

__all__ = ["add_parsers"]


def _expiry_options(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--expires-in", type=duration, metavar="D",
                   help="lifetime from now, e.g. 30d (default: policy.default_lifetime)")
    g.add_argument("--expires-at", type=rfc3339_arg, metavar="TIME", help="RFC 3339 instant")
    g.add_argument("--no-expiry", action="store_true",
                   help="never expires (only if policy.allow_no_expiry)")


def _expiry(args: argparse.Namespace) -> Expiry:
    if args.no_expiry:
        return NEVER
    expiry: datetime | float | None = (
        args.expires_at if args.expires_at is not None else args.expires_in)
    return expiry


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    keys = sub.add_parser("keys", help="create, list and manage access keys")
    ks = keys.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = ks.add_parser("create", parents=[common], help="create a key; prints its secret once")
    p.add_argument("--principal", required=True, help="who the key belongs to")
    p.add_argument("--name", default="", help="a label telling this key from the principal's others")
    p.add_argument("--scope", action="append", default=[], metavar="S",
                   help="a granted scope; repeat for several")
    _expiry_options(p)
    p.add_argument("--rate-limit", type=float, metavar="RPS", help="requests per second")
    p.add_argument("--burst", type=int, metavar="N", help="burst size (default: RPS, rounded up)")
    p.add_argument("--allow-cidr", action="append", metavar="CIDR",
                   help="accept requests only from this network; repeat for several")
    p.set_defaults(run=_create, needs_keyring=True)

    p = ks.add_parser("update", parents=[common],
                      help="change a key's name, scopes, rate limit or source networks")
    p.add_argument("key_id", metavar="KEY_ID")
    p.add_argument("--name", help="a new label")
    p.add_argument("--scope", action="append", metavar="S",
                   help="the key's scopes from now on (replaces them); repeat for several")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--rate-limit", type=float, metavar="RPS", help="requests per second")
    g.add_argument("--no-rate-limit", action="store_true", help="remove the rate limit")
    p.add_argument("--burst", type=int, metavar="N", help="burst size (default: RPS, rounded up)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--allow-cidr", action="append", metavar="CIDR",
                   help="accept requests only from these networks from now on (replaces "
                        "them); repeat for several")
    g.add_argument("--any-source", action="store_true", help="remove the source networks")
    p.set_defaults(run=_update, needs_keyring=False)

    p = ks.add_parser("list", parents=[common], help="list keys")
    p.add_argument("--principal")
    p.add_argument("--status", choices=STATUSES)
    p.add_argument("--expiring-within", type=duration, metavar="D",
                   help="expiry or inactivity deadline within D from now")
    p.add_argument("--unused-for", type=duration, metavar="D", help="not used for at least D")
    p.add_argument("--older-than", type=duration, metavar="D", help="created more than D ago")
    p.add_argument("--created-after", type=rfc3339_arg, metavar="TIME")
    p.add_argument("--created-before", type=rfc3339_arg, metavar="TIME")
    p.add_argument("--issued-without-mfa", action="store_true")
    p.set_defaults(run=_list, needs_keyring=False)

    p = ks.add_parser("show", parents=[common], help="show one key")
    p.add_argument("key_id", metavar="KEY_ID")
    p.set_defaults(run=_show, needs_keyring=False)

    p = ks.add_parser("rotate", parents=[common],
                      help="new key for the same principal, name and scopes; prints its secret")
    p.add_argument("key_id", metavar="KEY_ID")
    p.add_argument("--grace", type=duration, metavar="D",
                   help="how long the old key keeps working (default: policy.rotation_grace)")
    p.add_argument("--expires-in", type=duration, metavar="D", dest="expires_in",
                   help="the new key's lifetime (default: policy.default_lifetime)")
    p.add_argument("--wait-idle", type=duration, metavar="D",
                   help="with --revoke-old: wait until the old key is unused for D "
                        "(plus usage.flush), then revoke it")
    p.add_argument("--revoke-old", action="store_true",
                   help="with --wait-idle: revoke the old key once it is idle")
    p.set_defaults(run=_rotate, needs_keyring=True)

    p = ks.add_parser("activity", parents=[common],
                      help="requests per route and status, and per source address")
    p.add_argument("key_id", metavar="KEY_ID")
    p.add_argument("--since", type=duration, default=3600.0, metavar="D",
                   help="how far back (default 1h)")
    p.set_defaults(run=_activity, needs_keyring=False)

    p = ks.add_parser("renew", parents=[common], help="set a new expiry within policy")
    p.add_argument("key_id", metavar="KEY_ID")
    _expiry_options(p)
    p.set_defaults(run=_renew, needs_keyring=False)

    p = ks.add_parser("revoke", parents=[common], help="revoke a key now")
    p.add_argument("key_id", metavar="KEY_ID")
    p.add_argument("--reason", default="unspecified", help="e.g. leaked, rotated, offboarded")
    p.add_argument("--wait-idle", type=duration, metavar="D",
                   help="first wait until the key is unused for D (plus usage.flush): "
                        "the end of a rotation made through the admin API")
    p.set_defaults(run=_revoke, needs_keyring=False)

    p = ks.add_parser("apply-policy", parents=[common],
                      help="bring existing keys' expiry forward under a new rule; owners "
                           "get a key.expiring event")
    p.add_argument("--expire-within", type=duration, metavar="D", required=True,
                   help="selected keys expire at most D from now")
    p.add_argument("--issued-without-mfa", action="store_true",
                   help="select keys issued without a one-time code")
    p.add_argument("--unused-for", type=duration, metavar="D", help="select keys unused for D")
    p.add_argument("--principal", help="select this principal's keys")
    p.add_argument("--dry-run", action="store_true",
                   help="list the keys the rule would change, change nothing")
    p.set_defaults(run=_apply_policy, needs_keyring=False)


def _manager(ctx: Context) -> KeyManager:
    return KeyManager(ctx.store, ctx.keyring, ctx.config.policy)


def _show_record(ctx: Context, record: KeyRecord, headline: str,
                 now: datetime | None = None) -> None:
    doc = record.to_api(now or ctx.now, ctx.config.policy.inactivity)
    if ctx.json:
        print_json(doc)
        return
    print(headline)
    print_fields(doc)


def _show_issued(ctx: Context, issued: Issued, headline: str) -> None:
    if ctx.json:
        print_json(issued.to_api(ctx.now, ctx.config.policy.inactivity))
        return
    print(f"{headline} The secret is shown only this once: store it now.")
    print_fields(issued.to_api(ctx.now, ctx.config.policy.inactivity))


def _rate(a: argparse.Namespace) -> RateLimit | None:
    if a.rate_limit is None:
        if a.burst is not None:
            raise UsageError("--burst goes with --rate-limit")
        return None
    burst = a.burst if a.burst is not None else max(1, math.ceil(a.rate_limit))
    rps = int(a.rate_limit) if a.rate_limit.is_integer() else a.rate_limit
    return RateLimit(rps=rps, burst=burst)


async def _create(ctx: Context) -> int:
    a = ctx.args
    spec = NewKey(principal=a.principal, name=a.name, scopes=tuple(a.scope),
                  expiry=_expiry(a), rate_limit=_rate(a),
                  source_cidrs=tuple(a.allow_cidr) if a.allow_cidr else None)
    issued = await _manager(ctx).create(spec, actor=ctx.actor, now=ctx.now)
    _show_issued(ctx, issued, "Key created.")
    return 0


async def _update(ctx: Context) -> int:
    a = ctx.args
    rate: RateLimit | None | Unchanged = UNCHANGED
    if a.no_rate_limit:
        if a.burst is not None:
            raise UsageError("--burst goes with --rate-limit")
        rate = None
    elif a.rate_limit is not None or a.burst is not None:
        rate = _rate(a)  # --burst alone is refused there
    cidrs: tuple[str, ...] | None | Unchanged = (
        None if a.any_source else tuple(a.allow_cidr) if a.allow_cidr else UNCHANGED)
    record = await _manager(ctx).update(
        a.key_id, actor=ctx.actor, now=ctx.now,
        name=UNCHANGED if a.name is None else a.name,
        scopes=UNCHANGED if a.scope is None else a.scope, rate_limit=rate, source_cidrs=cidrs)
    _show_record(ctx, record, f"Key {record.key_id} updated.")
    return 0


async def _list(ctx: Context) -> int:
    a, now = ctx.args, ctx.now
    inactivity = ctx.config.policy.inactivity
    created_before = a.created_before
    if a.older_than is not None:
        cutoff = now - timedelta(seconds=a.older_than)
        created_before = min(cutoff, created_before) if created_before else cutoff
    where = KeyFilter(
        principal=a.principal, status=a.status, created_after=a.created_after,
        created_before=created_before,
        deadline_before=None if a.expiring_within is None
        else now + timedelta(seconds=a.expiring_within),
        unused_since=None if a.unused_for is None else now - timedelta(seconds=a.unused_for),
        issued_with_mfa=False if a.issued_without_mfa else None,
    )
    records: list[KeyRecord] = []
    cursor = None
    while True:  # people and scripts get the whole listing; the admin API pages
        page = await ctx.store.list_keys(where, now=now, inactivity=inactivity, limit=1000,
                                         cursor=cursor)
        records += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    if ctx.json:
        print_json({"items": [r.to_api(now, inactivity) for r in records], "next_cursor": None})
        return 0
    print_table(
        ("KEY ID", "PRINCIPAL", "NAME", "STATUS", "SCOPES", "CREATED", "EXPIRES", "LAST USED"),
        [(r.key_id, r.principal, r.name or None, r.status(now, inactivity), list(r.scopes),
          _short(r.created_at), _short(r.expires_at), _short(r.last_used_at)) for r in records])
    return 0


def _short(t: datetime | None) -> str | None:
    return rfc3339(t.replace(microsecond=0) if t else None)


async def _show(ctx: Context) -> int:
    check_key_id(ctx.args.key_id)
    record = await ctx.store.get_key(ctx.args.key_id)
    if record is None:
        raise KeyNotFound(ctx.args.key_id)
    _show_record(ctx, record, f"Key {record.key_id}:")
    return 0


async def _activity(ctx: Context) -> int:
    check_key_id(ctx.args.key_id)
    if await ctx.store.get_key(ctx.args.key_id) is None:
        raise KeyNotFound(ctx.args.key_id)
    got = await ctx.store.activity(ctx.args.key_id, ctx.now - timedelta(seconds=ctx.args.since))
    if ctx.json:
        print_json({"routes": [{"route": r, "status": s, "count": n} for r, s, n in got.routes],
                    "sources": [{"address": a, "count": n} for a, n in got.sources]})
        return 0
    print_table(("ROUTE", "STATUS", "COUNT"), got.routes)
    print()
    print_table(("SOURCE", "COUNT"), got.sources)
    return 0


async def _rotate(ctx: Context) -> int:
    a = ctx.args
    if (a.wait_idle is None) == a.revoke_old:
        raise UsageError("--wait-idle and --revoke-old go together")
    manager = _manager(ctx)
    issued = await manager.rotate(a.key_id, actor=ctx.actor, now=ctx.now, grace=a.grace,
                                  expiry=a.expires_in)
    old = await ctx.store.get_key(a.key_id)
    until = rfc3339(old.revoked_at) if old else None
    _show_issued(ctx, issued, f"Key {a.key_id} rotated; it keeps working until {until}.")
    if a.wait_idle is not None:
        sys.stdout.flush()  # the new secret is out before we wait
        flush = ctx.config.usage.flush
        print(f"Waiting until {a.key_id} is unused for {format_duration(a.wait_idle)} "
              f"(+ {format_duration(flush)} usage flush)...", file=sys.stderr, flush=True)
        record = await revoke_when_idle(manager, a.key_id, idle=a.wait_idle, flush=flush,
                                        actor=ctx.actor, clock=lambda: datetime.now(UTC),
                                        sleep=asyncio.sleep, since=ctx.now)
        print(f"Old key {a.key_id} revoked ({record.revoke_reason}).", file=sys.stderr)
    return 0


async def _renew(ctx: Context) -> int:
    record = await _manager(ctx).renew(ctx.args.key_id, actor=ctx.actor, now=ctx.now,
                                       expiry=_expiry(ctx.args))
    _show_record(ctx, record, f"Key {record.key_id} renewed; it expires at "
                              f"{rfc3339(record.expires_at) or 'never'}.")
    return 0


async def _revoke(ctx: Context) -> int:
    a = ctx.args
    now = ctx.now
    if a.wait_idle is None:
        record = await _manager(ctx).revoke(a.key_id, actor=ctx.actor, now=now, reason=a.reason)
    else:
        check_key_id(a.key_id)
        print(f"Waiting until {a.key_id} is unused for {format_duration(a.wait_idle)} "
              f"(+ {format_duration(ctx.config.usage.flush)} usage flush)...", file=sys.stderr,
              flush=True)
        record = await revoke_when_idle(_manager(ctx), a.key_id, idle=a.wait_idle,
                                        flush=ctx.config.usage.flush, actor=ctx.actor,
                                        clock=lambda: datetime.now(UTC), sleep=asyncio.sleep,
                                        since=ctx.now, reason=a.reason)
        now = datetime.now(UTC)
    _show_record(ctx, record, f"Key {record.key_id} revoked.", now)
    return 0


async def _apply_policy(ctx: Context) -> int:
    a = ctx.args
    if not (a.issued_without_mfa or a.unused_for is not None or a.principal):
        raise UsageError("select keys with --issued-without-mfa, --unused-for or --principal")
    rule = Rule(expire_within=a.expire_within, issued_without_mfa=a.issued_without_mfa,
                unused_for=a.unused_for, principal=a.principal)
    inactivity = ctx.config.policy.inactivity
    changes: list[Change] = (
        await plan(ctx.store, rule, now=ctx.now, inactivity=inactivity) if a.dry_run
        else await apply(_manager(ctx), rule, actor=ctx.actor, now=ctx.now))
    items = [{"key_id": c.record.key_id, "principal": c.record.principal,
              "name": c.record.name, "issued_with_mfa": c.record.issued_with_mfa,
              "last_used_at": rfc3339(c.record.last_used_at),
              "expires_at": rfc3339(c.record.expires_at),
              "new_expires_at": rfc3339(c.expires_at)} for c in changes]
    if ctx.json:
        print_json({"policy": rule.describe(), "dry_run": a.dry_run, "items": items})
        return 0
    print(f"{'Would change' if a.dry_run else 'Changed'} {len(items)} key(s) "
          f"({rule.describe()}).")
    print_table(("KEY ID", "PRINCIPAL", "NAME", "MFA", "LAST USED", "EXPIRES", "NEW EXPIRY"),
                [(c.record.key_id, c.record.principal, c.record.name or None,
                  c.record.issued_with_mfa, _short(c.record.last_used_at),
                  _short(c.record.expires_at), _short(c.expires_at)) for c in changes])
    return 0
