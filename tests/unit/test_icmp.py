"""
L{mnigs.system.icmp}: the packet code, and L{Pinger} over a fake raw socket with a
fake clock.  The real sockets are exercised in L{tests.mesh.test_icmp_real}.
"""

import errno
import socket
import struct

from hypothesis import given, settings, strategies as st
from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.logger import LogLevel, globalLogPublisher
from zope.interface.verify import verifyObject

from mnigs.system.icmp import (
    ICMP6_ECHO_REPLY,
    ICMP6_ECHO_REQUEST,
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    Pinger,
    buildEcho,
    internetChecksum,
    parseReply,
)
from mnigs.interfaces import IPinger

settings.register_profile("mnigs-icmp", derandomize=True, max_examples=500, deadline=None)
profile = settings.get_profile("mnigs-icmp")

identifiers = st.integers(0, 0xFFFF)
payloads = st.binary(max_size=64)


def ipv4Header(length, headerWords=5, protocol=socket.IPPROTO_ICMP):
    options = b"\x01" * (4 * (headerWords - 5))  # NOP options
    return (struct.pack("!BBHHHBBH4s4s", 0x40 | headerWords, 0, 4 * headerWords + length,
                        0, 0, 64, protocol, 0, bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1]))
            + options)


def asReply(request, family):
    """What the peer sends back for C{request}, as our raw socket reads it."""
    if family == socket.AF_INET6:
        return bytes([ICMP6_ECHO_REPLY]) + request[1:]
    message = bytes([ICMP_ECHO_REPLY, 0, 0, 0]) + request[4:]
    message = message[:2] + struct.pack("!H", internetChecksum(message)) + message[4:]
    return ipv4Header(len(message)) + message


