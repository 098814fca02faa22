"""KEK: keyring file rules and the AES-256-GCM envelope, alone and through a real store."""

from __future__ import annotations

import base64
import os
import sqlite3
import struct
from pathlib import Path

import asyncpg
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from .keystore_fixtures import ACTOR, NOW

from gateway.kek import (
    Keyring,
    KeyringError,
    UnwrapError,
    create_keyring_file,
    load_keyring,
    replace_keyring_file,
)
from gateway.keys.formats import SecretStr, generate_secret
from gateway.keys.lifecycle import KeyManager, NewKey
from gateway.keys.record import WrappedSecret

KEY_ID = "gwk_AbCdEfGhIjKlMnOpQrStUv1Vh6eJ"


def test_wrap_matches_an_independent_aes_gcm_computation() -> None:
    kek = bytes(range(32))
    ring = Keyring({7: kek}, 7)
    nonce = bytes(12)
    wrapped = ring.wrap_with_nonce(b"key-secret", KEY_ID, b"plaintext", nonce)
    aad = b"".join(struct.pack(">I", len(p)) + p
                   for p in (b"key-secret", KEY_ID.encode(), b"7"))
    assert wrapped == WrappedSecret(7, nonce, AESGCM(kek).encrypt(nonce, b"plaintext", aad))
    assert ring.unwrap(b"key-secret", KEY_ID, wrapped) == b"plaintext"


def test_each_wrap_uses_a_fresh_nonce(keyring: Keyring) -> None:
    secret = SecretStr(generate_secret())
    a, b = keyring.wrap_secret(KEY_ID, secret), keyring.wrap_secret(KEY_ID, secret)
    assert a.nonce != b.nonce and a.ciphertext != b.ciphertext and len(a.nonce) == 12
    assert keyring.unwrap_secret(KEY_ID, a) == secret == keyring.unwrap_secret(KEY_ID, b)


def _assert_clear(exc: UnwrapError, key_id: str, version: int, *secrets: str) -> None:
    text = str(exc)
    assert exc.key_id == key_id and exc.kek_version == version
    assert key_id in text and f"KEK version {version}" in text
    assert "Traceback" not in text and all(s not in text for s in secrets)
    assert exc.__cause__ is None  # no third-party exception chained into the report


def test_flipped_bit_fails_clearly(keyring: Keyring) -> None:
    secret = generate_secret()
    w = keyring.wrap_secret(KEY_ID, SecretStr(secret))
    flipped = bytearray(w.ciphertext)
    flipped[5] ^= 0x01
    with pytest.raises(UnwrapError, match="authentication failed") as info:
        keyring.unwrap_secret(KEY_ID, WrappedSecret(w.kek_version, w.nonce, bytes(flipped)))
    _assert_clear(info.value, KEY_ID, 1, secret)


def test_wrong_kek_fails_clearly(keyring: Keyring) -> None:
    w = keyring.wrap_secret(KEY_ID, SecretStr(generate_secret()))
    other = Keyring.generate(NOW)  # also version 1, another key
    with pytest.raises(UnwrapError, match="wrong KEK") as info:
        other.unwrap_secret(KEY_ID, w)
    _assert_clear(info.value, KEY_ID, 1)


def test_missing_kek_version_fails_clearly(keyring: Keyring) -> None:
    w = keyring.wrap_secret(KEY_ID, SecretStr(generate_secret()))
    with pytest.raises(UnwrapError, match="not in the keyring") as info:
        keyring.unwrap_secret(KEY_ID, WrappedSecret(3, w.nonce, w.ciphertext))
    _assert_clear(info.value, KEY_ID, 3)


def test_relabelled_version_fails(keyring: Keyring) -> None:
    ring = keyring.with_new_version(NOW).activated(2)
    w = ring.wrap_secret(KEY_ID, SecretStr(generate_secret()))
    with pytest.raises(UnwrapError) as info:
        ring.unwrap_secret(KEY_ID, WrappedSecret(1, w.nonce, w.ciphertext))
    _assert_clear(info.value, KEY_ID, 1)


