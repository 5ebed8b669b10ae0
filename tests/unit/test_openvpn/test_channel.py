"""
Tests for L{mnigs.openvpn.channel}: bytes to events and replies to the
commands that asked, over a L{StringTransport}.
"""

from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from mnigs.openvpn import management as m
from mnigs.openvpn.channel import CommandFailed, ManagementFactory


class Owner:
    def __init__(self):
        self.events = []

    def managementConnected(self, protocol):
        self.events.append(("connected", protocol))

    def managementEvent(self, protocol, event):
        self.events.append(("event", event))

    def managementLost(self, protocol, reason):
        self.events.append(("lost", reason.type))


class ManagementProtocolTests(SynchronousTestCase):
    def setUp(self):
        self.owner = Owner()
        self.protocol = ManagementFactory(self.owner).buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def receive(self, *lines):
        self.protocol.dataReceived(b"".join(line.encode() + b"\r\n" for line in lines))

    def test_connectedTellsTheOwner(self):
        self.assertEqual(self.owner.events, [("connected", self.protocol)])

    def test_repliesGoToTheirCommandsInOrder(self):
        first = self.protocol.command("state on")
        second = self.protocol.command("client-kill 9 HALT")
        third = self.protocol.command("version")
        self.assertEqual(self.transport.value(),
                         b"state on\nclient-kill 9 HALT\nversion\n")
        self.receive("SUCCESS: real-time state notification set to ON",
                     ">BYTECOUNT_CLI:0,1,2",
                     "ERROR: client-kill command failed",
                     "OpenVPN Version: OpenVPN 2.6.14",
                     ">STATE:1,CONNECTED,SUCCESS,100.65.0.1,,,,",
                     "Management Version: 5",
                     "END")
        self.assertEqual(self.successResultOf(first),
                         m.Reply(True, "real-time state notification set to ON"))
        failure = self.failureResultOf(second, CommandFailed)
        self.assertEqual(str(failure.value), "client-kill: client-kill command failed")
        self.assertEqual(self.successResultOf(third).lines,
                         ("OpenVPN Version: OpenVPN 2.6.14", "Management Version: 5"))
        self.assertEqual([e for kind, e in self.owner.events if kind == "event"],
                         [m.ClientByteCount(0, 1, 2),
                          m.State(1, "CONNECTED", "SUCCESS", "100.65.0.1", "", "")])

    def test_lineSplitAcrossReads(self):
        self.protocol.dataReceived(b">HOLD:Waiting for ho")
        self.assertEqual(len(self.owner.events), 1)
        self.protocol.dataReceived(b"ld release:0\n")
        self.assertEqual(self.owner.events[-1], ("event", m.Hold("Waiting for hold release:0")))

    def test_multilineCommandIsSentWhole(self):
        self.protocol.command(m.clientAuth(0, 1, ["ifconfig-push 100.65.0.2 255.255.255.0"]))
        self.assertEqual(self.transport.value(),
                         b"client-auth 0 1\nifconfig-push 100.65.0.2 255.255.255.0\nEND\n")

    def test_lostConnectionFailsWhatWaits(self):
        d = self.protocol.command("hold release")
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(d, ConnectionLost)
        self.assertEqual(self.owner.events[-1], ("lost", ConnectionDone))

    def test_garbageDropsTheConnection(self):
        self.receive("SUCCESS: nobody asked")
        self.assertTrue(self.transport.disconnecting)

    def test_notUTF8DropsTheConnection(self):
        self.protocol.dataReceived(b">INFO:\xff\xfe\n")
        self.assertTrue(self.transport.disconnecting)

    def test_overlongLineDropsTheConnection(self):
        self.protocol.dataReceived(b">INFO:" + b"x" * (self.protocol.MAX_LENGTH + 10))
        self.assertTrue(self.transport.disconnecting)
