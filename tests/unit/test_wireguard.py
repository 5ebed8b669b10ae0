"""
Tests for L{mnigs.wireguard.uapi}: keys, request formatting, answer parsing, the
UAPI client against a fake daemon socket, and the wg(8) client's argv.
"""

import base64
import ipaddress
import os
import shutil
import subprocess
import tempfile

from hypothesis import given, settings, strategies as st
from twisted.internet import defer
from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from mnigs.wireguard.uapi import (
    Peer,
    _Exchange,
    UAPIClient,
    UAPIError,
    WgToolClient,
    checkEndpoint,
    checkKey,
    formatSet,
    generatePrivateKey,
    hexToKey,
    keyToHex,
    parseDump,
    parseGet,
    publicKey,
)
from tests.unit.fakeprocess import FakeSpawner

# RFC 7748 section 6.1, Alice
ALICE_PRIVATE = base64.b64encode(bytes.fromhex(
    "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")).decode()
ALICE_PUBLIC = base64.b64encode(bytes.fromhex(
    "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")).decode()

# Captured from wireguard-go v0.0.20220316.
GET_ANSWER = """\
private_key=10f3125487499a79ba6fdd342879250f65134fa2300d11134109b58e3be5b060
listen_port=51999
public_key=163c63302aac8b58fca278cc239e8ad8c27b71af9bb6a5294b4c06376f2f1e61
preshared_key=0000000000000000000000000000000000000000000000000000000000000000
protocol_version=1
endpoint=192.0.2.1:5000
last_handshake_time_sec=1700000000
last_handshake_time_nsec=5
tx_bytes=92
rx_bytes=1234
persistent_keepalive_interval=25
allowed_ip=10.1.0.0/24
allowed_ip=fd00::/64
errno=0

"""

keys = st.binary(min_size=32, max_size=32).map(lambda b: base64.b64encode(b).decode())


class KeyTests(SynchronousTestCase):
    def test_publicKeyOfTheRFC7748Vector(self):
        self.assertEqual(publicKey(ALICE_PRIVATE), ALICE_PUBLIC)

    def test_generatedKeysAreClampedAndValid(self):
        for _ in range(20):
            key = generatePrivateKey()
            raw = base64.b64decode(checkKey(key))
            self.assertEqual(raw[0] & 7, 0)
            self.assertEqual(raw[31] & 0xC0, 0x40)
            checkKey(publicKey(key))

    def test_sameAsWgPubkey(self):
        if shutil.which("wg") is None:
            raise SkipTest("needs wg")
        key = generatePrivateKey()
        out = subprocess.run(["wg", "pubkey"], input=key.encode(), capture_output=True,
                             check=True).stdout.decode().strip()
        self.assertEqual(out, publicKey(key))

    def test_checkKeyRefuses(self):
        good = generatePrivateKey()
        for bad in ["", good[:-1], good + "=", good[:-2] + "!=", "A" * 44,
                    base64.b64encode(b"x" * 31).decode(), base64.b64encode(b"x" * 33).decode(),
                    good[:42] + "B=", None, good.encode()]:
            if bad == good:
                continue
            self.assertRaises(ValueError, checkKey, bad)
        self.assertEqual(checkKey(good), good)

    @given(keys)
    @settings(derandomize=True)
    def test_hexRoundTrip(self, key):
        self.assertEqual(hexToKey(keyToHex(key)), key)
        self.assertEqual(len(keyToHex(key)), 64)


class PeerTests(SynchronousTestCase):
    def test_endpoints(self):
        self.assertEqual(checkEndpoint("192.0.2.1:51820"), "192.0.2.1:51820")
        self.assertEqual(checkEndpoint("[2001:DB8::1]:51820"), "[2001:db8::1]:51820")
        self.assertEqual(checkEndpoint("[fe80::1%eth0]:1"), "[fe80::1%eth0]:1")
        for bad in ["example.org:51820", "2001:db8::1:51820", "192.0.2.1", "192.0.2.1:0",
                    "192.0.2.1:65536", "[192.0.2.1]:5", "192.0.2.1:+5", "1.2.3.4:5\nx=1"]:
            self.assertRaises(ValueError, checkEndpoint, bad)

    def test_peerNormalises(self):
        peer = Peer(ALICE_PUBLIC, ["10.0.0.1/24", ipaddress.ip_network("fd00::/64")])
        self.assertEqual([str(n) for n in peer.allowed_ips], ["10.0.0.0/24", "fd00::/64"])
        self.assertRaises(ValueError, Peer, "nope", [])
        self.assertRaises(ValueError, Peer, ALICE_PUBLIC, "10.0.0.0/24")
        self.assertRaises(ValueError, Peer, ALICE_PUBLIC, ["10.0.0.0/33"])
        self.assertRaises(ValueError, Peer, ALICE_PUBLIC, [], keepalive=-1)


