# -*- test-case-name: tests.unit.test_openvpn.test_channel -*-
"""
The management connection as Twisted sees it: openvpn runs with
C{--management PATH unix --management-client}, so it connects to a unix
socket that mnigs listens on (and exits when that connection drops: no
openvpn outlives the mnigs that started it).

L{ManagementProtocol} only turns bytes into L{mnigs.openvpn.management}
events for its owner and pairs commands with their replies; what to do
about an event is the owner's business.
"""

from __future__ import annotations

from collections import deque

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver

from mnigs.openvpn.management import (
    ManagementParser,
    ManagementProtocolError,
    Reply,
    isMultiline,
)

log = Logger()


class CommandFailed(Exception):
    """openvpn answered C{ERROR:}; the argument is its text."""


class ManagementProtocol(LineOnlyReceiver):
    """
    @param owner: gets C{managementConnected(protocol)},
        C{managementEvent(protocol, event)} for every event but replies, and
        C{managementLost(protocol, reason)}.
    """

    delimiter = b"\n"
    MAX_LENGTH = 64 * 1024

    def __init__(self, owner) -> None:
        self.owner = owner
        self.parser = ManagementParser()
        self.waiting: deque[tuple[str, Deferred]] = deque()

    def connectionMade(self) -> None:
        self.owner.managementConnected(self)

    def command(self, text: str) -> Deferred:
        """
        Send one command (text built by L{mnigs.openvpn.management});
        the Deferred fires with the L{Reply} or fails with L{CommandFailed}.
        """
        multiline = isMultiline(text)
        self.parser.expectReply(multiline)
        d: Deferred = Deferred()
        self.waiting.append((text.split(None, 1)[0], d))
        self.transport.write(text.encode("utf-8") + b"\n")
        return d

    def lineReceived(self, line: bytes) -> None:
        try:
            text = line.rstrip(b"\r").decode("utf-8")
            events = self.parser.feed(text)
        except (UnicodeDecodeError, ManagementProtocolError) as e:
            log.error("openvpn management: {error}; dropping the connection", error=e)
            self.transport.loseConnection()
            return
        for event in events:
            if isinstance(event, Reply):
                self._replied(event)
            else:
                self.owner.managementEvent(self, event)

    def _replied(self, reply) -> None:
        name, d = self.waiting.popleft()
        if reply.ok:
            d.callback(reply)
        else:
            d.errback(CommandFailed(f"{name}: {reply.text}"))

    def lineLengthExceeded(self, line: bytes) -> None:
        log.error("openvpn management: line over {n} bytes; dropping the connection",
                  n=self.MAX_LENGTH)
        self.transport.loseConnection()

    def connectionLost(self, reason=None) -> None:
        waiting, self.waiting = self.waiting, deque()
        for name, d in waiting:
            d.errback(ConnectionLost(f"management connection closed before {name} was answered"))
        self.owner.managementLost(self, reason)


class ManagementFactory(Factory):
    def __init__(self, owner) -> None:
        self.owner = owner

    def buildProtocol(self, addr) -> ManagementProtocol:
        protocol = ManagementProtocol(self.owner)
        protocol.factory = self
        return protocol
