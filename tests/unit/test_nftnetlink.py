"""
L{mnigs.system.nftnetlink}: the batch it builds (parsed back here), ack handling
with a fake socket, and L{mnigs.system.nft.NftAccess} using it.
"""

import errno
import ipaddress
import struct

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mnigs.system import nftnetlink as nl
from mnigs.system.admission import Admission
from mnigs.system.nft import NftAccess, NftError

ip = ipaddress.ip_address
MAC = "02:00:00:00:00:01"


def tunnel(address, interface="wg0"):
    return Admission(ip(address), interface)


def element(setName, *parts):
    return (setName, tuple(ip(parts[0]) if i == 0 else p for i, p in enumerate(parts)))


def parseAttributes(data):
    attributes = []
    offset = 0
    while offset < len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        attributes.append((kind, data[offset + 4:offset + length]))
        offset += (length + 3) & ~3
    return attributes


def parseBatch(data):
    """
    [(type, flags, seq, family, res_id, attributes)] of a batch.
    """
    messages = []
    offset = 0
    while offset < len(data):
        length, kind, flags, seq, pid = struct.unpack_from("=IHHII", data, offset)
        family, version, resId = struct.unpack_from("!BBH", data, offset + 16)
        assert version == 0 and pid == 0
        messages.append((kind, flags, seq, family, resId,
                         parseAttributes(data[offset + 20:offset + length])))
        offset += (length + 3) & ~3
    return messages


def elementsOf(attributes):
    byKind = dict(attributes)
    table = byKind[nl.NFTA_SET_ELEM_LIST_TABLE]
    setName = byKind[nl.NFTA_SET_ELEM_LIST_SET]
    values = []
    for kind, element in parseAttributes(byKind[nl.NFTA_SET_ELEM_LIST_ELEMENTS | nl.NLA_F_NESTED]):
        assert kind == nl.NFTA_LIST_ELEM | nl.NLA_F_NESTED
        [(keyKind, key)] = parseAttributes(element)
        assert keyKind == nl.NFTA_SET_ELEM_KEY | nl.NLA_F_NESTED
        [(valueKind, value)] = parseAttributes(key)
        assert valueKind == nl.NFTA_DATA_VALUE
        values.append(value)
    return table, setName, values


def ack(seq, error=0):
    body = struct.pack("=i", error) + struct.pack("=IHHII", 16, 0, 0, seq, 0)
    return struct.pack("=IHHII", 16 + len(body), nl.NLMSG_ERROR, 0, seq, 0) + body


