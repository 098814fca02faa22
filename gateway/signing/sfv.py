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


_LCALPHA = frozenset("abcdefghijklmnopqrstuvwxyz")
_DIGIT = frozenset("0123456789")
_KEY_START = _LCALPHA | {"*"}
_KEY_CHARS = _LCALPHA | _DIGIT | frozenset("_-.*")
_TOKEN_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz*")
# tchar (RFC 9110 §5.6.2) plus ":" and "/"
_TOKEN_CHARS = (_TOKEN_START | _DIGIT | frozenset("!#$%&'+-.^_`|~:/"))
_B64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


class _Parser:
    __slots__ = ("s", "i")

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def fail(self, what: str) -> SFVError:
        return SFVError(f"{what} at character {self.i}")

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def skip_sp(self) -> None:
        while self.peek() == " ":
            self.i += 1

    def skip_ows(self) -> None:
        while self.peek() in (" ", "\t"):
            self.i += 1

    def key(self) -> str:
        if self.peek() not in _KEY_START:
            raise self.fail("expected a key")
        start = self.i
        while self.peek() in _KEY_CHARS:
            self.i += 1
        return self.s[start:self.i]

    def params(self) -> Params:
        out: dict[str, object] = {}
        while self.peek() == ";":
            self.i += 1
            self.skip_sp()
            k = self.key()
            v: object = True
            if self.peek() == "=":
                self.i += 1
                v = self.bare_item()
            out.pop(k, None)  # RFC 8941 §4.2.3.2: a repeated key overwrites, keeping the last
            out[k] = v
        return tuple(out.items())

    def bare_item(self) -> object:
        c = self.peek()
        if c == "-" or c in _DIGIT:
            return self.number()
        if c == '"':
            return self.string()
        if c == ":":
            return self.byte_sequence()
        if c == "?":
            return self.boolean()
        if c in _TOKEN_START:
            return self.token()
        raise self.fail("expected an item")

    def number(self) -> int | float:
        start = self.i
        if self.peek() == "-":
            self.i += 1
        digits_start = self.i
        while self.peek() in _DIGIT:
            self.i += 1
        int_len = self.i - digits_start
        if int_len == 0:
            raise self.fail("expected a digit")
        if self.peek() == ".":
            if int_len > 12:
                raise self.fail("decimal with too many integer digits")
            self.i += 1
            frac_start = self.i
            while self.peek() in _DIGIT:
                self.i += 1
            frac_len = self.i - frac_start
            if not 1 <= frac_len <= 3:
                raise self.fail("decimal needs one to three fractional digits")
            return float(self.s[start:self.i])
        if int_len > 15:
            raise self.fail("integer with more than 15 digits")
        return int(self.s[start:self.i])

    def string(self) -> str:
        self.i += 1  # opening quote
        out: list[str] = []
        while True:
            c = self.peek()
            if not c:
                raise self.fail("unterminated string")
            self.i += 1
            if c == "\\":
                nxt = self.peek()
                if nxt not in ('"', "\\"):
                    raise self.fail("bad escape in string")
                self.i += 1
                out.append(nxt)
            elif c == '"':
                return "".join(out)
            elif not (" " <= c <= "~"):
                raise self.fail("non-printable character in string")
            else:
                out.append(c)

    def token(self) -> Token:
        start = self.i
        self.i += 1
        while self.peek() in _TOKEN_CHARS:
            self.i += 1
        return Token(self.s[start:self.i])

    def byte_sequence(self) -> bytes:
        self.i += 1
        end = self.s.find(":", self.i)
        if end < 0:
            raise self.fail("unterminated byte sequence")
        chunk = self.s[self.i:end]
        if not set(chunk) <= _B64_CHARS:
            raise self.fail("bad base64 in byte sequence")
        try:
            value = base64.b64decode(chunk + "=" * (-len(chunk) % 4), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise self.fail("bad base64 in byte sequence") from exc
        self.i = end + 1
        return value

    def boolean(self) -> bool:
        self.i += 1
        c = self.peek()
        if c not in ("0", "1"):
            raise self.fail("bad boolean")
        self.i += 1
        return c == "1"

    def item_or_inner_list(self) -> Item | InnerList:
        if self.peek() != "(":
            value = self.bare_item()
            return Item(value, self.params())
        self.i += 1
        items: list[Item] = []
        while True:
            self.skip_sp()
            if self.peek() == ")":
                self.i += 1
                return InnerList(tuple(items), self.params())
            value = self.bare_item()
            items.append(Item(value, self.params()))
            if self.peek() not in (" ", ")"):
                raise self.fail("expected a space or ')' in inner list")


def parse_dictionary(text: str) -> dict[str, Item | InnerList]:
    """Parse an RFC 8941 Dictionary (§4.2.2). Raises ``SFVError``; never anything else."""
    p = _Parser(text)
    out: dict[str, Item | InnerList] = {}
    p.skip_sp()
    if not p.peek():
        return out
    while True:
        k = p.key()
        if p.peek() == "=":
            p.i += 1
            member = p.item_or_inner_list()
        else:
            member = Item(True, p.params())
        out.pop(k, None)
        out[k] = member
        p.skip_ows()
        if not p.peek():
            return out
        if p.peek() != ",":
            raise p.fail("expected ',' between dictionary members")
        p.i += 1
        p.skip_ows()
        if not p.peek():
            raise p.fail("trailing comma")


def parse_item(text: str) -> Item:
    """Parse an RFC 8941 Item with its parameters (§4.2.3), e.g. ``"@query-param";name="a"``."""
    p = _Parser(text)
    item = Item(p.bare_item(), p.params())
    if p.peek():
        raise p.fail("unexpected characters after the item")
    return item


def _serialize_bare(value: object) -> str:
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