class FormatSetTests(SynchronousTestCase):
    def test_oneTransaction(self):
        other, gone = generatePrivateKey(), publicKey(generatePrivateKey())
        payload = formatSet(
            private_key=ALICE_PRIVATE, listen_port=51820,
            add=[Peer(ALICE_PUBLIC, ["10.0.0.2/32"], endpoint="192.0.2.1:51820", keepalive=25),
                 Peer(publicKey(other), ["10.0.0.3/32"], replace_allowed_ips=False)],
            remove=[gone])
        self.assertEqual(payload.decode().split("\n"), [
            "set=1",
            "private_key=" + keyToHex(ALICE_PRIVATE),
            "listen_port=51820",
            "public_key=" + keyToHex(gone),
            "remove=true",
            "public_key=" + keyToHex(ALICE_PUBLIC),
            "replace_allowed_ips=true",
            "endpoint=192.0.2.1:51820",
            "persistent_keepalive_interval=25",
            "allowed_ip=10.0.0.2/32",
            "public_key=" + keyToHex(publicKey(other)),
            "allowed_ip=10.0.0.3/32",
            "", ""])

    def test_refusesAddAndRemoveOfOnePeer(self):
        self.assertRaises(ValueError, formatSet, add=[Peer(ALICE_PUBLIC)], remove=[ALICE_PUBLIC])
        self.assertRaises(ValueError, formatSet, listen_port=70000)


class ParseTests(SynchronousTestCase):
    def test_parsesARealAnswer(self):
        device = parseGet(GET_ANSWER)
        self.assertEqual(device["private_key"], hexToKey(
            "10f3125487499a79ba6fdd342879250f65134fa2300d11134109b58e3be5b060"))
        self.assertEqual(device["public_key"], publicKey(device["private_key"]))
        self.assertEqual(device["listen_port"], 51999)
        self.assertIsNone(device["fwmark"])
        [peer] = device["peers"]
        self.assertEqual(peer, {
            "public_key": "FjxjMCqsi1j8onjMI56K2MJ7ca+btqUpS0wGN28vHmE=",
            "preshared_key": None, "protocol_version": 1, "endpoint": "192.0.2.1:5000",
            "last_handshake_time_sec": 1700000000, "last_handshake_time_nsec": 5,
            "tx_bytes": 92, "rx_bytes": 1234, "persistent_keepalive_interval": 25,
            "allowed_ips": ["10.1.0.0/24", "fd00::/64"]})

    def test_emptyDevice(self):
        self.assertEqual(parseGet("listen_port=0\nerrno=0\n"),
                         {"private_key": None, "public_key": None, "listen_port": 0,
                          "fwmark": None, "peers": []})

    def test_refusesErrorsAndGarbage(self):
        self.assertRaises(ValueError, parseGet, "errno=-22\n")
        self.assertRaises(ValueError, parseGet, "listen_port=1\n")
        self.assertRaises(ValueError, parseGet, "garbage\nerrno=0\n")
        self.assertRaises(ValueError, parseGet, "public_key=abcd\nerrno=0\n")

    @given(st.lists(st.tuples(keys, st.lists(st.ip_addresses(), max_size=3),
                              st.integers(0, 2**40)), max_size=4, unique_by=lambda t: t[0]),
           st.integers(0, 65535))
    @settings(derandomize=True)
    def test_roundTrip(self, peers, port):
        lines = [f"listen_port={port}"]
        for key, addresses, rx in peers:
            lines.append(f"public_key={keyToHex(key)}")
            lines.append(f"rx_bytes={rx}")
            lines += [f"allowed_ip={a}/{a.max_prefixlen}" for a in addresses]
        device = parseGet("\n".join(lines) + "\nerrno=0\n")
        self.assertEqual(device["listen_port"], port)
        self.assertEqual([(p["public_key"], p["allowed_ips"], p["rx_bytes"])
                          for p in device["peers"]],
                         [(k, [f"{a}/{a.max_prefixlen}" for a in addrs], rx)
                          for k, addrs, rx in peers])

    def test_parsesWgDump(self):
        dump = (f"{ALICE_PRIVATE}\t{ALICE_PUBLIC}\t51999\toff\n"
                f"{ALICE_PUBLIC}\t(none)\t192.0.2.1:5000\t10.1.0.0/24,fd00::/64\t1700000000"
                "\t1234\t92\t25\n"
                f"{publicKey(generatePrivateKey())}\t(none)\t(none)\t(none)\t0\t0\t0\toff\n")
        device = parseDump(dump)
        self.assertEqual(device["public_key"], ALICE_PUBLIC)
        self.assertEqual(device["fwmark"], None)
        first, second = device["peers"]
        self.assertEqual(first["allowed_ips"], ["10.1.0.0/24", "fd00::/64"])
        self.assertEqual((first["rx_bytes"], first["tx_bytes"]), (1234, 92))
        self.assertEqual(first["persistent_keepalive_interval"], 25)
        self.assertEqual((second["endpoint"], second["allowed_ips"]), (None, []))


class FakeDaemon(Protocol):
    """Answers like wireguard-go from a script of canned answers."""

    def dataReceived(self, data):
        self.factory.received.append(data)
        answer = self.factory.answers.pop(0)
        if answer is None:
            self.transport.loseConnection()
        elif answer:
            self.transport.write(answer)