class BatchTests(SynchronousTestCase):
    def test_addTouchedThenDeleteDenied(self):
        changes = {element("clients4", "10.0.0.2"): True, element("clients4", "10.0.0.3"): False,
                   element("clients6", "2001:db8::9"): False}
        batch, acked = nl.changesBatch("mnigs", changes, 100)
        messages = parseBatch(batch)
        kinds = [m[0] for m in messages]
        elementKind = nl.NFNL_SUBSYS_NFTABLES << 8
        self.assertEqual(kinds, [nl.NFNL_MSG_BATCH_BEGIN,
                                 elementKind | nl.NFT_MSG_NEWSETELEM,
                                 elementKind | nl.NFT_MSG_DELSETELEM,
                                 elementKind | nl.NFT_MSG_NEWSETELEM,
                                 elementKind | nl.NFT_MSG_DELSETELEM,
                                 nl.NFNL_MSG_BATCH_END])
        self.assertEqual([m[2] for m in messages], list(range(100, 106)))
        self.assertEqual(acked, [101, 102, 103, 104])
        begin, end = messages[0], messages[-1]
        for frame in (begin, end):
            self.assertEqual(frame[4], nl.NFNL_SUBSYS_NFTABLES)
            self.assertEqual(frame[1], nl.NLM_F_REQUEST)
        self.assertEqual(elementsOf(messages[1][5]),
                         (b"mnigs\0", b"clients4\0", [ip("10.0.0.2").packed, ip("10.0.0.3").packed]))
        self.assertEqual(messages[1][1], nl.NLM_F_REQUEST | nl.NLM_F_ACK | nl.NLM_F_CREATE)
        self.assertEqual(elementsOf(messages[2][5]),
                         (b"mnigs\0", b"clients4\0", [ip("10.0.0.3").packed]))
        self.assertEqual(messages[2][1], nl.NLM_F_REQUEST | nl.NLM_F_ACK)
        self.assertEqual(elementsOf(messages[4][5]),
                         (b"mnigs\0", b"clients6\0", [ip("2001:db8::9").packed]))
        for m in messages[1:-1]:
            self.assertEqual(m[3], nl.NFPROTO_INET)

    def test_concatenatedKeysArePaddedToRegisters(self):
        """
        C{ADDRESS . "IFNAME"} and C{ADDRESS . "IFNAME" . MAC} as nft lays
        them out (what C{nft --debug=netlink add element} shows): each part
        padded to four bytes, the name to IFNAMSIZ.
        """
        link = Admission(ip("10.0.0.3"), "m1", "02:00:00:00:00:02")
        self.assertEqual(nl.elementKey(link.key()).hex(),
                         "0a000003" + "6d31" + "00" * 14 + "020000000002" + "0000")
        self.assertEqual(len(nl.elementKey(Admission(ip("2001:db8::1"), "wg0", MAC).key())), 40)
        self.assertEqual(nl.elementKey(tunnel("100.64.0.2").key()),
                         ip("100.64.0.2").packed + b"wg0" + b"\0" * 13)
        batch, _ = nl.changesBatch("mnigs", {("tunnel4", tunnel("100.64.0.2").key()): True,
                                             ("link4", link.key()): False}, 1)
        messages = parseBatch(batch)
        self.assertEqual([elementsOf(m[5])[1] for m in messages[1:-1]],
                         [b"tunnel4\0", b"link4\0", b"link4\0"])
        self.assertEqual(elementsOf(messages[2][5])[2], [nl.elementKey(link.key())])

    def test_keyPartsAreChecked(self):
        for bad in (("10.0.0.1",), (ip("10.0.0.1"), "x" * 16), (ip("10.0.0.1"), ""),
                    (ip("10.0.0.1"), "wg0", b"\x02\0\0"), (ip("10.0.0.1"), 7)):
            self.assertRaises((TypeError, ValueError), nl.elementKey, bad)

    def test_bigChangesAreSplit(self):
        many = {element("clients4", str(ip("100.64.0.0") + n)): True for n in range(2500)}
        batch, acked = nl.changesBatch("t", many, 1)
        messages = parseBatch(batch)
        self.assertEqual(len(acked), 3)
        self.assertEqual(sum(len(elementsOf(m[5])[2]) for m in messages[1:-1]), 2500)

    def test_theLargestElementsFitAMessage(self):
        many = {("link6", Admission(ip("2001:db8::") + n, "a" * 15, MAC).key()): True
                for n in range(nl.MAX_ELEMENTS_PER_MESSAGE)}
        batch, acked = nl.changesBatch("t", many, 1)
        self.assertEqual(len(acked), 1)
        self.assertEqual(len(elementsOf(parseBatch(batch)[1][5])[2]), nl.MAX_ELEMENTS_PER_MESSAGE)

    def test_parseAcks(self):
        self.assertEqual(nl.parseAcks(ack(5) + ack(6, -errno.ENOENT)),
                         [(5, 0), (6, -errno.ENOENT)])


class FakeSocket:
    def __init__(self, answer=None, fail=None):
        self.sent = []
        self.answer = answer
        self.fail = fail
        self.closed = False
        self.sendBuffer = 212992
        self.options = []

    def settimeout(self, timeout):
        pass

    def getsockopt(self, level, option):
        return self.sendBuffer

    def setsockopt(self, level, option, value):
        self.options.append((option, value))
        self.sendBuffer = 2 * value  # as Linux does

    def bind(self, address):
        pass

    def sendto(self, data, address):
        if self.fail is not None:
            raise self.fail
        self.sent.append(data)

    def recv(self, size):
        acked = [m[2] for m in parseBatch(self.sent[-1]) if m[1] & nl.NLM_F_ACK]
        return b"".join(ack(seq, self.answer(seq) if self.answer else 0) for seq in acked)

    def close(self):
        self.closed = True