class PacketTests(SynchronousTestCase):

    def test_knownIPv4Request(self):
        """The checksum is the ones' complement of 0x0800 + 0x1234 + 0x0001."""
        self.assertEqual(buildEcho(0x1234, 1, b""), bytes.fromhex("0800e5ca12340001"))

    def test_ipv6RequestLeavesTheChecksumToTheKernel(self):
        self.assertEqual(buildEcho(0x1234, 1, b"ab", socket.AF_INET6),
                         bytes.fromhex("8000000012340001") + b"ab")

    @settings(profile)
    @given(identifiers, identifiers, payloads)
    def test_ipv4ChecksumVerifies(self, identifier, sequence, payload):
        """Odd-length payloads included: the checksum pads with a zero byte."""
        packet = buildEcho(identifier, sequence, payload)
        self.assertEqual(packet[0], ICMP_ECHO_REQUEST)
        self.assertEqual(internetChecksum(packet), 0)
        self.assertEqual(packet[8:], payload)

    @settings(profile)
    @given(identifiers, identifiers, payloads, st.integers(5, 15))
    def test_ipv4ReplyBehindAnyHeaderLength(self, identifier, sequence, payload, words):
        reply = asReply(buildEcho(identifier, sequence, payload), socket.AF_INET)
        reply = ipv4Header(len(reply) - 20, words) + reply[20:]
        self.assertEqual(parseReply(reply, socket.AF_INET), (identifier, sequence))

    @settings(profile)
    @given(identifiers, identifiers, payloads)
    def test_ipv6Reply(self, identifier, sequence, payload):
        reply = asReply(buildEcho(identifier, sequence, payload, socket.AF_INET6),
                        socket.AF_INET6)
        self.assertEqual(parseReply(reply, socket.AF_INET6), (identifier, sequence))

    def test_requestsAreNotReplies(self):
        """
        Pinging a local address, the raw socket also reads our own request.
        """
        request = buildEcho(1, 2, b"x")
        self.assertIsNone(parseReply(ipv4Header(len(request)) + request, socket.AF_INET))
        self.assertIsNone(parseReply(buildEcho(1, 2, b"x", socket.AF_INET6), socket.AF_INET6))

    def test_otherICMPIgnored(self):
        unreachable = struct.pack("!BBH4x", 3, 1, internetChecksum(bytes([3, 1]) + bytes(6)))
        self.assertIsNone(parseReply(ipv4Header(8) + unreachable, socket.AF_INET))
        self.assertIsNone(parseReply(bytes([1, 4, 0, 0, 0, 0, 0, 0]), socket.AF_INET6))
        self.assertIsNone(parseReply(bytes([ICMP6_ECHO_REQUEST, 0, 0, 0, 0, 1, 0, 1]),
                                     socket.AF_INET6))

    def test_badChecksumIgnored(self):
        reply = bytearray(asReply(buildEcho(7, 8, b"payload"), socket.AF_INET))
        reply[-1] ^= 0xFF
        self.assertIsNone(parseReply(bytes(reply), socket.AF_INET))

    def test_nonzeroCodeIgnored(self):
        reply = bytearray(asReply(buildEcho(7, 8, b""), socket.AF_INET6))
        reply[1] = 1
        self.assertIsNone(parseReply(bytes(reply), socket.AF_INET6))

    def test_truncatedOrMislabelledIgnored(self):
        reply = asReply(buildEcho(7, 8, b""), socket.AF_INET)
        self.assertIsNone(parseReply(reply[:27], socket.AF_INET))
        self.assertIsNone(parseReply(b"\x45" + reply[1:9] + b"\x06" + reply[10:], socket.AF_INET))
        self.assertIsNone(parseReply(b"\x44" + reply[1:], socket.AF_INET))  # IHL 4
        self.assertIsNone(parseReply(b"\x65" + reply[1:], socket.AF_INET))  # version 6
        self.assertIsNone(parseReply(reply, socket.AF_UNIX))

    @settings(profile)
    @given(st.binary(max_size=100), st.sampled_from([socket.AF_INET, socket.AF_INET6]))
    def test_garbageNeverRaises(self, data, family):
        result = parseReply(data, family)
        if result is not None:
            identifier, sequence = result
            self.assertTrue(0 <= identifier <= 0xFFFF and 0 <= sequence <= 0xFFFF)

    @settings(profile)
    @given(st.integers(0, 15), st.binary(max_size=80))
    def test_garbageBehindAnIPv4HeaderNeverRaises(self, words, data):
        parseReply(bytes([0x40 | words]) + bytes(8) + b"\x01" + data, socket.AF_INET)


class FakeRawSocket:
    """A non-blocking raw socket: records what is sent, reads from a queue."""

    def __init__(self, family, device, source):
        self.family = family
        self.device = device
        self.source = source
        self.sent = []
        self.incoming = []
        self.closed = False
        self.sendError = None

    def fileno(self):
        return -1 if self.closed else 99

    def sendto(self, data, address):
        if self.sendError is not None:
            raise self.sendError
        self.sent.append((data, address))
        return len(data)

    def recvfrom(self, size):
        if not self.incoming:
            raise BlockingIOError(errno.EAGAIN, "no data")
        item = self.incoming.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def close(self):
        self.closed = True


