"""``gateway audit list`` (DESIGN §4.1): the audit trail, straight from the store."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.cli.common import Context, collect, rfc3339_arg
from gateway.cli.output import print_json, print_table
from gateway.keys.record import AuditEntry, rfc3339
from gateway.store import AuditFilter

__all__ = ["add_parsers"]



def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    audit = sub.add_parser("audit", help="the audit trail of key changes and admin calls")
    actions = audit.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = actions.add_parser("list", parents=[common], help="list audit entries, oldest first")
    p.add_argument("--key-id", help="entries about this key, or made with it")
    p.add_argument("--actor", help="entries made by this principal or key ID")
    p.add_argument("--action", dest="audit_action", metavar="ACTION",
                   help="e.g. key.revoked, admin.auth_failed")
    p.add_argument("--since", type=rfc3339_arg, metavar="TIME")
    p.add_argument("--until", type=rfc3339_arg, metavar="TIME")
    p.add_argument("--limit", type=int, metavar="N", help="at most N entries (default: all)")
    p.set_defaults(run=_list, needs_keyring=False)


async def _list(ctx: Context) -> int:
    a = ctx.args
    where = AuditFilter(key_id=a.key_id, actor=a.actor, action=a.audit_action,
                        since=a.since, until=a.until)
    entries: list[AuditEntry] = await collect(
        lambda n, after: ctx.store.find_audit(where, limit=n, after=after),
        lambda entry: entry.id, a.limit)
    if ctx.json:
        print_json({"items": [e.to_api() for e in entries], "next_cursor": None})
        return 0
    print_table(("ID", "AT", "ACTION", "OUTCOME", "TARGET", "ACTOR", "ACTOR KEY", "SOURCE",
                 "DETAILS"),
                [(e.id, rfc3339(e.at.replace(microsecond=0)), e.action, e.outcome, e.target,
                  e.actor_principal, e.actor_key_id, e.source, e.details or None)
                 for e in entries])
    return 0
