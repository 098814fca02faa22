"""Re-wrap every record under one KEK version, online, in batches (DESIGN.md §3.3).

Each batch is its own transaction (rows, and their ``key_changes`` entries), so a
run killed at any point leaves every record wrapped under either its old or the
target version — both in the keyring — and a re-run continues where it stopped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from gateway.events.model import kek_event
from gateway.kek import PURPOSE_WEBHOOK_SECRET, Keyring
from gateway.keys.lifecycle import Actor
from gateway.keys.record import AuditEntry, WrappedSecret
from gateway.store.base import Store

__all__ = ["rewrap_all"]

Progress = Callable[[int, int], None]  # (done, total)


async def rewrap_all(store: Store, keyring: Keyring, *, actor: Actor,
                     now: Callable[[], datetime], batch_size: int = 1000,
                     progress: Progress | None = None) -> int:
    """Re-wrap every record whose ``kek_version`` is not ``keyring.current`` (MFA seeds
    and webhook secrets first, then key secrets); the number re-wrapped by this run.
    Writes one ``kek.rotated`` audit item and event when done."""
    target = keyring.current

    def rewrap(key_id: str, wrapped: WrappedSecret) -> WrappedSecret:
        return keyring.wrap_secret(key_id, keyring.unwrap_secret(key_id, wrapped))

    counts = await store.count_by_kek_version()
    total = sum(c for v, c in counts.items() if v != target)
    done = await store.rewrap_mfa(target, lambda principal, wrapped: keyring.wrap_totp_seed(
        principal, keyring.unwrap_totp_seed(principal, wrapped)))
    done += await store.rewrap_webhooks(target, lambda webhook_id, wrapped: keyring.wrap(
        PURPOSE_WEBHOOK_SECRET, webhook_id, keyring.unwrap(PURPOSE_WEBHOOK_SECRET, webhook_id,
                                                           wrapped)))
    if progress:
        progress(done, total)
    while True:
        n = await store.rewrap_batch(target, batch_size, rewrap, now())
        done += n
        if progress:
            progress(done, max(total, done))
        if n == 0:
            left = sum(c for v, c in (await store.count_by_kek_version()).items() if v != target)
            if left == 0:
                break
            await asyncio.sleep(0.05)  # rows held by a concurrent writer: try again shortly
    at = now()
    async with store.transaction() as tx:
        await tx.add_audit([AuditEntry(
            at=at, actor_key_id=actor.key_id, actor_principal=actor.principal,
            action="kek.rotated", target=f"kek:{target}", source=actor.source,
            outcome="success", details={"kek_version": target, "rewrapped": done,
                                        "previous_versions": sorted(counts.keys() - {target})})])
        await tx.add_events([kek_event(target, at, rewrapped=done,
                                       previous_versions=sorted(counts.keys() - {target}))])
    return done