class PingerTests(SynchronousTestCase):

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.sockets = []
        self.pinger = Pinger(self.reactor, device="mesh0", sourceAddress="10.0.0.2",
                             socketFactory=self.openSocket)

    def openSocket(self, family, device, source):
        sock = FakeRawSocket(family, device, source)
        self.sockets.append(sock)
        return sock

    def reader(self):
        [reader] = self.reactor.getReaders()
        return reader

    def answer(self, index=-1, source="10.0.0.1", sock=None, transform=None):
        """Have the peer answer the C{index}-th request and wake the reader."""
        sock = sock or self.sockets[0]
        request, _ = sock.sent[index]
        reply = asReply(request, sock.family)
        if transform is not None:
            reply = transform(reply)
        sock.incoming.append((reply, (source, 0)))
        [reader] = [r for r in self.reactor.getReaders() if r.socket is sock]
        reader.doRead()

    def test_interface(self):
        verifyObject(IPinger, self.pinger)

    def test_replyGivesTheRoundTripTime(self):
        d = self.pinger.ping("10.0.0.1", 0.75)
        [sock] = self.sockets
        self.assertEqual((sock.family, sock.device, str(sock.source)),
                         (socket.AF_INET, "mesh0", "10.0.0.2"))
        [(packet, address)] = sock.sent
        self.assertEqual(address, ("10.0.0.1", 0))
        self.assertEqual(parseReply(asReply(packet, socket.AF_INET), socket.AF_INET),
                         (self.pinger.identifier, struct.unpack("!H", packet[6:8])[0]))
        self.assertIs(self.reader().socket, sock)
        verifyObject(IReadDescriptor, self.reader())
        self.reactor.advance(0.125)
        self.assertNoResult(d)
        self.answer()
        self.assertEqual(self.successResultOf(d), 0.125)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_timeoutGivesNone(self):
        d = self.pinger.ping("10.0.0.1", 0.75)
        self.reactor.advance(0.74)
        self.assertNoResult(d)
        self.reactor.advance(0.01)
        self.assertIsNone(self.successResultOf(d))
        self.answer()  # a late reply is ignored
        self.assertEqual(self.pinger._pending, {})

    def test_sequenceNumbersIncrease(self):
        for _ in range(3):
            self.pinger.ping("10.0.0.1", 1)
        sequences = [struct.unpack("!H", p[6:8])[0] for p, _ in self.sockets[0].sent]
        self.assertEqual(sequences, [(sequences[0] + i) & 0xFFFF for i in range(3)])
        self.assertEqual(len(self.sockets), 1)

    def test_repliesMatchTheirRequests(self):
        first = self.pinger.ping("10.0.0.1", 1)
        second = self.pinger.ping("10.0.0.1", 1)
        self.reactor.advance(0.5)
        self.answer(1)
        self.assertNoResult(first)
        self.assertEqual(self.successResultOf(second), 0.5)

    def test_sequenceWrapsAndSkipsNumbersInFlight(self):
        self.pinger._sequence = 0xFFFE
        self.pinger.ping("10.0.0.1", 1)
        self.pinger._sequence = 0xFFFE
        self.pinger.ping("10.0.0.1", 1)
        sequences = [struct.unpack("!H", p[6:8])[0] for p, _ in self.sockets[0].sent]
        self.assertEqual(sequences, [0xFFFF, 0])

    def test_foreignRepliesIgnored(self):
        d = self.pinger.ping("10.0.0.1", 1)
        other = (self.pinger.identifier + 1) & 0xFFFF

        def otherIdentifier(reply):
            message = bytearray(reply[20:])
            message[4:6] = struct.pack("!H", other)
            message[2:4] = b"\x00\x00"
            message[2:4] = struct.pack("!H", internetChecksum(bytes(message)))
            return reply[:20] + bytes(message)

        self.answer(transform=otherIdentifier)
        self.answer(source="10.0.0.9")
        self.answer(transform=lambda reply: reply[:-1] + bytes([reply[-1] ^ 1]))
        self.sockets[0].incoming.append((b"garbage", ("10.0.0.1", 0)))
        self.reader().doRead()
        self.assertNoResult(d)
        self.answer()
        self.successResultOf(d)

    def test_ipv6UsesItsOwnSocket(self):
        v4 = self.pinger.ping("10.0.0.1", 1)
        v6 = self.pinger.ping("fd00::1", 1)
        self.assertEqual([s.family for s in self.sockets], [socket.AF_INET, socket.AF_INET6])
        sock6 = self.sockets[1]
        self.assertIsNone(sock6.source, "the IPv4 source address is not bound on IPv6")
        [(packet, address)] = sock6.sent
        self.assertEqual((packet[0], packet[2:4]), (ICMP6_ECHO_REQUEST, b"\x00\x00"))
        self.assertEqual(address, ("fd00::1", 0))
        self.assertEqual(len(self.reactor.getReaders()), 2)
        self.reactor.advance(0.25)
        self.answer(source="fd00::1", sock=sock6)
        self.assertEqual(self.successResultOf(v6), 0.25)
        self.assertNoResult(v4)

    def test_scopedAddress(self):
        d = self.pinger.ping("fe80::1%mesh0", 1)
        sock6 = self.sockets[0]
        self.assertEqual(sock6.sent[0][1], ("fe80::1%mesh0", 0))
        self.answer(source="fe80::1%mesh0", sock=sock6)
        self.successResultOf(d)

    def test_readerDrainsTheSocket(self):
        first = self.pinger.ping("10.0.0.1", 1)
        second = self.pinger.ping("10.0.0.1", 1)
        sock = self.sockets[0]
        for request, _ in sock.sent:
            sock.incoming.append((asReply(request, sock.family), ("10.0.0.1", 0)))
        self.reader().doRead()
        self.successResultOf(first)
        self.successResultOf(second)

    def test_aReplyThatClosesThePingerEndsTheRead(self):
        """
        The uplink check closes its pinger when a round's first answer
        comes, inside the reader's loop: the loop stops there, with no
        read of the closed socket (it logged "ICMP socket read failed:
        Bad file descriptor" every check before).
        """
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        first = self.pinger.ping("10.0.0.1", 1)
        second = self.pinger.ping("10.0.0.1", 1)
        first.addCallback(lambda _: self.pinger.close())
        sock = self.sockets[0]
        for request, _ in sock.sent:
            sock.incoming.append((asReply(request, sock.family), ("10.0.0.1", 0)))
        sock.recvfrom = lambda size, recv=sock.recvfrom: (
            recv(size) if not sock.closed else self.fail("read a closed socket"))
        self.reader().doRead()
        self.successResultOf(first)
        self.failureResultOf(second, CancelledError)
        self.assertEqual([e for e in events if e.get("log_level") == LogLevel.warn], [])

    def test_readErrorKeepsTheReader(self):
        d = self.pinger.ping("10.0.0.1", 1)
        self.sockets[0].incoming.append(OSError(errno.ENOBUFS, "No buffer space"))
        self.reader().doRead()
        self.answer()
        self.successResultOf(d)

    def test_sendErrorFails(self):
        self.pinger.ping("10.0.0.1", 1)
        self.sockets[0].sendError = OSError(errno.ENETUNREACH, "Network is unreachable")
        failure = self.failureResultOf(self.pinger.ping("10.0.0.3", 1), OSError)
        self.assertEqual(failure.value.errno, errno.ENETUNREACH)
        self.assertEqual(len(self.pinger._pending), 1)

    def test_socketErrorFails(self):
        def refuse(family, device, source):
            raise PermissionError(errno.EPERM, "Operation not permitted")
        pinger = Pinger(self.reactor, socketFactory=refuse)
        self.failureResultOf(pinger.ping("10.0.0.1", 1), PermissionError)
        self.failureResultOf(pinger.ping("not an address", 1), ValueError)
        self.assertEqual(self.reactor.getReaders(), [])

    def test_cancelForgets(self):
        d = self.pinger.ping("10.0.0.1", 1)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.answer()

    def test_closeCancelsAndReleases(self):
        d = self.pinger.ping("10.0.0.1", 1)
        self.pinger.close()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.reactor.getReaders(), [])
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertTrue(self.sockets[0].closed)
        self.pinger.ping("10.0.0.1", 1)
        self.assertEqual(len(self.sockets), 2, "a later ping opens a new socket")

    def test_connectionLostDropsTheSocket(self):
        """The reactor calls connectionLost on its readers at shutdown."""
        self.pinger.ping("10.0.0.1", 1)
        reader = self.reader()
        self.reactor.removeReader(reader)
        reader.connectionLost(None)
        self.assertTrue(self.sockets[0].closed)
        self.pinger.ping("10.0.0.1", 1)
        self.assertEqual(len(self.sockets), 2)

    def test_identifierIsRandomPerPinger(self):
        identifiers = {Pinger(self.reactor).identifier for _ in range(20)}
        self.assertGreater(len(identifiers), 1)
