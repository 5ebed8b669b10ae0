"""
Tests for L{mnigs.yggdrasil.answers}, from answers CAPTURED from real
yggdrasil 0.4.7 daemons by tests/mesh/capture_yggdrasil.py, and property
tests on garbage.
"""

import ipaddress
import json
import os

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mnigs.yggdrasil.answers import (
    MAX_REMOTE_KEYS,
    YGGDRASIL_NETWORK,
    AnswerError,
    OverlayNode,
    addressForKey,
    nodeForKey,
    parseDHT,
    parseKey,
    parsePaths,
    parsePeers,
    parseRemotePeers,
    parseSelf,
    parseSessions,
)

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data")

settings.register_profile("mnigs-yggdrasil", derandomize=True, max_examples=400, deadline=None)


def load(name):
    with open(os.path.join(DATA, name)) as f:
        return json.load(f)


def response(name):
    return load(name)["response"]


MESH = load("ygg_mesh.json")
BY_NAME = {n["name"]: n for n in MESH["nodes"]}
BY_KEY = {n["key"]: n for n in MESH["nodes"]}


def goAddrForKey(key: bytes) -> ipaddress.IPv6Address:
    """
    src/address/address.go AddrForKey, transcribed loop for loop, to
    check the arithmetic version against.
    """
    buf = bytes(~b & 0xFF for b in key)
    temp, done, ones, bits, nBits = [], False, 0, 0, 0
    for idx in range(8 * len(buf)):
        bit = (buf[idx // 8] & (0x80 >> (idx % 8))) >> (7 - (idx % 8))
        if not done and bit != 0:
            ones = (ones + 1) & 0xFF
            continue
        if not done and bit == 0:
            done = True
            continue
        bits = ((bits << 1) | bit) & 0xFF
        nBits += 1
        if nBits == 8:
            nBits = 0
            temp.append(bits)
    addr = bytearray(16)
    addr[0] = 0x02
    addr[1] = ones
    chunk = bytes(temp[:14])
    addr[2:2 + len(chunk)] = chunk
    return ipaddress.IPv6Address(bytes(addr))


class AddressTests(SynchronousTestCase):
    def test_addressesAreTheDaemonsOwn(self):
        """
        For keys chosen at the edges (all zeros, all ones, long runs of
        leading zeros) and random ones, the address is the one
        C{yggdrasil -address} printed.
        """
        pairs = load("ygg_addresses.json")
        self.assertGreater(len(pairs), 30)
        for key, address in pairs:
            self.assertEqual(addressForKey(bytes.fromhex(key)), ipaddress.IPv6Address(address), key)

    def test_everyNodeOfTheCaptureHasTheAddressItsGetSelfStates(self):
        for node in MESH["nodes"]:
            self.assertEqual(nodeForKey(node["key"]).address, ipaddress.IPv6Address(node["address"]))

    @settings(settings.get_profile("mnigs-yggdrasil"))
    @given(st.binary(min_size=32, max_size=32))
    def test_arithmeticIsTheGoLoop(self, key):
        self.assertEqual(addressForKey(key), goAddrForKey(key))

    @settings(settings.get_profile("mnigs-yggdrasil"))
    @given(st.integers(0, 255), st.binary(min_size=32, max_size=32))
    def test_leadingZerosAreTheGoLoopToo(self, zeros, key):
        number = int.from_bytes(key, "big") >> zeros
        key = number.to_bytes(32, "big")
        self.assertEqual(addressForKey(key), goAddrForKey(key))
        self.assertIn(addressForKey(key), YGGDRASIL_NETWORK)

    def test_keysOfTheWrongLengthAreRefused(self):
        self.assertRaises(AnswerError, addressForKey, b"\x00" * 31)
        self.assertRaises(AnswerError, parseKey, "ab" * 31)
        self.assertRaises(AnswerError, parseKey, "zz" * 32)
        self.assertRaises(AnswerError, parseKey, 12)
        self.assertEqual(parseKey("AB" * 32), "ab" * 32)


class LocalAnswerTests(SynchronousTestCase):
    def test_getSelf(self):
        own = parseSelf(response("ygg_getself.json"))
        a = BY_NAME[MESH["asked_on"]]
        self.assertEqual(own, OverlayNode(a["key"], ipaddress.IPv6Address(a["address"])))

    def test_getPeersNamesTheDirectPeers(self):
        parsed = parsePeers(response("ygg_getpeers.json"))
        self.assertEqual(parsed.skipped, 0)
        self.assertEqual({BY_KEY[n.key]["hops"] for n in parsed.nodes}, {1})
        neighbours = {y for x, y in MESH["links"] if x == "a"} | {x for x, y in MESH["links"] if y == "a"}
        self.assertEqual({BY_KEY[n.key]["name"] for n in parsed.nodes}, neighbours)

    def test_getDHTIncludesTheNodeItself(self):
        parsed = parseDHT(response("ygg_getdht.json"))
        self.assertEqual(parsed.skipped, 0)
        self.assertIn(BY_NAME["a"]["key"], {n.key for n in parsed.nodes})
        self.assertTrue({n.key for n in parsed.nodes} <= set(BY_KEY))

    def test_getSessionsNamesTheNodesTheWalkTalkedTo(self):
        parsed = parseSessions(response("ygg_getsessions.json"))
        self.assertEqual(parsed.skipped, 0)
        self.assertEqual({BY_KEY[n.key]["name"] for n in parsed.nodes}, set("bcdef"))

    def test_getPathsGivesTreeHopsAndLeavesLookupsOut(self):
        """
        The capture holds lookups (empty paths: partial keys, and a key
        nobody has) besides real paths; only real paths come out, at the
        hops of their ports.  In the captured overlay the tree path is a
        shortest one for every node.
        """
        raw = response("ygg_getpaths.json")["paths"]
        self.assertTrue(any(entry["path"] == [] for entry in raw))
        parsed = parsePaths(response("ygg_getpaths.json"))
        self.assertEqual(parsed.skipped, 0)
        self.assertEqual({BY_KEY[n.key]["name"]: hops for n, hops in parsed.nodes},
                         {name: BY_NAME[name]["hops"] for name in "bcdef"})

    def test_nullListsAreEmpty(self):
        # Go encodes a nil slice as null: a node with no peers yet.
        self.assertEqual(parsePeers({"peers": None}).nodes, [])
        self.assertEqual(parseDHT({}).nodes, [])

    def test_anEntryWhoseAddressIsNotItsKeysIsSkipped(self):
        entries = response("ygg_getpeers.json")["peers"]
        wrong = dict(entries[0], address="200::1")
        parsed = parsePeers({"peers": [wrong] + entries})
        self.assertEqual(parsed.skipped, 1)
        self.assertEqual(len(parsed.nodes), len(entries))

    def test_aPeerListedTwiceComesOnce(self):
        entries = response("ygg_getpeers.json")["peers"]
        self.assertEqual(len(parsePeers({"peers": entries + entries}).nodes), len(entries))


class RemoteAnswerTests(SynchronousTestCase):
    def test_everyCapturedRemoteAnswerNamesThePeersOfTheNodeAsked(self):
        links = {frozenset(link) for link in MESH["links"]}
        for key, text in load("ygg_remotegetpeers.json").items():
            answer = json.loads(text)
            if key not in BY_KEY:
                self.assertEqual(answer["status"], "error")
                self.assertEqual(answer["error"], "timeout")
                continue
            name = BY_KEY[key]["name"]
            parsed = parseRemotePeers(answer["response"], nodeForKey(key))
            self.assertEqual(parsed.skipped, 0)
            self.assertEqual({BY_KEY[n.key]["name"] for n in parsed.nodes},
                             {other for link in links if name in link for other in link if other != name})

    def test_anAnswerAboutAnotherNodeIsRefused(self):
        remote = load("ygg_remotegetpeers.json")
        b, c = BY_NAME["b"]["key"], BY_NAME["c"]["key"]
        answer = json.loads(remote[b])["response"]
        self.assertRaises(AnswerError, parseRemotePeers, answer, nodeForKey(c))

    def test_tooManyKeysAreCutAndCounted(self):
        asked = nodeForKey("11" * 32)
        keys = [f"{i:064x}" for i in range(MAX_REMOTE_KEYS + 10)]
        parsed = parseRemotePeers({str(asked.address): {"keys": keys}}, asked)
        self.assertEqual(len(parsed.nodes), MAX_REMOTE_KEYS)
        self.assertEqual(parsed.skipped, 10)

    def test_noKeysIsNoPeers(self):
        asked = nodeForKey("11" * 32)
        self.assertEqual(parseRemotePeers({str(asked.address): {"keys": None}}, asked).nodes, [])


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=80)
    | st.sampled_from(["200::1", "ab" * 32, "zz" * 32, "keys", "peers"]),
    lambda children: st.lists(children, max_size=6)
    | st.dictionaries(st.sampled_from(["key", "address", "path", "keys", "peers", "dht",
                                       "sessions", "paths", "200::1", "x"]), children, max_size=6),
    max_leaves=30)


