"""What every CLI command shares: argument types and the command context."""

from __future__ import annotations

import argparse
import getpass
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from gateway.config import Config, parse_duration
from gateway.kek import Keyring
from gateway.keys.lifecycle import Actor
from gateway.store import Store

T = TypeVar("T")
PAGE = 1000  # rows per store call when a listing pages through everything

__all__ = ["Context", "UsageError", "cli_actor", "collect", "duration", "rfc3339_arg"]


class UsageError(ValueError):
    """Options that do not go together (exit 2, like argparse's own errors)."""


def duration(text: str) -> float:
    """``90s``, ``5m``, ``12h``, ``30d``."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def rfc3339_arg(text: str) -> datetime:
    """An RFC 3339 instant with its offset, e.g. ``2026-06-30T00:00:00Z``."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"expected an RFC 3339 time with offset, like 2026-06-30T00:00:00Z, got {text!r}")
    return at.astimezone(UTC)


def cli_actor() -> Actor:
    """``cli:<user>`` — the operating-system user running the command."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (some containers)
        user = f"uid{os.getuid()}"
    return Actor(principal=f"cli:{user}", key_id=None, source="cli")


@dataclass(slots=True)
class Context:
    """One command's inputs. ``now`` is read once, when the command starts."""

    args: argparse.Namespace
    config: Config
    opened_store: Store | None
    keyring: Keyring | None
    actor: Actor
    now: datetime
    json: bool

    @property
    def store(self) -> Store:
        if self.opened_store is None:  # pragma: no cover - set for every command that reads it
            raise RuntimeError("this command opened no store")
        return self.opened_store


async def collect(fetch: Callable[[int, int | None], Awaitable[Sequence[T]]],
                  position: Callable[[T], int], limit: int | None) -> list[T]:
    """Up to ``limit`` rows (all of them when ``None``) of a listing ordered by a
    sequence number, fetched a page at a time: ``fetch(n, after)``."""
    rows: list[T] = []
    after = None
    while limit is None or len(rows) < limit:
        want = PAGE if limit is None else min(PAGE, limit - len(rows))
        page = await fetch(want, after)
        rows += page
        if len(page) < want:
            break
        after = position(page[-1])
    return rows