async def _swap_wrapped(store_url: str, a: str, b: str) -> None:
    """Swap nonce and ciphertext of two records, straight in the database."""
    read = "SELECT nonce, ciphertext FROM keys WHERE key_id = {}"
    write = "UPDATE keys SET nonce = {0}, ciphertext = {1} WHERE key_id = {2}"
    if store_url.startswith("sqlite://"):
        conn = sqlite3.connect(store_url[len("sqlite://"):])
        wa, wb = (conn.execute(read.format("?"), (k,)).fetchone() for k in (a, b))
        conn.execute(write.format("?", "?", "?"), (*wb, a))
        conn.execute(write.format("?", "?", "?"), (*wa, b))
        conn.commit()
        conn.close()
    else:
        pg = await asyncpg.connect(store_url)
        wa, wb = [tuple(await pg.fetchrow(read.format("$1"), k)) for k in (a, b)]
        await pg.execute(write.format("$1", "$2", "$3"), *wb, a)
        await pg.execute(write.format("$1", "$2", "$3"), *wa, b)
        await pg.close()
    assert wa != wb


async def test_ciphertext_swapped_between_records_fails_clearly(
        manager: KeyManager, store_url: str) -> None:
    one = await manager.create(NewKey(principal="p1"), actor=ACTOR, now=NOW)
    two = await manager.create(NewKey(principal="p2"), actor=ACTOR, now=NOW)
    await _swap_wrapped(store_url, one.record.key_id, two.record.key_id)
    for issued in (one, two):
        with pytest.raises(UnwrapError, match="belongs to another record") as info:
            await manager.get_with_secret(issued.record.key_id)
        _assert_clear(info.value, issued.record.key_id, 1,
                      one.secret.reveal(), two.secret.reveal())


def test_keyring_file_is_created_0600_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "keyring.json"
    ring = Keyring.generate(NOW)
    create_keyring_file(path, ring)
    assert path.stat().st_mode & 0o777 == 0o600
    before = path.read_bytes()
    with pytest.raises(KeyringError, match="already exists"):
        create_keyring_file(path, Keyring.generate(NOW))
    assert path.read_bytes() == before
    loaded = load_keyring(path)
    w = ring.wrap_secret(KEY_ID, SecretStr(generate_secret()))
    assert loaded.unwrap_secret(KEY_ID, w) == ring.unwrap_secret(KEY_ID, w)
    assert loaded.versions == (1,) and loaded.current == 1


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_keyring_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "keyring.json"
    create_keyring_file(path, Keyring.generate(NOW))
    os.chmod(path, mode)
    with pytest.raises(KeyringError, match=f"mode {mode:04o}.*chmod 600"):
        load_keyring(path)


def test_keyring_replace_keeps_0600_and_versions(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    create_keyring_file(path, Keyring.generate(NOW))
    ring = load_keyring(path).with_new_version(NOW).activated(2)
    replace_keyring_file(path, ring)
    assert path.stat().st_mode & 0o777 == 0o600
    again = load_keyring(path)
    assert again.versions == (1, 2) and again.current == 2
    assert [p.name for p in tmp_path.iterdir()] == ["keyring.json"]  # no temp file left


@pytest.mark.parametrize("content, message", [
    (b"{not json", "not valid JSON"),
    (b'{"format": "other"}', "format"),
    (b'{"format": "gateway-keyring/1", "current": 1, "versions": []}', "non-empty"),
    (b'{"format": "gateway-keyring/1", "current": 2, "versions": [{"version": 1, "key": "'
     + base64.b64encode(bytes(32)) + b'"}]}', "current version 2 is not listed"),
    ((b'{"format": "gateway-keyring/1", "current": 1, "versions": [{"version": 1, '
     b'"key": "c2hvcnQ="}]}'), "not a 256-bit key"),
    ((b'{"format": "gateway-keyring/1", "current": 1, "versions": [{"version": 1, '
     b'"key": "***"}]}'), "not base64"),
], ids=["json", "format", "empty", "current", "short-key", "base64"])
def test_malformed_keyring_is_a_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "keyring.json"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(KeyringError, match=message) as info:
        load_keyring(path)
    assert str(path) in str(info.value)


def test_missing_keyring_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(KeyringError, match="gateway kek generate"):
        load_keyring(tmp_path / "nope.json")


def test_current_version_cannot_be_removed(keyring: Keyring) -> None:
    with pytest.raises(KeyringError, match="current"):
        keyring.without(1)
    ring = keyring.with_new_version(NOW)
    assert ring.without(2).versions == (1,)
    assert "key" not in repr(ring).lower().replace("keyring", "")
