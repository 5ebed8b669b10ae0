"""
The manhole over a real unix socket: a peer that leaves without answering
the telnet negotiation (socat, a script, a closed terminal) leaves no
error in the log, and the console still evaluates what it is sent.
"""

import os
import tempfile

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import TestCase

from mnigs.daemon.manhole import makeManholeService


class Peer(protocol.Protocol):
    """Sends one line, collects what comes back, hangs up when told."""

    def __init__(self, line, expected):
        self.line = line
        self.expected = expected
        self.received = b""
        self.answered = defer.Deferred()

    def connectionMade(self):
        self.transport.write(self.line)

    def dataReceived(self, data):
        self.received += data
        if self.expected in self.received and not self.answered.called:
            self.answered.callback(self.received)


class ManholeTests(TestCase):
    timeout = 20

    def setUp(self):
        directory = tempfile.mkdtemp(prefix="mnigs-manhole-")  # short: unix socket paths are
        self.addCleanup(os.rmdir, directory)
        self.path = os.path.join(directory, "manhole.sock")
        self.service = makeManholeService(reactor, self.path, {"answer": 6 * 7})
        self.closed = defer.Deferred()
        self.recordServerProtocols()
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def recordServerProtocols(self):
        factory = self.service.factory
        build = factory.buildProtocol

        def buildProtocol(addr):
            server = build(addr)
            lost = server.connectionLost

            def connectionLost(reason):
                lost(reason)
                self.closed.callback(None)

            server.connectionLost = connectionLost
            return server

        factory.buildProtocol = buildProtocol

    @defer.inlineCallbacks
    def test_peerHangingUpMidNegotiationLogsNoError(self):
        peer = Peer(b"print(answer)\r\n", b"42")
        yield UNIXClientEndpoint(reactor, self.path).connect(protocol.Factory.forProtocol(
            lambda: peer))
        yield peer.answered
        peer.transport.loseConnection()
        yield self.closed
        loud = [e for e in self.events if e.get("log_level", LogLevel.info) >= LogLevel.warn]
        self.assertEqual(loud, [])
