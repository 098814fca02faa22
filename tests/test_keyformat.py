"""Key ID and secret formats: recognisable, checksummed, rejected without any lookup."""

from __future__ import annotations

import math
import zlib

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from gateway.keys.formats import (
    ALPHABET,
    KEY_ID_RANDOM,
    KEY_ID_RE,
    SECRET_RANDOM,
    SECRET_RE,
    SecretStr,
    generate_key_id,
    generate_secret,
    is_well_formed_key_id,
    is_well_formed_secret,
    key_id_from_random,
    secret_from_random,
)


def independent_checksum(body: str) -> str:
    """CRC32 as 6 base62 digits, written differently from the implementation."""
    n = zlib.crc32(body.encode())
    digits = ""
    while n:
        digits = ALPHABET[n % 62] + digits
        n //= 62
    return digits.rjust(6, "0")


def test_known_vector() -> None:
    random_part = "0123456789abcdefghijkl"
    key_id = key_id_from_random(random_part)
    assert key_id == "gwk_" + random_part + independent_checksum("gwk_" + random_part)
    secret = secret_from_random("Z" * 43)
    assert secret == "gws_" + "Z" * 43 + independent_checksum("gws_" + "Z" * 43)
    assert is_well_formed_key_id(key_id) and is_well_formed_secret(secret)


def test_randomness_meets_the_minimum() -> None:
    assert KEY_ID_RANDOM * math.log2(62) >= 128
    assert SECRET_RANDOM * math.log2(62) >= 256


def test_generated_values_are_well_formed_distinct_and_fit_every_wire_format() -> None:
    ids = {generate_key_id() for _ in range(200)}
    secrets = {generate_secret() for _ in range(200)}
    assert len(ids) == 200 and len(secrets) == 200
    for key_id in ids:
        assert is_well_formed_key_id(key_id) and KEY_ID_RE.fullmatch(key_id)
        assert len(key_id) == 32 and not set(key_id) & set('/:"\\ ,;=')
        assert not is_well_formed_secret(key_id)
    for secret in secrets:
        assert is_well_formed_secret(secret) and SECRET_RE.fullmatch(secret)
        assert len(secret) == 53 and ":" not in secret  # curl --user ID:SECRET splits on ':'
        assert not is_well_formed_key_id(secret)


GOOD = key_id_from_random("AbCdEfGhIjKlMnOpQrStUv")


@pytest.mark.parametrize("bad", [
    pytest.param("", id="empty"),
    pytest.param("gws_" + GOOD[4:], id="secret-prefix"),
    pytest.param("GWK_" + GOOD[4:], id="uppercase-prefix"),
    pytest.param("gwk-" + GOOD[4:], id="dash-prefix"),
    pytest.param(GOOD[:-1], id="one-short"),
    pytest.param(GOOD + "0", id="one-long"),
    pytest.param(GOOD[:-1] + ("0" if GOOD[-1] != "0" else "1"), id="bad-checksum"),
    pytest.param(GOOD[:10] + ("x" if GOOD[10] != "x" else "y") + GOOD[11:], id="typo"),
    pytest.param(GOOD[:10] + "é" + GOOD[11:], id="non-ascii"),
    pytest.param(GOOD[:10] + "\uff11" + GOOD[11:], id="fullwidth-digit"),
    pytest.param(GOOD[:10] + "/" + GOOD[11:], id="slash"),
    pytest.param(GOOD + "\n", id="trailing-newline"),
    pytest.param(" " + GOOD, id="leading-space"),
])
def test_malformed_key_ids_are_rejected(bad: str) -> None:
    assert is_well_formed_key_id(GOOD)
    assert not is_well_formed_key_id(bad)


@pytest.mark.parametrize("bad", [None, 42, GOOD.encode(), [GOOD]], ids=repr)
def test_non_strings_are_rejected(bad: object) -> None:
    assert not is_well_formed_key_id(bad)
    assert not is_well_formed_secret(bad)


@given(st.integers(min_value=0, max_value=31), st.sampled_from(ALPHABET))
def test_every_single_character_substitution_is_caught(pos: int, char: str) -> None:
    assume(GOOD[pos] != char)
    assert not is_well_formed_key_id(GOOD[:pos] + char + GOOD[pos + 1:])


@given(st.text(max_size=60))
def test_arbitrary_text_never_raises(text: str) -> None:
    assert is_well_formed_key_id(text) in (True, False)
    assert is_well_formed_secret(text) in (True, False)


def test_scanner_regex_finds_a_secret_in_text() -> None:
    secret = generate_secret()
    log = f"export GATEWAY_SECRET={secret}\nother line"
    found = [m.group() for m in SECRET_RE.finditer(log)]
    assert found == [secret] and is_well_formed_secret(found[0])


def test_secret_str_never_prints_itself() -> None:
    secret = generate_secret()
    s = SecretStr(secret)
    assert secret not in repr(s) and secret not in str(s) and secret not in f"{s}"
    assert s.reveal() == secret and s.hmac_key() == secret.encode("ascii")
    assert s == SecretStr(secret) and s != SecretStr(generate_secret())
