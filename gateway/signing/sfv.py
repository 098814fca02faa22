"""The part of RFC 8941 (Structured Field Values) that signatures need: parsing
Dictionaries (of Items or Inner Lists, with Parameters) and serialising what the
RFC 9421 signature base quotes back (component identifiers and signature parameters).

Values map to Python as: Integer → int, Decimal → float, String → str,
Token → Token, Byte Sequence → bytes, Boolean → bool. Parameters are an ordered
tuple of (key, value) pairs, kept in arrival order because the serialisation of
``@signature-params`` must reproduce them (RFC 9421 §2.3).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

__all__ = ["Item", "InnerList", "SFVError", "Token", "parse_dictionary", "parse_item", "serialize_inner_list",
           "serialize_item"]

Params = tuple[tuple[str, object], ...]


class SFVError(ValueError):
    """The field is not a valid Structured Field of the expected type."""


class Token(str):
    """An RFC 8941 Token (as opposed to a String)."""


@dataclass(frozen=True, slots=True)
class Item:
    value: object
    params: Params = ()


@dataclass(frozen=True, slots=True)
class InnerList:
    items: tuple[Item, ...]
    params: Params = ()


_KEY_RE = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_STRING_RE = re.compile(r'"((?:[ !#-\[\]-~]|\\["\\])*)"')
_TOKEN_RE = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~:/0-9A-Za-z]*")
_NUMBER_RE = re.compile(r"-?([0-9]+)(?:\.([0-9]+))?")
_BYTES_RE = re.compile(r":([A-Za-z0-9+/=]*):")
_BOOLEAN_RE = re.compile(r"\?([01])")
_UNESCAPE_RE = re.compile(r"\\(.)")


class _Parser:
    __slots__ = ("s", "i")

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def fail(self, what: str) -> SFVError:
        return SFVError(f"{what} at character {self.i}")

    def skip_sp(self) -> None:
        while self.s[self.i:self.i + 1] == " ":
            self.i += 1

    def skip_ows(self) -> None:
        while self.s[self.i:self.i + 1] in (" ", "\t"):
            self.i += 1

    def key(self) -> str:
        m = _KEY_RE.match(self.s, self.i)
        if not m:
            raise self.fail("expected a key")
        self.i = m.end()
        return m.group()

    def params(self) -> Params:
        out: dict[str, object] = {}
        while self.s[self.i:self.i + 1] == ";":
            self.i += 1
            self.skip_sp()
            k = self.key()
            v: object = True
            if self.s[self.i:self.i + 1] == "=":
                self.i += 1
                v = self.bare_item()
            out.pop(k, None)  # RFC 8941 §4.2.3.2: a repeated key overwrites, keeping the last
            out[k] = v
        return tuple(out.items())

    def bare_item(self) -> object:
        c = self.s[self.i:self.i + 1]
        if c == '"':
            return self.string()
        if c == "-" or "0" <= c <= "9":
            return self.number()
        if c == ":":
            return self.byte_sequence()
        if c == "?":
            m = _BOOLEAN_RE.match(self.s, self.i)
            if not m:
                raise self.fail("bad boolean")
            self.i = m.end()
            return m.group(1) == "1"
        m = _TOKEN_RE.match(self.s, self.i)
        if not m:
            raise self.fail("expected an item")
        self.i = m.end()
        return Token(m.group())

    def number(self) -> int | float:
        m = _NUMBER_RE.match(self.s, self.i)
        if not m:
            raise self.fail("expected a digit")
        integer, fraction = m.groups()
        if fraction is None:
            if len(integer) > 15:
                raise self.fail("integer with more than 15 digits")
        elif len(integer) > 12 or len(fraction) > 3:
            raise self.fail("decimal with too many digits")
        self.i = m.end()
        return int(m.group()) if fraction is None else float(m.group())

    def string(self) -> str:
        m = _STRING_RE.match(self.s, self.i)
        if not m:
            raise self.fail("bad or unterminated string")
        self.i = m.end()
        value = m.group(1)
        return _UNESCAPE_RE.sub(r"\1", value) if "\\" in value else value

    def byte_sequence(self) -> bytes:
        m = _BYTES_RE.match(self.s, self.i)
        if not m:
            raise self.fail("bad or unterminated byte sequence")
        chunk = m.group(1)
        try:
            value = base64.b64decode(chunk + "=" * (-len(chunk) % 4), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise self.fail("bad base64 in byte sequence") from exc
        self.i = m.end()
        return value

    def item_or_inner_list(self) -> Item | InnerList:
        if self.s[self.i:self.i + 1] != "(":
            value = self.bare_item()
            return Item(value, self.params())
        self.i += 1
        items: list[Item] = []
        while True:
            self.skip_sp()
            if self.s[self.i:self.i + 1] == ")":
                self.i += 1
                return InnerList(tuple(items), self.params())
            value = self.bare_item()
            items.append(Item(value, self.params()))
            if self.s[self.i:self.i + 1] not in (" ", ")"):
                raise self.fail("expected a space or ')' in inner list")


def parse_dictionary(text: str) -> dict[str, Item | InnerList]:
    """Parse an RFC 8941 Dictionary (§4.2.2). Raises ``SFVError``; never anything else."""
    p = _Parser(text)
    out: dict[str, Item | InnerList] = {}
    p.skip_sp()
    if not p.s[p.i:p.i + 1]:
        return out
    while True:
        k = p.key()
        if p.s[p.i:p.i + 1] == "=":
            p.i += 1
            member = p.item_or_inner_list()
        else:
            member = Item(True, p.params())
        out.pop(k, None)
        out[k] = member
        p.skip_ows()
        if not p.s[p.i:p.i + 1]:
            return out
        if p.s[p.i:p.i + 1] != ",":
            raise p.fail("expected ',' between dictionary members")
        p.i += 1
        p.skip_ows()
        if not p.s[p.i:p.i + 1]:
            raise p.fail("trailing comma")


def parse_item(text: str) -> Item:
    """Parse an RFC 8941 Item with its parameters (§4.2.3), e.g. ``"@query-param";name="a"``."""
    p = _Parser(text)
    item = Item(p.bare_item(), p.params())
    if p.s[p.i:p.i + 1]:
        raise p.fail("unexpected characters after the item")
    return item


def _serialize_bare(value: object) -> str:
    if type(value) is str:  # the common case first: component names, keyid, nonce
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "?1" if value else "?0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = f"{value:.3f}".rstrip("0")
        return text + "0" if text.endswith(".") else text
    if isinstance(value, Token):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bytes):
        return ":" + base64.b64encode(value).decode("ascii") + ":"
    raise TypeError(f"cannot serialise {type(value).__name__}")  # pragma: no cover


def _serialize_params(params: Params) -> str:
    return "".join(f";{k}" if v is True else f";{k}={_serialize_bare(v)}" for k, v in params)


def serialize_item(item: Item) -> str:
    return _serialize_bare(item.value) + _serialize_params(item.params)


def serialize_inner_list(inner: InnerList) -> str:
    return "(" + " ".join(serialize_item(i) for i in inner.items) + ")" + _serialize_params(
        inner.params)