class ApplyTests(SynchronousTestCase):
    def elements(self, sock):
        opened = []

        def openSocket(netns):
            opened.append(netns)
            return sock

        return nl.NftSetElements(openSocket=openSocket), opened

    def test_appliedWhenEveryMessageIsAcked(self):
        sock = FakeSocket()
        elements, opened = self.elements(sock)
        elements.apply("mnigs", {element("clients4", "10.0.0.1"): True})
        elements.apply("mnigs", {element("clients4", "10.0.0.1"): False})
        self.assertEqual(opened, [None])  # one socket for all
        self.assertEqual(len(sock.sent), 2)
        first, second = (parseBatch(b) for b in sock.sent)
        self.assertGreater(second[0][2], first[-1][2])  # sequence numbers move on

    def test_aBigBatchGrowsTheSendBuffer(self):
        sock = FakeSocket()
        elements, _ = self.elements(sock)
        elements.apply("mnigs", {element("clients4", "10.0.0.1"): True})
        self.assertEqual(sock.options, [])
        many = {("link6", Admission(ip("2001:db8::") + n, "m0", MAC).key()): False
                for n in range(3000)}
        elements.apply("mnigs", many)
        [(option, size)] = sock.options
        self.assertEqual((option, size), (nl.SO_SNDBUFFORCE, len(sock.sent[-1])))
        self.assertGreater(size, 212992)

    def test_refusalIsAnNftError(self):
        elements, _ = self.elements(FakeSocket(answer=lambda seq: -errno.ENOENT))
        error = self.assertRaises(NftError, elements.apply, "mnigs",
                                  {element("clients4", "10.0.0.1"): True})
        self.assertIn("ENOENT", error.stderr)

    def test_brokenExchangeReopens(self):
        sock = FakeSocket(fail=OSError(errno.ENOBUFS, "no buffer space"))
        elements, opened = self.elements(sock)
        self.assertRaises(NftError, elements.apply, "mnigs",
                                  {element("clients4", "10.0.0.1"): True})
        self.assertTrue(sock.closed)
        sock.fail = None
        elements.apply("mnigs", {element("clients4", "10.0.0.1"): True})
        self.assertEqual(opened, [None, None])

    def test_noSocketIsUnavailable(self):
        def openSocket(netns):
            raise PermissionError(errno.EPERM, "not permitted")

        elements = nl.NftSetElements(openSocket=openSocket)
        self.assertRaises(nl.NetlinkUnavailable, elements.apply, "mnigs",
                                  {element("clients4", "10.0.0.1"): True})

    def test_nothingToDo(self):
        sock = FakeSocket()
        elements, opened = self.elements(sock)
        elements.apply("mnigs", {})
        self.assertEqual(opened, [])


class RecordingRunner:
    def __init__(self):
        self.scripts = []

    def apply(self, script):
        self.scripts.append(script)
        d = Deferred()
        d.callback(None)
        return d


class RecordingElements:
    def __init__(self, unavailable=False):
        self.applied = []
        self.unavailable = unavailable

    def apply(self, table, changes):
        if self.unavailable:
            raise nl.NetlinkUnavailable("no netlink here")
        self.applied.append((table, dict(changes)))


class NftAccessOverNetlinkTests(SynchronousTestCase):
    def test_changesGoOverNetlinkTheTableWithNft(self):
        clock, runner, elements = Clock(), RecordingRunner(), RecordingElements()
        access = NftAccess(clock, runner, "eth0", elements=elements)
        installed = access.install([tunnel("10.0.0.1")])
        d1, d2 = access.allow(tunnel("10.0.0.2")), access.deny(tunnel("10.0.0.1"))
        clock.advance(0)
        self.successResultOf(installed)
        self.successResultOf(d1)
        self.successResultOf(d2)
        self.assertEqual(len(runner.scripts), 1)
        self.assertTrue(runner.scripts[0].startswith("table inet mnigs {}"))
        self.assertEqual(elements.applied, [("mnigs", {
            element("tunnel4", "10.0.0.2", "wg0"): True, element("clients4", "10.0.0.2"): True,
            element("tunnel4", "10.0.0.1", "wg0"): False, element("clients4", "10.0.0.1"): False})])

    def test_withoutNetlinkNftDoesItAll(self):
        clock, runner = Clock(), RecordingRunner()
        access = NftAccess(clock, runner, "eth0", elements=RecordingElements(unavailable=True))
        d = access.allow(tunnel("10.0.0.2"))
        clock.advance(0)
        self.successResultOf(d)
        self.assertEqual(runner.scripts, ["add element inet mnigs clients4 { 10.0.0.2 }\n"
                                          'add element inet mnigs tunnel4 { 10.0.0.2 . "wg0" }\n'])
        access.deny(tunnel("10.0.0.2"))
        clock.advance(0)
        self.assertEqual(len(runner.scripts), 2)

    def test_refusalReachesTheCallers(self):
        class Refusing(RecordingElements):
            def apply(self, table, changes):
                raise NftError(["netlink"], None, "ENOENT: No such file or directory")

        clock = Clock()
        access = NftAccess(clock, RecordingRunner(), "eth0", elements=Refusing())
        d = access.allow(tunnel("10.0.0.2"))
        clock.advance(0)
        self.failureResultOf(d, NftError)
