"""``gateway events list|redeliver`` (DESIGN.md §4.1): the outbox and its delivery state."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.cli.common import Context, UsageError, collect, rfc3339_arg
from gateway.cli.output import print_fields, print_json, print_table
from gateway.events.manage import redeliver
from gateway.events.model import (
    DELIVERY_STATES,
    EVENT_TYPES,
    EventFilter,
    StoredEvent,
    is_event_id,
)
from gateway.keys.record import rfc3339

__all__ = ["add_parsers"]



def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    events = sub.add_parser("events", help="lifecycle events and their webhook deliveries")
    actions = events.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = actions.add_parser("list", parents=[common], help="list events, oldest first")
    p.add_argument("--status", choices=DELIVERY_STATES,
                   help="pending: a delivery is due; failed: one gave up; delivered: all done")
    p.add_argument("--type", choices=EVENT_TYPES, metavar="TYPE", help="e.g. key.expiring")
    p.add_argument("--key-id", help="events about this key")
    p.add_argument("--since", type=rfc3339_arg, metavar="TIME")
    p.add_argument("--limit", type=int, metavar="N", help="at most N events (default: all)")
    p.set_defaults(run=_list, needs_keyring=False)
    p = actions.add_parser("redeliver", parents=[common],
                           help="send an event again, now, to every subscribed webhook")
    p.add_argument("event_id", metavar="EVENT_ID")
    p.set_defaults(run=_redeliver, needs_keyring=False)


def _row(e: StoredEvent) -> tuple[Any, ...]:
    last = max(e.deliveries, key=lambda d: d.attempts, default=None)
    return (e.event.id, rfc3339(e.event.occurred_at.replace(microsecond=0)), e.event.type,
            e.event.target, e.status, sum(d.attempts for d in e.deliveries),
            f"{len([d for d in e.deliveries if d.state == 'delivered'])}/{len(e.deliveries)}",
            None if last is None else last.last_error or last.last_status)


async def _list(ctx: Context) -> int:
    a = ctx.args
    where = EventFilter(type=a.type, target=a.key_id, status=a.status, since=a.since)
    found: list[StoredEvent] = await collect(
        lambda n, after: ctx.store.list_events(where, limit=n, after=after),
        lambda event: event.seq, a.limit)
    if ctx.json:
        print_json({"items": [e.to_api() for e in found], "next_cursor": None})
        return 0
    print_table(("EVENT ID", "AT", "TYPE", "TARGET", "STATUS", "ATTEMPTS", "DELIVERED",
                 "LAST"), [_row(e) for e in found])
    return 0


async def _redeliver(ctx: Context) -> int:
    if not is_event_id(ctx.args.event_id):
        raise UsageError("malformed event ID")
    event = await redeliver(ctx.store, ctx.args.event_id, actor=ctx.actor, now=ctx.now)
    if ctx.json:
        print_json(event.to_api())
        return 0
    print(f"Event {event.event.id} will be sent again to {len(event.deliveries)} webhook(s).")
    print_fields({"type": event.event.type, "target": event.event.target,
                  "status": event.status})
    return 0
