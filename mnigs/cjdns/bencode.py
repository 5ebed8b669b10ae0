# -*- test-case-name: tests.unit.test_cjdns.test_bencode -*-
"""
Bencode, as cjdns's admin API speaks it: byte strings, integers, lists and
dictionaries whose keys are byte strings in ascending order.

The decoder takes datagrams from a socket, so it is strict and bounded:
canonical integers only (no C{i-0e}, no leading zeros), string lengths
without leading zeros, dictionary keys strictly ascending (cjdns's own
decoder, contrib/python3/cjdnsadmin/bencode.py C{decode_dict}, refuses
unsorted and repeated keys), integers within int64 (cjdns keeps them in
C{int64_t}), a maximum nesting depth and a maximum input size, and nothing
after the value.  Every refusal is a L{BencodeError} naming the offset.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

#: Replies are at most 65536 bytes (Admin_MAX_RESPONSE_SIZE, admin/Admin.h).
DEFAULT_MAX_SIZE = 65536
DEFAULT_MAX_DEPTH = 32

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

_DIGITS = frozenset(b"0123456789")
# The well-formed cases in one match each (a walk decodes thousands of
# answers a second); anything else goes the long way, which says what is
# wrong.
_STRING_LENGTH = re.compile(rb"(0|[1-9][0-9]{0,18}):")
_INTEGER = re.compile(rb"i(0|-?[1-9][0-9]{0,18})e")


class BencodeError(ValueError):
    """
    Input that is not canonical, bounded bencode (or a value that cannot
    be encoded).
    """


def encode(value, maxDepth: int = DEFAULT_MAX_DEPTH) -> bytes:
    """
    Bencode C{value}: C{bytes} and C{str} (as UTF-8) become strings,
    C{int} integers (not C{bool}), C{list}/C{tuple} lists and mappings
    dictionaries with C{str} or C{bytes} keys, sorted by their bytes as
    cjdns requires.
    """
    out: list[bytes] = []
    _encode(value, out, maxDepth)
    return b"".join(out)


def _asBytes(value) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise BencodeError(f"cannot bencode {type(value).__name__} as a string")


def _encode(value, out: list[bytes], depth: int) -> None:
    if depth < 0:
        raise BencodeError("value nested too deeply")
    kind = type(value)  # the exact types first: the admin client encodes thousands a second
    if kind is bytes:
        out += (b"%d:" % len(value), value)
    elif kind is str:
        raw = value.encode("utf-8")
        out += (b"%d:" % len(raw), raw)
    elif kind is int:
        if not INT64_MIN <= value <= INT64_MAX:
            raise BencodeError(f"integer {value} does not fit in 64 bits")
        out.append(b"i%de" % value)
    elif kind is dict or isinstance(value, Mapping):
        items = sorted((_asBytes(k), v) for k, v in value.items())
        for (a, _), (b, _) in zip(items, items[1:]):
            if a == b:
                raise BencodeError(f"key {a!r} appears twice")
        out.append(b"d")
        for key, item in items:
            out += (b"%d:" % len(key), key)
            _encode(item, out, depth - 1)
        out.append(b"e")
    elif isinstance(value, bytes):
        _encode(bytes(value), out, depth)
    elif isinstance(value, str):
        _encode(value.encode("utf-8"), out, depth)
    elif isinstance(value, bool):
        raise BencodeError("cannot bencode a bool; use 0 or 1")
    elif isinstance(value, int):
        _encode(int(value), out, depth)
    elif isinstance(value, (list, tuple)):
        out.append(b"l")
        for item in value:
            _encode(item, out, depth - 1)
        out.append(b"e")
    else:
        raise BencodeError(f"cannot bencode {type(value).__name__}")


def decode(data: bytes, maxDepth: int = DEFAULT_MAX_DEPTH, maxSize: int = DEFAULT_MAX_SIZE):
    """
    Decode one bencoded value that makes up all of C{data}.  Strings come
    back as C{bytes}, dictionaries with C{bytes} keys.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BencodeError("bencode input must be bytes")
    data = bytes(data)
    if len(data) > maxSize:
        raise BencodeError(f"input is {len(data)} bytes, more than {maxSize}")
    if not data:
        raise BencodeError("empty input")
    value, end = _Decoder(data, maxDepth).value(0, 0)
    if end != len(data):
        raise BencodeError(f"garbage after the value at offset {end}")
    return value


class _Decoder:
    def __init__(self, data: bytes, maxDepth: int) -> None:
        self.data = data
        self.maxDepth = maxDepth

    def fail(self, offset: int, why: str):
        raise BencodeError(f"{why} at offset {offset}")

    def value(self, at: int, depth: int):
        if at >= len(self.data):
            self.fail(at, "unexpected end of input")
        lead = self.data[at]
        if lead == ord("i"):
            return self.integer(at)
        if lead in _DIGITS:
            return self.string(at)
        if lead in (ord("l"), ord("d")):
            if depth >= self.maxDepth:
                self.fail(at, f"nesting deeper than {self.maxDepth}")
            return (self.list if lead == ord("l") else self.dict)(at, depth + 1)
        self.fail(at, f"unexpected byte {bytes([lead])!r}")

    def number(self, start: int, end: int, signed: bool) -> int:
        text = self.data[start:end]
        digits = text[1:] if signed and text[:1] == b"-" else text
        if not digits.isdigit():  # bytes: ASCII digits only, and not empty
            self.fail(start, "malformed number")
        if len(digits) > 19:
            self.fail(start, "number too long")
        if digits[:1] == b"0" and (len(digits) > 1 or digits is not text):
            self.fail(start, "non-canonical number")
        return int(text)

    def integer(self, at: int):
        match = _INTEGER.match(self.data, at)
        if match is not None:
            number = int(match.group(1))
            if INT64_MIN <= number <= INT64_MAX:
                return number, match.end()
        end = self.data.find(b"e", at + 1, at + 22)
        if end < 0:
            self.fail(at, "unterminated integer")
        number = self.number(at + 1, end, signed=True)
        if not INT64_MIN <= number <= INT64_MAX:
            self.fail(at, "integer does not fit in 64 bits")
        return number, end + 1

    def string(self, at: int):
        match = _STRING_LENGTH.match(self.data, at)
        if match is not None:
            length, start = int(match.group(1)), match.end()
        else:
            colon = self.data.find(b":", at, at + 21)
            if colon < 0:
                self.fail(at, "malformed string length")
            length = self.number(at, colon, signed=False)
            start = colon + 1
        if start + length > len(self.data):
            self.fail(at, "string runs past the end of input")
        return self.data[start:start + length], start + length

    def list(self, at: int, depth: int):
        items, at = [], at + 1
        while True:
            if at >= len(self.data):
                self.fail(at, "unterminated list")
            if self.data[at] == ord("e"):
                return items, at + 1
            item, at = self.value(at, depth)
            items.append(item)

    def dict(self, at: int, depth: int):
        result: dict[bytes, object] = {}
        last = None
        at += 1
        while True:
            if at >= len(self.data):
                self.fail(at, "unterminated dictionary")
            if self.data[at] == ord("e"):
                return result, at + 1
            if self.data[at] not in _DIGITS:
                self.fail(at, "dictionary key is not a string")
            key, next_ = self.string(at)
            if last is not None and key <= last:
                self.fail(at, "dictionary keys not in ascending order")
            last = key
            result[key], at = self.value(next_, depth)
