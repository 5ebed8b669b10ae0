# -*- test-case-name: tests.unit.test_cjdns.test_names -*-
"""
How cjdns names things: node keys (C{<52 base32 characters>.k}), the
fc00::/8 address derived from a key, switch labels
(C{0000.0000.0000.0013}) and the node address strings of the admin API
(C{v20.0000.0000.0000.0013.<key>.k}).  Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass

# util/Base32.h: the dnscurve alphabet, least significant bits first.
BASE32_ALPHABET = "0123456789bcdfghjklmnpqrstuvwxyz"
_BASE32_VALUE = {c: i for i, c in enumerate(BASE32_ALPHABET)}
# util/Base32.h (numForAscii) also accepts the upper-case letters.
_BASE32_VALUE.update({c.upper(): i for c, i in list(_BASE32_VALUE.items()) if c.isalpha()})
_BASE32_TEXT = re.compile("[%s]*" % "".join(_BASE32_VALUE))
# Each character as the digit of its value in int(..., 32).
_AS_PYTHON_DIGITS = str.maketrans({c: "0123456789abcdefghijklmnopqrstuv"[i]
                                   for c, i in _BASE32_VALUE.items()})

# crypto/AddressCalc.h: AddressCalc_ADDRESS_PREFIX 0xfc, 8 prefix bits.
CJDNS_NETWORK = ipaddress.IPv6Network("fc00::/8")

# switch/LabelSplicer.h (LabelSplicer_splice): a splice whose halves
# together need more than 59 bits cannot be represented.
MAX_LABEL_BITS = 59
SELF_LABEL = 1

_LABEL = re.compile(r"^[0-9a-fA-F]{4}\.[0-9a-fA-F]{4}\.[0-9a-fA-F]{4}\.[0-9a-fA-F]{4}$")
_VERSION = re.compile(r"^v([0-9]{1,9})\.")


def base32Encode(raw: bytes) -> str:
    """
    cjdns's Base32_encode (util/Base32.h): 5 bits at a time, least
    significant first; a trailing partial group is written as is.
    """
    out, work, bits = [], 0, 0
    for byte in raw:
        work |= byte << bits
        bits += 8
        while bits >= 5:
            out.append(BASE32_ALPHABET[work & 31])
            work >>= 5
            bits -= 5
    if bits:
        out.append(BASE32_ALPHABET[work & 31])
    return "".join(out)


def base32Decode(text: str) -> bytes:
    """
    cjdns's Base32_decode (util/Base32.h), as strict: an unknown character,
    or leftover bits that are not zero, is an error.  (The characters are
    read as one base-32 number, least significant first: a walk of a large
    mesh parses tens of thousands of keys.)
    """
    if not _BASE32_TEXT.fullmatch(text):
        bad = next(char for char in text if char not in _BASE32_VALUE)
        raise ValueError(f"{bad!r} is not a base32 character")
    size, leftover = divmod(5 * len(text), 8)
    work = int(text[::-1].translate(_AS_PYTHON_DIGITS), 32) if text else 0
    if leftover >= 5 or work >> (8 * size):
        raise ValueError("base32 input has leftover bits")
    return work.to_bytes(size, "little")


def ipForKeyBytes(key: bytes) -> ipaddress.IPv6Address:
    """
    crypto/AddressCalc.c (AddressCalc_addressForPublicKey): the first 16
    bytes of SHA-512 of SHA-512 of the 32-byte key.  Only keys whose result
    lies in fc00::/8 are valid cjdns keys.
    """
    digest = hashlib.sha512(hashlib.sha512(key).digest()).digest()
    return ipaddress.IPv6Address(digest[:16])


def parseKey(text) -> bytes:
    """
    The 32 key bytes of C{text}, checked the way crypto/Key.c (Key_parse)
    checks it, and stricter: exactly 52 characters then C{.k} (Key_parse
    ignores anything after the C{.k}).  Raises L{ValueError} with
    Key_parse_strerror's words.
    """
    return _parseKey(text)[0]


def _parseKey(text) -> tuple[bytes, ipaddress.IPv6Address]:
    """L{parseKey}, and the key's address."""
    if not isinstance(text, str) or len(text) < 52:
        raise ValueError("key must be 52 characters long")
    if len(text) != 54 or text[52:] != ".k":
        raise ValueError("key must end in .k")
    try:
        raw = base32Decode(text[:52])
    except ValueError:
        raise ValueError("failed to base-32 decode key") from None
    if len(raw) != 32:
        raise ValueError("failed to base-32 decode key")
    ip = ipForKeyBytes(raw)
    if ip not in CJDNS_NETWORK:
        raise ValueError("not a valid cjdns public key")
    return raw, ip


