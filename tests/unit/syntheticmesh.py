"""
A SYNTHETIC cjdns network for the fake admin endpoint (L{fakecjdns}):
deterministic from a seed, a few hundred nodes (or, for bench/walk.py,
100,000) with keys whose addresses
are derived the way cjdns derives them (crypto/AddressCalc.c: the first 16
bytes of SHA-512 of SHA-512 of the key, valid only in fc00::/8; keys are
drawn until one is valid, as crypto/Key.c Key_gen does), switch
interfaces, labels and peers.  Nothing here talks to a real cjdns.

Labels use one fixed director form, the smallest of cjdns's v3x5x8 scheme
(switch/NumberCompress.h): 4 bits per hop, a 3-bit interface number above
a 1 marker bit, so the one-hop labels are C{0x13}, C{0x15} ... C{0x1f}
exactly as in dht/dhtcore/test/NodeStore_test.c, and every node has at
most 7 peers.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections import deque
from dataclasses import dataclass, field

from mnigs.cjdns.names import CJDNS_NETWORK, formatKey, ipForKeyBytes, splice

BITS_PER_HOP = 4
MAX_PEERS = 7  # interfaces 1..7; 0 is the self interface


def oneHopLabel(interface: int) -> int:
    return (1 << BITS_PER_HOP) | (interface << 1) | 1


def directorInterface(director: int) -> int | None:
    if not director & 1:
        return None  # a wider form: not used in this network
    return director >> 1 or None


@dataclass
class MeshNode:
    index: int
    keyBytes: bytes
    version: int
    peers: dict[int, int] = field(default_factory=dict)  # interface -> node index

    @functools.cached_property
    def key(self) -> str:
        return formatKey(self.keyBytes)

    @functools.cached_property
    def ip(self):
        return ipForKeyBytes(self.keyBytes)

    def interfaceTo(self, other: int) -> int:
        for interface, index in self.peers.items():
            if index == other:
                return interface
        raise KeyError(other)


class SyntheticMesh:
    """
    @ivar gateways: indexes of the nodes that play gateways (node 0, the
        one whose cjdns the fake stands for, never does).
    """

    def __init__(self, seed: int = 7, size: int = 300, gateways: int = 12, version: int = 21,
                 keys: tuple[bytes, ...] | None = None):
        self.seed = seed
        rng = random.Random(seed)
        keys = _keys(seed, size) if keys is None else keys
        self.nodes = [MeshNode(i, key, version) for i, key in enumerate(keys[:size])]
        neighbours: list[list[int]] = [[] for _ in range(size)]

        def link(a, b):
            neighbours[a].append(b)
            neighbours[b].append(a)

        # A bushy tree, breadth first, then cross links: a few hops deep,
        # as community meshes are.
        parents, nextIndex = deque([0]), 1
        while nextIndex < size:
            parent = parents.popleft()
            for _ in range(rng.randint(2, 4)):
                if nextIndex < size:
                    link(parent, nextIndex)
                    parents.append(nextIndex)
                    nextIndex += 1
        for _ in range(size // 4):
            a, b = rng.randrange(size), rng.randrange(size)
            if (a != b and b not in neighbours[a]
                    and len(neighbours[a]) < MAX_PEERS and len(neighbours[b]) < MAX_PEERS):
                link(a, b)
        for node, others in zip(self.nodes, neighbours):
            interfaces = rng.sample(range(1, MAX_PEERS + 1), len(others))
            node.peers = dict(zip(interfaces, others))
        self.gateways = sorted(rng.sample(range(1, size), gateways))

    def __len__(self):
        return len(self.nodes)

    def byIp(self, ip) -> MeshNode | None:
        return self._ips().get(ip)

    @functools.cache
    def _ips(self):
        return {node.ip: node for node in self.nodes}

    @functools.cache
    def bfs(self, root: int = 0) -> dict[int, tuple[int, int]]:
        """
        Node index -> (hops, label) from C{root}, breadth first, peers in
        interface order.
        """
        found = {root: (0, 1)}
        queue = deque([root])
        while queue:
            index = queue.popleft()
            hops, label = found[index]
            for interface, peer in sorted(self.nodes[index].peers.items()):
                if peer not in found:
                    found[peer] = (hops + 1, splice(oneHopLabel(interface), label))
                    queue.append(peer)
        return found

    def resolve(self, label: int, root: int = 0) -> int | None:
        """
        The node a packet sent along C{label} from C{root} reaches, or
        C{None} when the label leads nowhere.
        """
        index = root
        while label > 1:
            interface = directorInterface(label & ((1 << BITS_PER_HOP) - 1))
            if interface is None or interface not in self.nodes[index].peers:
                return None
            index = self.nodes[index].peers[interface]
            label >>= BITS_PER_HOP
        return index if label == 1 else None


@functools.cache
def _keys(seed: int, size: int) -> tuple[bytes, ...]:
    rng = random.Random(f"cjdns-keys-{seed}")
    keys = []
    while len(keys) < size:
        candidate = rng.randbytes(32)
        if ipForKeyBytes(candidate) in CJDNS_NETWORK:
            keys.append(candidate)
    return tuple(keys)


def counterKeys(seed: int, first: int, last: int) -> list[bytes]:
    """
    The valid keys among candidates C{first} to C{last - 1} of seed
    C{seed}: a fixed 28-byte prefix and a 4-byte counter.  Not random
    keys, but what the admin API shows of a key (its string and the
    address derived from it) is checked the same way; about one
    candidate in 256 is valid, as with random keys.
    """
    prefix = hashlib.sha256(b"cjdns-counter-keys-%d" % seed).digest()[:28]
    sha512 = hashlib.sha512
    valid = []
    for i in range(first, last):
        candidate = prefix + i.to_bytes(4, "big")
        if sha512(sha512(candidate).digest()).digest()[0] == 0xFC:
            valid.append(candidate)
    return valid


def manyKeys(seed: int, size: int, workers: int = 2, chunk: int = 1 << 18) -> tuple[bytes, ...]:
    """
    C{size} valid keys from L{counterKeys}, the same ones whatever
    C{workers} is: a mesh of 100,000 nodes needs some 25 million
    candidates, which takes a minute or more on one core.
    """
    if workers <= 1:
        found, start = [], 0
        while len(found) < size:
            found.extend(counterKeys(seed, start, start + chunk))
            start += chunk
        return tuple(found[:size])
    from concurrent.futures import ProcessPoolExecutor

    found, start = [], 0
    with ProcessPoolExecutor(workers) as pool:
        while len(found) < size:
            starts = [start + i * chunk for i in range(workers)]
            for keys in pool.map(counterKeys, [seed] * workers, starts, [s + chunk for s in starts]):
                found.extend(keys)
            start += workers * chunk
    return tuple(found[:size])


def randomKey(rng: random.Random) -> str:
    """A valid cjdns key (its address is in fc00::/8), drawn from C{rng}."""
    while True:
        candidate = rng.randbytes(32)
        if ipForKeyBytes(candidate) in CJDNS_NETWORK:
            return formatKey(candidate)
