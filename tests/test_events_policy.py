"""Retroactive policy (issue 11, point 5), run as an operator runs it, on both backends:
the dry run lists exactly the keys the apply step changes, and each changed key gets a
``key.expiring`` event and an audit record."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.cli import main
from gateway.config import load_config
from gateway.kek import load_keyring
from gateway.keys.lifecycle import Actor, KeyManager, NewKey
from gateway.store import open_store

DAY = 86400.0


@pytest.fixture
def config(tmp_path: Path, store_url: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(f'[store]\nurl = "{store_url}"\n[kek]\nkeyring = "{tmp_path}/keyring.json"\n')
    assert main(["kek", "generate", "--config", str(path)]) == 0
    return path


def gw_json(capsys: pytest.CaptureFixture[str], config: Path, *argv: str) -> Any:
    capsys.readouterr()
    code = main([*argv, "--config", str(config), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return orjson.loads(out)


async def make_keys(config: Path) -> dict[str, str]:
    """Keys of every kind a rule must tell apart; their IDs by role."""
    cfg = load_config(config, env={})
    store = await open_store(cfg.store.url)
    manager = KeyManager(store, load_keyring(cfg.kek.keyring), cfg.policy)
    now = datetime.now(UTC)
    plain, mfa = Actor(principal="cli:test"), Actor(principal="cli:test", mfa=True)

    async def key(role: str, actor: Actor, age_days: float, lifetime_days: float) -> str:
        issued = await manager.create(NewKey(principal=role, name=role,
                                             expiry=lifetime_days * DAY),
                                      actor=actor, now=now - timedelta(days=age_days))
        return issued.record.key_id

    try:
        ids = {
            "no_mfa": await key("no_mfa", plain, 1, 90),  # the MFA rule's
            "no_mfa_soon": await key("no_mfa_soon", plain, 1, 10),  # already expires sooner
            "with_mfa": await key("with_mfa", mfa, 1, 90),
            "revoked": await key("revoked", plain, 1, 90),
            "unused": await key("unused", mfa, 200, 300),  # the unused rule's
        }
        await manager.revoke(ids["revoked"], actor=plain, now=now)
        return ids
    finally:
        await store.close()


@pytest.mark.parametrize("rule, role", [
    (("--issued-without-mfa", "--expire-within", "30d"), "no_mfa"),
    (("--unused-for", "180d", "--expire-within", "14d"), "unused"),
], ids=["issued-without-mfa", "unused-for"])
def test_the_dry_run_lists_exactly_the_keys_the_apply_step_changes(
        capsys: pytest.CaptureFixture[str], config: Path, rule: tuple[str, ...],
        role: str) -> None:
    ids = asyncio.run(make_keys(config))
    dry = gw_json(capsys, config, "keys", "apply-policy", *rule, "--dry-run")
    assert dry["dry_run"] is True
    assert [k["key_id"] for k in dry["items"]] == [ids[role]]
    assert gw_json(capsys, config, "events", "list", "--type", "key.expiring")["items"] == []
    done = gw_json(capsys, config, "keys", "apply-policy", *rule)
    assert [k["key_id"] for k in done["items"]] == [ids[role]]
    (changed,) = done["items"]
    shown = gw_json(capsys, config, "keys", "show", ids[role])
    assert shown["expires_at"] == changed["new_expires_at"] != changed["expires_at"]
    # the owner is told before anything breaks ...
    (event,) = gw_json(capsys, config, "events", "list", "--type", "key.expiring")["items"]
    assert event["target"] == ids[role]
    assert event["payload"]["cause"] == "policy" and event["payload"]["policy"] == done["policy"]
    assert event["payload"]["deadline"] == changed["new_expires_at"]
    assert event["payload"]["key"]["expires_at"] == changed["new_expires_at"]
    # ... and the change is on the record
    (audit,) = [a for a in gw_json(capsys, config, "audit", "list", "--action",
                                   "key.updated")["items"]]
    assert audit["target"] == ids[role] and audit["details"]["policy"] == done["policy"]
    assert audit["details"]["expires_at"] == changed["new_expires_at"]
    # applying it again changes nothing more
    assert gw_json(capsys, config, "keys", "apply-policy", *rule, "--dry-run")["items"] == []


def test_a_rule_must_select_something(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    assert main(["keys", "apply-policy", "--expire-within", "30d", "--config", str(config)]) == 2
    assert "select keys" in capsys.readouterr().err
