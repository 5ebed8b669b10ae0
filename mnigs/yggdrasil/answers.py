# -*- test-case-name: tests.unit.test_yggdrasil.test_answers -*-
"""
What yggdrasil 0.4's admin socket answers, parsed.  Pure: no I/O.

The shapes, as yggdrasil 0.4.7 sends them (see tests/unit/data/ygg_*.json,
captured from real daemons): every answer is C{{"status": "success",
"request": null, "response": {...}}} or C{{"status": "error", "error":
TEXT, "request": null, "response": null}}, and the C{response} of

  - C{getSelf}: C{{"key", "address", "subnet", "coords", "build_name",
    "build_version"}};
  - C{getPeers}: C{{"peers": [{"key", "address", "port", "priority",
    "coords", "remote", "bytes_recvd", "bytes_sent", "uptime"}, ...]}}, one
    entry per link (a node peered twice is listed twice);
  - C{getDHT}: C{{"dht": [{"key", "address", "port", "rest"}, ...]}}, the
    node itself included (port 0);
  - C{getSessions}: C{{"sessions": [{"key", "address", "bytes_recvd",
    "bytes_sent", "uptime"}, ...]}};
  - C{getPaths}: C{{"paths": [{"key", "address", "path"}, ...]}}, C{path}
    the switch ports along the tree from this node to the other, ending in
    0: C{[1, 0]} is a peer, one hop per port before the 0.  Entries with an
    empty path are lookups: their key may be a partial one (the known
    bits of an address, the rest set to 1) or belong to nobody at all;
  - C{debug_remoteGetPeers} C{{"key": HEX}}: C{{ADDRESS: {"keys": [HEX,
    ...]}}}, ADDRESS the asked node's, the keys its peers' (the asking
    node's among them); a node that does not answer within 6 s gives the
    error C{"timeout"}.

Addresses come from keys (L{addressForKey}, yggdrasil's
src/address/address.go AddrForKey); an entry whose stated address is not
its key's is not used.  Anything that does not parse is skipped, entry by
entry, and counted.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

YGGDRASIL_NETWORK = ipaddress.IPv6Network("200::/7")
#: src/address/address.go GetPrefix: addresses start with this byte.
ADDRESS_PREFIX = 0x02
KEY_BYTES = 32  # ed25519 public keys
#: Entries of one local list (getPeers, getDHT, ...) looked at.
MAX_ENTRIES = 4096
#: Keys of one debug_remoteGetPeers answer looked at, whatever a node sends.
MAX_REMOTE_KEYS = 1024


class AnswerError(ValueError):
    """An answer (or the part of it that matters) is not of the known shape."""


@dataclass(frozen=True)
class OverlayNode:
    """
    One Yggdrasil node: its public key (64 lower-case hex digits) and the
    200::/7 address derived from it.
    """

    key: str
    address: ipaddress.IPv6Address


@dataclass
class Parsed:
    """
    The usable entries of one answer, in the answer's order, and how many
    were skipped.
    """

    nodes: list = field(default_factory=list)
    skipped: int = 0


def addressForKey(key: bytes) -> ipaddress.IPv6Address:
    """
    The node address of an ed25519 public key, as AddrForKey computes it:
    invert the key; the prefix byte 0x02; then the number of leading 1
    bits of the inverted key; then the bits after those ones and the 0
    that ends them, as many as fit in the remaining 14 bytes.
    """
    if len(key) != KEY_BYTES:
        raise AnswerError(f"a key has {KEY_BYTES} bytes, not {len(key)}")
    bits = 8 * KEY_BYTES
    number = int.from_bytes(key, "big")
    ones = bits - number.bit_length()  # leading 1s of the inverse: leading 0s of the key
    tail = 0
    if ones < bits:
        rest = bits - ones - 1  # after the ones and the 0 that ends them
        remaining = (number ^ ((1 << bits) - 1)) & ((1 << rest) - 1)
        # Whole bytes only (a last partial byte is never appended), at
        # most the 14 that follow the prefix and the count.
        taken = min(rest // 8, 14) * 8
        tail = (remaining >> (rest - taken)) << (112 - taken)
    # The count is a Go byte: the all-zero key's 256 ones wrap to 0.
    value = (ADDRESS_PREFIX << 120) | ((ones & 0xFF) << 112) | tail
    return ipaddress.IPv6Address(value)


def parseKey(value) -> str:
    """A public key as the admin socket writes it: 64 hex digits."""
    if not isinstance(value, str) or len(value) != 2 * KEY_BYTES:
        raise AnswerError(f"{_short(value)} is not a 64-digit hex key")
    try:
        bytes.fromhex(value)
    except ValueError:
        raise AnswerError(f"{_short(value)} is not a 64-digit hex key") from None
    return value.lower()


def nodeForKey(key) -> OverlayNode:
    key = parseKey(key)
    return OverlayNode(key, addressForKey(bytes.fromhex(key)))


def nodeFromEntry(entry) -> OverlayNode:
    """
    An entry of a local list: its C{key}, and its C{address} when it has
    one, which must be the key's.
    """
    if not isinstance(entry, dict):
        raise AnswerError("entry is not an object")
    node = nodeForKey(entry.get("key"))
    stated = entry.get("address")
    if stated is not None and _ipv6(stated) != node.address:
        raise AnswerError(f"address {_short(stated)} is not the address of key {node.key}")
    return node


def _ipv6(value) -> ipaddress.IPv6Address | None:
    if not isinstance(value, str) or len(value) > 45:
        return None
    try:
        return ipaddress.IPv6Address(value)
    except ValueError:
        return None


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _entries(response, listName: str) -> list:
    if not isinstance(response, dict):
        raise AnswerError("response is not an object")
    entries = response.get(listName)
    if entries is None:
        return []  # Go writes a nil slice as null
    if not isinstance(entries, list):
        raise AnswerError(f"{listName} is not a list")
    return entries[:MAX_ENTRIES]


def parseSelf(response) -> OverlayNode:
    """The node itself, from C{getSelf}."""
    try:
        return nodeFromEntry(response)
    except AnswerError as e:
        raise AnswerError(f"getSelf: {e}") from None


def _parseList(response, listName: str) -> Parsed:
    parsed = Parsed()
    seen = set()
    for entry in _entries(response, listName):
        try:
            node = nodeFromEntry(entry)
        except AnswerError:
            parsed.skipped += 1
            continue
        if node.key not in seen:
            seen.add(node.key)
            parsed.nodes.append(node)
    return parsed


def parsePeers(response) -> Parsed:
    """The direct peers, from C{getPeers}, each once."""
    return _parseList(response, "peers")


def parseDHT(response) -> Parsed:
    """The nodes of C{getDHT} (the node itself may be among them)."""
    return _parseList(response, "dht")


def parseSessions(response) -> Parsed:
    """The nodes this node has sessions with, from C{getSessions}."""
    return _parseList(response, "sessions")


def parsePaths(response) -> Parsed:
    """
    From C{getPaths}: C{(node, hops)} for each established path (the
    number of ports before the final 0: hops along the spanning tree,
    which may be more than the shortest way).  Lookups (empty paths) are
    left out, not counted as skipped.
    """
    parsed = Parsed()
    seen = set()
    for entry in _entries(response, "paths"):
        path = entry.get("path") if isinstance(entry, dict) else None
        if isinstance(path, list) and not path:
            continue
        if (not isinstance(path, list) or len(path) < 2 or len(path) > 4096
                or not all(type(port) is int and port >= 0 for port in path)):
            parsed.skipped += 1
            continue
        try:
            node = nodeFromEntry(entry)
        except AnswerError:
            parsed.skipped += 1
            continue
        if node.key not in seen:
            seen.add(node.key)
            parsed.nodes.append((node, len(path) - 1))
    return parsed


def parseRemotePeers(response, asked: OverlayNode) -> Parsed:
    """
    The peers of C{asked}, from its C{debug_remoteGetPeers} answer, each
    once.  Raises L{AnswerError} when the answer is not about C{asked}.
    """
    if not isinstance(response, dict):
        raise AnswerError("response is not an object")
    about = None
    for address, value in list(response.items())[:8]:
        if _ipv6(address) == asked.address:
            about = value
            break
    if about is None:
        raise AnswerError(f"the answer is not about {asked.address}")
    keys = about.get("keys") if isinstance(about, dict) else None
    if keys is None:
        return Parsed()  # a node with no peers at all: Go's nil slice
    if not isinstance(keys, list):
        raise AnswerError("keys is not a list")
    parsed = Parsed()
    seen = set()
    for key in keys[:MAX_REMOTE_KEYS]:
        try:
            node = nodeForKey(key)
        except AnswerError:
            parsed.skipped += 1
            continue
        if node.key not in seen:
            seen.add(node.key)
            parsed.nodes.append(node)
    parsed.skipped += max(0, len(keys) - MAX_REMOTE_KEYS)
    return parsed
