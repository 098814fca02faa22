"""The ``gateway`` command (DESIGN.md §4): ``keys``, ``kek``, ``store``, ``audit``,
``events``, ``webhooks`` and ``scan``.

Every command takes ``--config FILE`` (default ``$GATEWAY_CONFIG``, else built-in
defaults) and ``--json``. Exit status: 0 done; 1 the action failed (no such key,
policy refused, store or keyring trouble); 2 the command line is wrong (usage, a
malformed key ID, a bad config); 130 interrupted. Errors are one line on stderr,
never a traceback, never a secret.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from gateway.cli import audit as audit_cmd
from gateway.cli import events as events_cmd
from gateway.cli import kek as kek_cmd
from gateway.cli import keys as keys_cmd
from gateway.cli import scan as scan_cmd
from gateway.cli import serve as serve_cmd
from gateway.cli import webhooks as webhooks_cmd
from gateway.cli.common import Context, UsageError, cli_actor
from gateway.config import ConfigError, load_config
from gateway.errors import GatewayError
from gateway.kek import KekError, load_keyring
from gateway.keys.errors import KeyNotFound, MalformedKeyId
from gateway.store import Store, open_store

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE",
                        help="TOML config file (default: $GATEWAY_CONFIG, else built-in defaults)")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    parser = argparse.ArgumentParser(prog="gateway",
                                     description="HMAC request-signing gateway")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    keys_cmd.add_parsers(sub, common)
    kek_cmd.add_parsers(sub, common)
    serve_cmd.add_parsers(sub, common)
    audit_cmd.add_parsers(sub, common)
    events_cmd.add_parsers(sub, common)
    webhooks_cmd.add_parsers(sub, common)
    scan_cmd.add_parsers(sub, common)
    return parser


def _needs(args: argparse.Namespace, what: str) -> bool:
    """A command's ``needs_store`` / ``needs_keyring``: a bool, or a predicate of its
    arguments (``scan`` needs them only with ``--revoke``)."""
    need = getattr(args, what, True)
    return bool(need(args) if callable(need) else need)


async def _run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    keyring = load_keyring(config.kek.keyring) if _needs(args, "needs_keyring") else None
    store: Store | None = None
    shared = None
    if _needs(args, "needs_store"):
        store = await open_store(config.store.url)
        if config.redis is not None:  # changes reach running gateways in milliseconds
            from gateway.proxy.shared import SharedTier

            shared = SharedTier(config.redis)
            store.change_listener = shared.publish_changes
    try:
        ctx = Context(args=args, config=config, opened_store=store, keyring=keyring,
                      actor=cli_actor(), now=datetime.now(UTC), json=args.json)
        return int(await args.run(ctx))
    finally:
        if store is not None:
            await store.close()
        if shared is not None:
            await shared.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def fail(message: str, status: int) -> int:
        sys.stdout.flush()
        print(f"gateway: error: {message}", file=sys.stderr)
        return status

    try:
        status = asyncio.run(_run(args))
        # a command that runs its own event loops (serve) hands them over when this one ends
        then = getattr(args, "then", None)
        return then() if status == 0 and then is not None else status
    except MalformedKeyId:
        return fail("malformed key ID", 2)
    except KeyNotFound as exc:
        return fail(f"no such key: {exc.key_id}", 1)
    except (ConfigError, UsageError) as exc:
        return fail(str(exc), 2)
    except GatewayError as exc:  # policy, limits, store
        return fail(exc.message, 1)
    except KekError as exc:
        return fail(str(exc), 1)
    except KeyboardInterrupt:
        return fail("interrupted (a re-wrap can be resumed by running it again)", 130)
    except Exception as exc:  # noqa: BLE001 - a bug: still one line, never a traceback
        return fail(f"unexpected {type(exc).__name__}: {exc}", 1)