class NeverCrashTests(SynchronousTestCase):
    """
    Whatever a daemon (or, through debug_remoteGetPeers, a remote node)
    sends, parsing gives nodes or L{AnswerError}, nothing else.
    """

    def check(self, f, *args):
        try:
            result = f(*args)
        except AnswerError:
            return
        nodes = result.nodes if hasattr(result, "nodes") else [result]
        for node in nodes:
            node = node[0] if isinstance(node, tuple) else node
            self.assertIn(node.address, YGGDRASIL_NETWORK)

    @settings(settings.get_profile("mnigs-yggdrasil"))
    @given(JSON)
    def test_localParsers(self, value):
        for parse in (parseSelf, parsePeers, parseDHT, parseSessions, parsePaths):
            self.check(parse, value)
            self.check(parse, {"peers": value, "dht": value, "sessions": value, "paths": value})
            self.check(parse, {"peers": [value], "dht": [value], "sessions": [value],
                               "paths": [value]})

    @settings(settings.get_profile("mnigs-yggdrasil"))
    @given(JSON)
    def test_remoteParser(self, value):
        asked = nodeForKey("11" * 32)
        self.check(parseRemotePeers, value, asked)
        self.check(parseRemotePeers, {str(asked.address): value}, asked)
        self.check(parseRemotePeers, {str(asked.address): {"keys": value}}, asked)
