"""
L{mnigs.nftnetlink}: the batch it builds (parsed back here), ack handling
with a fake socket, and L{mnigs.nft.NftAccess} using it.
"""

import errno
import ipaddress
import struct

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mnigs import nftnetlink as nl
from mnigs.nft import NftAccess, NftError

ip = ipaddress.ip_address


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
        values.append(ip(value))
    return table, setName, values


def ack(seq, error=0):
    body = struct.pack("=i", error) + struct.pack("=IHHII", 16, 0, 0, seq, 0)
    return struct.pack("=IHHII", 16 + len(body), nl.NLMSG_ERROR, 0, seq, 0) + body


class BatchTests(SynchronousTestCase):
    def test_addTouchedThenDeleteDenied(self):
        changes = {ip("10.0.0.2"): True, ip("10.0.0.3"): False, ip("2001:db8::9"): False}
        batch, acked = nl.changesBatch("mnigs", changes, 100)
        messages = parseBatch(batch)
        kinds = [m[0] for m in messages]
        element = nl.NFNL_SUBSYS_NFTABLES << 8
        self.assertEqual(kinds, [nl.NFNL_MSG_BATCH_BEGIN,
                                 element | nl.NFT_MSG_NEWSETELEM, element | nl.NFT_MSG_DELSETELEM,
                                 element | nl.NFT_MSG_NEWSETELEM, element | nl.NFT_MSG_DELSETELEM,
                                 nl.NFNL_MSG_BATCH_END])
        self.assertEqual([m[2] for m in messages], list(range(100, 106)))
        self.assertEqual(acked, [101, 102, 103, 104])
        begin, end = messages[0], messages[-1]
        for frame in (begin, end):
            self.assertEqual(frame[4], nl.NFNL_SUBSYS_NFTABLES)
            self.assertEqual(frame[1], nl.NLM_F_REQUEST)
        self.assertEqual(elementsOf(messages[1][5]),
                         (b"mnigs\0", b"clients4\0", [ip("10.0.0.2"), ip("10.0.0.3")]))
        self.assertEqual(messages[1][1], nl.NLM_F_REQUEST | nl.NLM_F_ACK | nl.NLM_F_CREATE)
        self.assertEqual(elementsOf(messages[2][5]), (b"mnigs\0", b"clients4\0", [ip("10.0.0.3")]))
        self.assertEqual(messages[2][1], nl.NLM_F_REQUEST | nl.NLM_F_ACK)
        self.assertEqual(elementsOf(messages[4][5]),
                         (b"mnigs\0", b"clients6\0", [ip("2001:db8::9")]))
        for m in messages[1:-1]:
            self.assertEqual(m[3], nl.NFPROTO_INET)

    def test_bigChangesAreSplit(self):
        many = {ip("100.64.0.0") + n: True for n in range(2500)}
        batch, acked = nl.changesBatch("t", many, 1)
        messages = parseBatch(batch)
        self.assertEqual(len(acked), 3)
        self.assertEqual(sum(len(elementsOf(m[5])[2]) for m in messages[1:-1]), 2500)

    def test_parseAcks(self):
        self.assertEqual(nl.parseAcks(ack(5) + ack(6, -errno.ENOENT)),
                         [(5, 0), (6, -errno.ENOENT)])


class FakeSocket:
    def __init__(self, answer=None, fail=None):
        self.sent = []
        self.answer = answer
        self.fail = fail
        self.closed = False

    def settimeout(self, timeout):
        pass

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
        elements.apply("mnigs", {ip("10.0.0.1"): True})
        elements.apply("mnigs", {ip("10.0.0.1"): False})
        self.assertEqual(opened, [None])  # one socket for all
        self.assertEqual(len(sock.sent), 2)
        first, second = (parseBatch(b) for b in sock.sent)
        self.assertGreater(second[0][2], first[-1][2])  # sequence numbers move on

    def test_refusalIsAnNftError(self):
        elements, _ = self.elements(FakeSocket(answer=lambda seq: -errno.ENOENT))
        error = self.assertRaises(NftError, elements.apply, "mnigs", {ip("10.0.0.1"): True})
        self.assertIn("ENOENT", error.stderr)

    def test_brokenExchangeReopens(self):
        sock = FakeSocket(fail=OSError(errno.ENOBUFS, "no buffer space"))
        elements, opened = self.elements(sock)
        self.assertRaises(NftError, elements.apply, "mnigs", {ip("10.0.0.1"): True})
        self.assertTrue(sock.closed)
        sock.fail = None
        elements.apply("mnigs", {ip("10.0.0.1"): True})
        self.assertEqual(opened, [None, None])

    def test_noSocketIsUnavailable(self):
        def openSocket(netns):
            raise PermissionError(errno.EPERM, "not permitted")

        elements = nl.NftSetElements(openSocket=openSocket)
        self.assertRaises(nl.NetlinkUnavailable, elements.apply, "mnigs", {ip("10.0.0.1"): True})

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
        installed = access.install([ip("10.0.0.1")])
        d1, d2 = access.allow(ip("10.0.0.2")), access.deny(ip("10.0.0.1"))
        clock.advance(0)
        self.successResultOf(installed)
        self.successResultOf(d1)
        self.successResultOf(d2)
        self.assertEqual(len(runner.scripts), 1)
        self.assertTrue(runner.scripts[0].startswith("table inet mnigs {}"))
        self.assertEqual(elements.applied, [("mnigs", {ip("10.0.0.2"): True, ip("10.0.0.1"): False})])

    def test_withoutNetlinkNftDoesItAll(self):
        clock, runner = Clock(), RecordingRunner()
        access = NftAccess(clock, runner, "eth0", elements=RecordingElements(unavailable=True))
        d = access.allow(ip("10.0.0.2"))
        clock.advance(0)
        self.successResultOf(d)
        self.assertEqual(runner.scripts, ["add element inet mnigs clients4 { 10.0.0.2 }\n"])
        access.deny(ip("10.0.0.2"))
        clock.advance(0)
        self.assertEqual(len(runner.scripts), 2)

    def test_refusalReachesTheCallers(self):
        class Refusing(RecordingElements):
            def apply(self, table, changes):
                raise NftError(["netlink"], None, "ENOENT: No such file or directory")

        clock = Clock()
        access = NftAccess(clock, RecordingRunner(), "eth0", elements=Refusing())
        d = access.allow(ip("10.0.0.2"))
        clock.advance(0)
        self.failureResultOf(d, NftError)
