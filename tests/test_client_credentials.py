"""Credentials: from the environment, from a 0600 file (the answer of key creation),
two-key files, and secrets that never show in a repr or an error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.client import Credentials, CredentialsError

from .client_server import new_key

KEY_ID, SECRET = new_key()
OLD_ID, OLD_SECRET = new_key()


def save(path: Path, doc: object, mode: int = 0o600) -> Path:
    path.write_text(json.dumps(doc))
    path.chmod(mode)
    return path


def creation_answer(**extra: object) -> dict[str, object]:
    return {"key_id": KEY_ID, "secret": SECRET, "principal": "ci", "name": "deploy",
            "scopes": ["read"], "status": "active", "expires_at": "2027-01-01T00:00:00Z",
            **extra}


def test_repr_and_str_mask_every_secret() -> None:
    creds = Credentials(KEY_ID, SECRET, previous=Credentials(OLD_ID, OLD_SECRET))
    for shown in (repr(creds), str(creds), f"{creds}", repr([creds])):
        assert SECRET not in shown and OLD_SECRET not in shown
        assert KEY_ID in shown and OLD_ID in shown and "***" in shown


def test_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_KEY_ID", KEY_ID)
    monkeypatch.setenv("GATEWAY_SECRET", SECRET)
    creds = Credentials.from_env()
    assert (creds.key_id, creds.secret, creds.previous) == (KEY_ID, SECRET, None)
    monkeypatch.delenv("GATEWAY_SECRET")
    with pytest.raises(CredentialsError, match="GATEWAY_SECRET not set"):
        Credentials.from_env()


def test_the_answer_of_key_creation_is_a_credentials_file(tmp_path: Path) -> None:
    path = save(tmp_path / "key.json", creation_answer())
    creds = Credentials.from_file(path)
    assert creds == Credentials(KEY_ID, SECRET) and creds.path == path
    assert creds.keys() == (Credentials(KEY_ID, SECRET),)


def test_a_previous_key_means_two_key_mode(tmp_path: Path) -> None:
    path = save(tmp_path / "key.json", creation_answer(
        previous={"key_id": OLD_ID, "secret": OLD_SECRET}))
    creds = Credentials.from_file(str(path))
    assert creds.keys() == (Credentials(KEY_ID, SECRET), Credentials(OLD_ID, OLD_SECRET))


def test_gateway_credentials_file_names_the_file(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = save(tmp_path / "key.json", creation_answer())
    monkeypatch.setenv("GATEWAY_CREDENTIALS_FILE", str(path))
    assert Credentials.from_file().key_id == KEY_ID
    monkeypatch.delenv("GATEWAY_CREDENTIALS_FILE")
    with pytest.raises(CredentialsError, match="GATEWAY_CREDENTIALS_FILE is not set"):
        Credentials.from_file()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o660])
def test_a_file_others_can_read_or_write_is_refused(tmp_path: Path, mode: int) -> None:
    path = save(tmp_path / "key.json", creation_answer(), mode)
    with pytest.raises(CredentialsError) as err:
        Credentials.from_file(path)
    message = str(err.value)
    assert f"chmod 600 {path}" in message and "group or others" in message
    assert SECRET not in message


@pytest.mark.parametrize(("content", "match"), [
    ("not json {", "is not JSON"),
    (json.dumps({"key_id": KEY_ID}), "key_id and secret"),
    (json.dumps([KEY_ID, SECRET]), "key_id and secret"),
    (json.dumps({"key_id": KEY_ID, "secret": SECRET, "previous": {"key_id": OLD_ID}}),
     '"previous" must be'),
    (json.dumps({"key_id": KEY_ID, "secret": SECRET + "é"}), "printable ASCII"),
    (json.dumps({"key_id": "a/b", "secret": SECRET}), "key ID"),
])
def test_malformed_files_say_what_is_wrong_without_the_secret(tmp_path: Path, content: str,
                                                              match: str) -> None:
    path = tmp_path / "key.json"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(CredentialsError, match=match) as err:
        Credentials.from_file(path)
    assert SECRET not in str(err.value)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="cannot read the credentials file"):
        Credentials.from_file(tmp_path / "absent.json")


def test_home_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    save(tmp_path / "key.json", creation_answer())
    assert Credentials.from_file("~/key.json").key_id == KEY_ID


def test_the_previous_key_must_differ() -> None:
    with pytest.raises(CredentialsError, match="same key ID"):
        Credentials(KEY_ID, SECRET, previous=Credentials(KEY_ID, OLD_SECRET))


def test_secret_bytes_are_the_ascii_of_the_printed_secret() -> None:
    assert Credentials(KEY_ID, SECRET).secret_bytes == SECRET.encode("ascii")
