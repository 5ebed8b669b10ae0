# -*- test-case-name: tests.unit.test_icmp,tests.mesh.test_icmp_real -*-
"""
ICMP echo ("ping") over raw sockets, read by the reactor.

The client probes its gateway about four times a second, so spawning
C{ping(8)} per probe is out of the question: one raw socket per address
family stays open for the life of a L{Pinger} and the reactor reads it like
any other file descriptor.  Raw sockets need root (or CAP_NET_RAW); mnigs
runs as root anyway to manage routes and tunnels.

The packet code (L{buildEcho}, L{parseReply}) is pure and never touches a
socket, so it can be tested with arbitrary bytes.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import struct
from dataclasses import dataclass
from typing import Callable

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall, IReadDescriptor
from twisted.logger import Logger
from zope.interface import implementer

from mnigs.interfaces import IPinger

log = Logger()

ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8
ICMP6_ECHO_REQUEST = 128
ICMP6_ECHO_REPLY = 129

# Linux socket options Python does not name.  Both filters are bit masks in
# which a set bit blocks that ICMP type: only echo replies wake us up, not
# every ICMP packet the host sees (a raw ICMP socket gets them all,
# including our own requests looped back when pinging a local address).
_SOL_RAW = 255
_ICMP_FILTER = 1
_ICMP6_FILTER = 1

_PAYLOAD = b"mnigs-health-\x00\x00\x00"

# A reader drains at most this many datagrams per wake-up so that a flood of
# ICMP cannot starve the rest of the reactor.
_READS_PER_WAKEUP = 64

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def internetChecksum(data: bytes) -> int:
    """
    The RFC 1071 ones'-complement checksum.  Over a packet whose checksum
    field is already filled in it comes out as 0.
    """
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def buildEcho(identifier: int, sequence: int, payload: bytes = b"",
              family: int = socket.AF_INET) -> bytes:
    """
    An ICMP (C{AF_INET}) or ICMPv6 (C{AF_INET6}) echo request.

    Only the IPv4 one carries a checksum: the ICMPv6 checksum covers a
    pseudo-header with the source address, which we do not know before the
    kernel routes the packet, and Linux always computes it itself on raw
    ICMPv6 sockets (RFC 3542 section 3.1), so we leave the field zero.
    """
    if family == socket.AF_INET6:
        return struct.pack("!BBHHH", ICMP6_ECHO_REQUEST, 0, 0, identifier, sequence) + payload
    header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, identifier, sequence)
    checksum = internetChecksum(header + payload)
    return header[:2] + struct.pack("!H", checksum) + header[4:] + payload


def parseReply(data: bytes, family: int) -> tuple[int, int] | None:
    """
    C{(identifier, sequence)} if C{data}, as read from a raw socket of
    C{family}, is an echo reply; C{None} for anything else, never an
    exception: whatever arrives on a raw socket is the network's choice.

    IPv4 raw sockets deliver the IP header first (its length is in the IHL
    field, options included) and the kernel does not check the ICMP
    checksum before raw delivery, so we do.  IPv6 raw sockets deliver the
    ICMPv6 message alone, its checksum already verified by the kernel.
    """
    if family == socket.AF_INET:
        if len(data) < 20 or data[0] >> 4 != 4 or data[9] != socket.IPPROTO_ICMP:
            return None
        headerLength = (data[0] & 0x0F) * 4
        if headerLength < 20:
            return None
        message = data[headerLength:]
        if len(message) < 8 or message[0] != ICMP_ECHO_REPLY or message[1] != 0:
            return None
        if internetChecksum(message) != 0:
            return None
    elif family == socket.AF_INET6:
        message = data
        if len(message) < 8 or message[0] != ICMP6_ECHO_REPLY or message[1] != 0:
            return None
    else:
        return None
    identifier, sequence = struct.unpack("!HH", message[4:8])
    return identifier, sequence


def openEchoSocket(family: int, device: str | None = None,
                   sourceAddress: IPAddress | None = None) -> socket.socket:
    """
    A non-blocking raw ICMP or ICMPv6 socket that only receives echo
    replies, optionally bound to a network device (C{SO_BINDTODEVICE}: the
    probes leave, and replies are only accepted, on that device whatever
    the routing table says) and to a source address.
    """
    protocol = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
    sock = socket.socket(family, socket.SOCK_RAW, protocol)
    try:
        sock.setblocking(False)
        if device is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
        try:
            if family == socket.AF_INET:
                blocked = 0xFFFFFFFF & ~(1 << ICMP_ECHO_REPLY)
                sock.setsockopt(_SOL_RAW, _ICMP_FILTER, struct.pack("=I", blocked))
            else:
                words = [0xFFFFFFFF] * 8
                words[ICMP6_ECHO_REPLY >> 5] &= ~(1 << (ICMP6_ECHO_REPLY & 31))
                sock.setsockopt(socket.IPPROTO_ICMPV6, _ICMP6_FILTER, struct.pack("=8I", *words))
        except OSError:
            pass  # only an optimisation: parseReply filters anyway
        if sourceAddress is not None:
            sock.bind((str(sourceAddress), 0))
    except BaseException:
        sock.close()
        raise
    return sock


def _unscoped(address: object) -> IPAddress:
    # Replies come from "fe80::1%eth0" when we pinged "fe80::1%eth0", or
    # from "fe80::1%eth0" when we pinged "fe80::1" bound to eth0: compare
    # addresses, not scopes.
    return ipaddress.ip_address(str(address).split("%", 1)[0])


@implementer(IReadDescriptor)
class _EchoReader:
    """
    One raw socket registered with the reactor; hands every datagram to
    its owner.
    """

    def __init__(self, sock, family: int, received: Callable, lost: Callable) -> None:
        self.socket = sock
        self.family = family
        self._received = received
        self._lost = lost

    def fileno(self) -> int:
        return self.socket.fileno()

    def logPrefix(self) -> str:
        return "Pinger"

    def doRead(self) -> None:
        for _ in range(_READS_PER_WAKEUP):
            try:
                data, source = self.socket.recvfrom(65535)
            except BlockingIOError:
                return
            except OSError as e:
                log.warn("ICMP socket read failed: {error}", error=e)
                return
            self._received(self.family, data, source[0])
            if self.socket.fileno() < 0:
                # What the reply completed closed the pinger (a check's
                # round ends at its first answer): nothing more to read.
                return

    def connectionLost(self, reason) -> None:
        self.socket.close()
        self._lost(self)


@dataclass
class _Probe:
    address: IPAddress
    family: int
    sentAt: float
    deferred: Deferred
    timeout: IDelayedCall | None = None


@implementer(IPinger)
class Pinger:
    """
    Sends ICMP echo requests and matches the replies.

    Each Pinger has a random identifier, so that several of them (and
    C{ping(8)}) can share a host: a raw ICMP socket sees every echo reply,
    and the identifier tells ours apart.  Sequence numbers increase with
    every probe, across both address families.  Sockets are opened on the
    first probe of their family: a host without IPv6 only fails IPv6
    probes.

    @param device: bind the sockets to this network device.
    @param sourceAddress: bind the socket of the matching family to this
        address (the other family's socket stays unbound).
    @param socketFactory: C{(family, device, sourceAddress) -> socket},
        for tests.
    """

    def __init__(self, reactor, device: str | None = None,
                 sourceAddress: str | None = None,
                 socketFactory: Callable = openEchoSocket) -> None:
        self._reactor = reactor
        self._device = device
        self._source = None if sourceAddress is None else ipaddress.ip_address(sourceAddress)
        self._socketFactory = socketFactory
        self.identifier = secrets.randbelow(0x10000)
        self._sequence = secrets.randbelow(0x10000)
        self._readers: dict[int, _EchoReader] = {}
        self._pending: dict[int, _Probe] = {}

    def ping(self, address, timeout: float) -> Deferred:
        """
        Send one echo request to C{address} (text or an L{ipaddress}
        address; IPv6 may carry a C{%scope}).  The Deferred fires with the
        round-trip time in seconds, or C{None} if no reply came within
        C{timeout} seconds; it fails if the request could not be sent
        (no route, no permission to open a raw socket...).  Cancelling it
        forgets the probe.
        """
        try:
            address = ipaddress.ip_address(address)
            family = socket.AF_INET if address.version == 4 else socket.AF_INET6
            reader = self._reader(family)
        except Exception:
            return fail()
        sequence = self._nextSequence()
        probe = _Probe(address, family, self._reactor.seconds(),
                       Deferred(lambda d: self._forget(sequence)))
        self._pending[sequence] = probe
        try:
            reader.socket.sendto(buildEcho(self.identifier, sequence, _PAYLOAD, family),
                                 (str(address), 0))
        except OSError:
            del self._pending[sequence]
            return fail()
        probe.timeout = self._reactor.callLater(timeout, self._timedOut, sequence)
        return probe.deferred

    def close(self) -> None:
        """
        Cancel every outstanding probe and close the sockets.  A later
        C{ping} opens them again.
        """
        for probe in list(self._pending.values()):
            probe.deferred.cancel()
        for reader in list(self._readers.values()):
            self._reactor.removeReader(reader)
            reader.connectionLost(None)

    def _reader(self, family: int) -> _EchoReader:
        reader = self._readers.get(family)
        if reader is None:
            source = self._source
            if source is not None and (source.version == 4) != (family == socket.AF_INET):
                source = None
            sock = self._socketFactory(family, self._device, source)
            reader = _EchoReader(sock, family, self._replyReceived, self._readerLost)
            self._readers[family] = reader
            self._reactor.addReader(reader)
        return reader

    def _readerLost(self, reader: _EchoReader) -> None:
        if self._readers.get(reader.family) is reader:
            del self._readers[reader.family]

    def _nextSequence(self) -> int:
        # Skip numbers still in flight: only matters if more than 65536
        # probes are outstanding at once, which would be a bug elsewhere.
        for _ in range(0x10000):
            self._sequence = (self._sequence + 1) & 0xFFFF
            if self._sequence not in self._pending:
                return self._sequence
        raise RuntimeError("65536 echo requests outstanding")

    def _replyReceived(self, family: int, data: bytes, source: str) -> None:
        parsed = parseReply(data, family)
        if parsed is None or parsed[0] != self.identifier:
            return
        sequence = parsed[1]
        probe = self._pending.get(sequence)
        if probe is None or probe.family != family:
            log.debug("late or unexpected echo reply {sequence} from {source}",
                      sequence=sequence, source=source)
            return
        try:
            fromTarget = _unscoped(source) == _unscoped(probe.address)
        except ValueError:
            fromTarget = False
        if not fromTarget:
            log.debug("echo reply {sequence} from {source}, not {address}",
                      sequence=sequence, source=source, address=probe.address)
            return
        del self._pending[sequence]
        probe.timeout.cancel()
        probe.deferred.callback(max(0.0, self._reactor.seconds() - probe.sentAt))

    def _timedOut(self, sequence: int) -> None:
        self._pending.pop(sequence).deferred.callback(None)

    def _forget(self, sequence: int) -> None:
        probe = self._pending.pop(sequence, None)
        if probe is not None and probe.timeout is not None and probe.timeout.active():
            probe.timeout.cancel()