class ExchangeTests(SynchronousTestCase):
    def test_answerInPiecesEndsAtTheBlankLine(self):
        exchange = _Exchange(b"get=1\n\n")
        transport = StringTransport()
        exchange.makeConnection(transport)
        self.assertEqual(transport.value(), b"get=1\n\n")
        for piece in [b"listen_port=1\n", b"errno=0\n", b"\n"]:
            self.assertNoResult(exchange.answer)
            exchange.dataReceived(piece)
        self.assertEqual(self.successResultOf(exchange.answer), "listen_port=1\nerrno=0\n")
        self.assertTrue(transport.disconnecting)


class UAPIClientTests(TestCase):
    def setUp(self):
        from twisted.internet import reactor
        self.reactor = reactor
        self.sockdir = tempfile.mkdtemp(prefix="mnigs-uapi-")
        self.addCleanup(shutil.rmtree, self.sockdir)
        self.factory = Factory.forProtocol(FakeDaemon)
        self.factory.received, self.factory.answers = [], []
        self.client = UAPIClient(reactor, "mwtest", self.sockdir, timeout=2)

    @defer.inlineCallbacks
    def listen(self, *answers):
        self.factory.answers[:] = list(answers)
        port = yield UNIXServerEndpoint(self.reactor, os.path.join(self.sockdir, "mwtest.sock")
                                        ).listen(self.factory)
        self.addCleanup(port.stopListening)

    @defer.inlineCallbacks
    def test_get(self):
        yield self.listen(GET_ANSWER.encode())
        device = yield self.client.get()
        self.assertEqual(self.factory.received, [b"get=1\n\n"])
        self.assertEqual(device["listen_port"], 51999)

    @defer.inlineCallbacks
    def test_setPeersIsOneRequest(self):
        yield self.listen(b"errno=0\n\n")
        yield self.client.setPeers(add=[Peer(ALICE_PUBLIC, ["10.0.0.2/32"])],
                                   remove=[publicKey(generatePrivateKey())])
        [request] = self.factory.received
        self.assertEqual(request.count(b"public_key="), 2)
        self.assertTrue(request.startswith(b"set=1\n") and request.endswith(b"\n\n"))

    @defer.inlineCallbacks
    def test_refusalIsAnError(self):
        yield self.listen(b"errno=-22\n\n")
        error = yield self.assertFailure(self.client.setDevice(listen_port=1), UAPIError)
        self.assertEqual(error.errno, -22)
        self.assertIn("errno=-22", str(error))

    @defer.inlineCallbacks
    def test_hangUpWithoutAnswer(self):
        yield self.listen(None)
        yield self.assertFailure(self.client.get(), UAPIError)

    @defer.inlineCallbacks
    def test_silentDaemonTimesOut(self):
        yield self.listen(b"")
        self.client = UAPIClient(self.reactor, "mwtest", self.sockdir, timeout=0.2)
        yield self.assertFailure(self.client.get(), UAPIError)

    @defer.inlineCallbacks
    def test_noSocket(self):
        error = yield self.assertFailure(self.client.get(), UAPIError)
        self.assertIn("mwtest.sock", str(error))
        self.assertFalse((yield self.client.answers()))

    @defer.inlineCallbacks
    def test_answers(self):
        yield self.listen(b"listen_port=1\nerrno=0\n\n")
        self.assertTrue((yield self.client.answers()))


class WgToolClientTests(SynchronousTestCase):
    def setUp(self):
        self.spawner = FakeSpawner()
        self.client = WgToolClient(Clock(), "wg0", netns="mnigs-x", spawn=self.spawner)

    def test_setDeviceGivesTheKeyOnStdin(self):
        d = self.client.setDevice(private_key=ALICE_PRIVATE, listen_port=51820)
        call = self.spawner.spawned[0]
        self.assertEqual(call["args"], ["ip", "netns", "exec", "mnigs-x", "wg", "set", "wg0",
                                        "private-key", "/dev/stdin", "listen-port", "51820"])
        self.assertEqual(call["process"].written, [ALICE_PRIVATE.encode() + b"\n"])
        call["process"].end()
        self.successResultOf(d)

    def test_setPeersInOneRun(self):
        gone = publicKey(generatePrivateKey())
        d = self.client.setPeers(add=[Peer(ALICE_PUBLIC, ["10.0.0.2/32", "10.0.1.0/24"],
                                           endpoint="192.0.2.1:51820", keepalive=25)],
                                 remove=[gone])
        self.assertEqual(self.spawner.spawned[0]["args"][4:], [
            "wg", "set", "wg0", "peer", gone, "remove", "peer", ALICE_PUBLIC,
            "allowed-ips", "10.0.0.2/32,10.0.1.0/24", "endpoint", "192.0.2.1:51820",
            "persistent-keepalive", "25"])
        self.spawner.last.output(b"Unable to modify interface\n", fd=2)
        self.spawner.last.end(code=1)
        self.assertIn("Unable", str(self.failureResultOf(d, UAPIError).value))
