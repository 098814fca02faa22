"""``gateway webhooks add|list|remove``: receivers of lifecycle events (issue 11)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gateway.cli.common import Context, UsageError
from gateway.cli.output import print_fields, print_json, print_table
from gateway.events.manage import add_webhook, remove_webhook
from gateway.events.model import EVENT_TYPES, is_webhook_id

__all__ = ["add_parsers"]


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    hooks = sub.add_parser("webhooks", help="where lifecycle events are delivered")
    actions = hooks.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = actions.add_parser("add", parents=[common],
                           help="add a receiver; prints its signing secret once")
    p.add_argument("url", metavar="URL", help="http:// or https:// URL the events are POSTed to")
    p.add_argument("--event", action="append", default=[], choices=EVENT_TYPES,
                   metavar="TYPE", help="deliver only this event type; repeat for several "
                                        "(default: every type)")
    p.set_defaults(run=_add, needs_keyring=True)
    p = actions.add_parser("list", parents=[common], help="list receivers (never a secret)")
    p.set_defaults(run=_list, needs_keyring=False)
    p = actions.add_parser("remove", parents=[common],
                           help="remove a receiver and its pending deliveries")
    p.add_argument("webhook_id", metavar="WEBHOOK_ID")
    p.set_defaults(run=_remove, needs_keyring=False)


async def _add(ctx: Context) -> int:
    if ctx.keyring is None:  # pragma: no cover - needs_keyring
        raise UsageError("this command needs the keyring")
    webhook, secret = await add_webhook(ctx.store, ctx.keyring, ctx.args.url, ctx.args.event,
                                        actor=ctx.actor, now=ctx.now)
    doc = {**webhook.to_api(), "secret": secret.reveal()}
    if ctx.json:
        print_json(doc)
        return 0
    print("Webhook added. Its signing secret is shown only this once: store it now.")
    print_fields(doc)
    return 0


async def _list(ctx: Context) -> int:
    hooks = await ctx.store.list_webhooks()
    if ctx.json:
        print_json({"items": [w.to_api() for w in hooks]})
        return 0
    print_table(("ID", "URL", "EVENTS", "CREATED", "CREATED BY"),
                [(w.id, w.url, list(w.events) or "all", w.to_api()["created_at"], w.created_by)
                 for w in hooks])
    return 0


async def _remove(ctx: Context) -> int:
    webhook_id = ctx.args.webhook_id
    if not is_webhook_id(webhook_id):
        raise UsageError("malformed webhook ID")
    if not await remove_webhook(ctx.store, webhook_id, actor=ctx.actor, now=ctx.now):
        print(f"gateway: error: no such webhook: {webhook_id}", file=sys.stderr)
        return 1
    if ctx.json:
        print_json({"id": webhook_id, "removed": True})
    else:
        print(f"Webhook {webhook_id} removed.")
    return 0