def formatKey(raw: bytes) -> str:
    """crypto/Key.c (Key_stringify): 52 base32 characters and C{.k}."""
    if len(raw) != 32:
        raise ValueError("a cjdns key is 32 bytes")
    return base32Encode(raw) + ".k"


def canonicalKey(text) -> str:
    """C{text} checked by L{parseKey}, in cjdns's own (lower-case) spelling."""
    return formatKey(parseKey(text))


def ipForKey(text) -> ipaddress.IPv6Address:
    """The fc00::/8 address of the node whose key C{text} is."""
    return ipForKeyBytes(parseKey(text))


def isCjdnsAddress(address) -> bool:
    try:
        return ipaddress.ip_address(address) in CJDNS_NETWORK
    except ValueError:
        return False


def formatIp(address) -> str:
    """util/AddrTools.c (AddrTools_printIp): all 39 characters, lower case."""
    return ipaddress.IPv6Address(address).exploded


# -- switch labels ----------------------------------------------------------

def parseLabel(text) -> int:
    """
    util/AddrTools.c (AddrTools_parsePath): four groups of four hex digits,
    most significant first, exactly 19 characters.
    """
    if not isinstance(text, str) or not _LABEL.match(text):
        raise ValueError(f"{text!r} is not a switch label")
    return int(text.replace(".", ""), 16)


def formatLabel(label: int) -> str:
    """util/AddrTools.c (AddrTools_printPath)."""
    if not 0 <= label < 2**64:
        raise ValueError("a switch label is 64 bits")
    digits = f"{label:016x}"
    return ".".join(digits[i:i + 4] for i in range(0, 16, 4))


def splice(goHere: int, viaHere: int) -> int | None:
    """
    switch/LabelSplicer.h (LabelSplicer_splice): the label of C{goHere}
    (relative to the node at C{viaHere}) as seen from us, or C{None} when
    the two together do not fit.  (cjdns's NodeStore also widens the
    director when the encoding forms differ, which needs the node's
    encoding scheme: cjdns's NodeStore_getRouteLabel does that.)
    """
    if goHere < 1 or viaHere < 1:
        return None
    viaBits = viaHere.bit_length() - 1
    if goHere.bit_length() - 1 + viaBits > MAX_LABEL_BITS:
        return None
    return ((goHere ^ 1) << viaBits) ^ viaHere


def labelHops(label: int, bitsPerHop: int = 4) -> int:
    """
    A guess at the number of hops a label crosses: cjdns's smallest
    director form takes 4 bits (a 3-bit interface number and a 1-bit form
    marker, switch/NumberCompress.h v3x5x8), wider forms take more, so this
    never under-counts a path made of small forms.
    """
    bits = max(0, label.bit_length() - 1)
    return -(-bits // bitsPerHop)


# -- node address strings ------------------------------------------------------

@dataclass(frozen=True)
class NodeAddress:
    """
    One node as the admin API names it (dht/Address.c, Address_toString):
    protocol version, switch label and key.
    """

    version: int
    label: int
    key: str
    ip: ipaddress.IPv6Address

    def __str__(self) -> str:
        return formatNodeAddress(self.version, self.label, self.key)


def formatNodeAddress(version: int, label: int, key: str) -> str:
    return f"v{version}.{formatLabel(label)}.{key}"


def parseNodeAddress(text, keys: dict | None = None) -> NodeAddress:
    """
    Parse C{v<version>.<label>.<key>.k} the way dht/Address.c
    (Address_fromString) does: 74 characters after the version, a label,
    a dot, a valid key.

    @param keys: the caller's memo of key texts found valid, to their
        address (a walk meets each key several times, and checking one
        takes two SHA-512s); filled as keys are checked.
    """
    if not isinstance(text, str) or len(text) > 90:
        raise ValueError("not a node address")
    match = _VERSION.match(text)
    if not match:
        raise ValueError(f"{text!r} does not start with v<version>.")
    rest = text[match.end():]
    if len(rest) != 74 or rest[19] != ".":
        raise ValueError(f"{text!r} is not <label>.<key>")
    label = parseLabel(rest[:19])
    ip = None if keys is None else keys.get(rest[20:])
    if ip is None:
        _, ip = _parseKey(rest[20:])
        if keys is not None:
            keys[rest[20:]] = ip
    # What canonicalKey gives: a strictly decoded key has one spelling,
    # but for the case of its letters.
    return NodeAddress(int(match.group(1)), label, rest[20:].lower(), ip)
