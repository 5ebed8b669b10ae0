"""
Tests for L{mnigs.openvpn.daemon}: one openvpn process and its management
connection, with a fake spawner, a memory reactor and a StringTransport in
place of openvpn's connection.
"""

import os
import shutil
import tempfile

from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from mnigs.openvpn import management as m
from mnigs.openvpn.daemon import NotRunning, OpenVPNDaemon
from mnigs.system.process import ProcessExitedEarly
from tests.unit.fakeprocess import FakeSpawner

CONNECTED = ">STATE:1795559807,CONNECTED,SUCCESS,100.65.0.2,10.251.9.1,1194,,"


class DaemonTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.spawner = FakeSpawner()
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        self.socket = os.path.join(self.dir, "sub", "management.sock")
        self.events = []

    def make(self, **kw):
        kw.setdefault("onEvent", lambda event: self.events.append(event))
        kw.setdefault("onExit", lambda reason: self.events.append(("exit",)))
        kw.setdefault("onReady", lambda: self.events.append(("ready",)))
        return OpenVPNDaemon(self.reactor, ["openvpn", "--config", "/x/client.conf"],
                             self.socket, "openvpn test", spawn=self.spawner, **kw)

    def connect(self, index=-1):
        """openvpn connects to our socket: (protocol, transport)."""
        factory = self.reactor.unixServers[index][1]
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def receive(self, protocol, *lines):
        protocol.dataReceived(b"".join(line.encode() + b"\n" for line in lines))

    def greet(self, protocol):
        self.receive(protocol, ">INFO:OpenVPN Management Interface Version 5 -- type 'help' "
                               "for more info", ">HOLD:Waiting for hold release:0",
                     "SUCCESS: real-time state notification set to ON",
                     "SUCCESS: bytecount interval changed", "SUCCESS: hold release succeeded")

    def test_argvListenerAndSetUp(self):
        daemon = self.make()
        d = daemon.start()
        [(path, factory, backlog, mode, wantPID)] = self.reactor.unixServers
        self.assertEqual((path, mode), (self.socket, 0o600))
        [call] = self.spawner.spawned
        self.assertEqual(os.path.basename(call["args"][0]), "openvpn")
        self.assertEqual(call["args"][1:], ["--config", "/x/client.conf", "--management",
                                            self.socket, "unix", "--management-client",
                                            "--management-hold"])
        protocol, transport = self.connect()
        self.assertEqual(transport.value(), b"state on\nbytecount 1\n")
        self.greet(protocol)
        self.assertEqual(transport.value(), b"state on\nbytecount 1\nhold release\n")
        self.assertNoResult(d)
        self.receive(protocol, ">STATE:1,CONNECTED,ERROR,100.65.0.2,,,,")
        self.assertNoResult(d)
        self.receive(protocol, CONNECTED)
        self.successResultOf(d)
        self.assertEqual(self.events[-1], ("ready",))
        self.assertIn(m.State(1795559807, "CONNECTED", "SUCCESS", "100.65.0.2", "10.251.9.1",
                              "1194"), self.events)
        self.assertEqual(daemon.describe(), {"pid": 101, "management": True})

    def test_staleSocketIsRemoved(self):
        os.makedirs(os.path.dirname(self.socket))
        with open(self.socket, "w") as f:
            f.write("stale")
        self.make().start()
        self.assertFalse(os.path.exists(self.socket))

    def test_serverReleasesEveryHoldClientOnlyTheFirst(self):
        for releaseEveryHold, expected in ((True, 2), (False, 1)):
            self.reactor = MemoryReactorClock()
            daemon = self.make(releaseEveryHold=releaseEveryHold)
            daemon.start()
            protocol, transport = self.connect()
            self.greet(protocol)
            self.receive(protocol, ">STATE:2,RECONNECTING,server-pushed-connection-reset,,,,,",
                         ">HOLD:Waiting for hold release:1")
            self.assertEqual(transport.value().count(b"hold release\n"), expected)

    def test_secondConnectionIsClosed(self):
        self.make().start()
        self.connect()
        protocol, transport = self.connect()
        self.assertTrue(transport.disconnecting)

    def test_commands(self):
        daemon = self.make()
        self.failureResultOf(daemon.command("pid"), NotRunning)
        daemon.start()
        protocol, transport = self.connect()
        self.greet(protocol)
        d = daemon.command("client-kill 3 HALT")
        self.receive(protocol, "SUCCESS: client-kill command succeeded")
        self.assertEqual(self.successResultOf(d).text, "client-kill command succeeded")
        slow = daemon.command("client-kill 4 HALT", timeout=5)
        self.reactor.advance(5)
        self.failureResultOf(slow, defer.TimeoutError)
        after = daemon.command("client-kill 5 HALT")
        # The late answer to the abandoned command still goes to it, in order.
        self.receive(protocol, "ERROR: client-kill command failed",
                     "SUCCESS: client-kill command succeeded")
        self.successResultOf(after)

    def test_deathReportedThenRelaunchedAndReadyAgain(self):
        daemon = self.make()
        daemon.start()
        protocol, transport = self.connect()
        self.greet(protocol)
        self.receive(protocol, CONNECTED)
        protocol.connectionLost(None)
        self.assertIsNone(daemon.session)
        self.spawner.spawned[0]["process"].end(code=1)
        self.assertIn(("exit",), self.events)
        self.reactor.advance(0.5)
        self.assertEqual(len(self.spawner.spawned), 2)
        protocol, transport = self.connect()
        self.assertEqual(transport.value(), b"state on\nbytecount 1\n")
        self.greet(protocol)
        self.receive(protocol, CONNECTED)
        self.assertEqual([e for e in self.events if e == ("ready",)], [("ready",), ("ready",)])

    def test_exitBeforeReadyFailsStart(self):
        daemon = self.make(restart=False)
        d = daemon.start()
        self.spawner.spawned[0]["process"].end(code=1)
        self.failureResultOf(d, ProcessExitedEarly)

    def test_stopTerminatesAndStopsListening(self):
        daemon = self.make()
        daemon.start()
        protocol, _ = self.connect()
        self.greet(protocol)
        self.receive(protocol, CONNECTED)
        d = daemon.stop()
        process = self.spawner.spawned[0]["process"]
        self.assertEqual(process.signals, ["TERM"])
        self.assertNoResult(d)
        process.end(code=0)
        self.successResultOf(d)
        self.assertIsNone(daemon._port)
        self.assertNotIn(("exit",), self.events)

    def test_socketPathTooLong(self):
        self.socket = "/" + "x" * 120
        self.assertRaises(ValueError, self.make)
