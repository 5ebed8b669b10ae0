"""
Tests for L{mnigs.softether.client} (the vpnclient of one connection) and
L{mnigs.softether.vpncmd.portOpen}, with a fake spawner, a fake vpncmd
and a L{Clock} or L{MemoryReactorClock}.
"""

import os
import shutil
import stat
import tempfile

from twisted.internet import defer
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from mnigs.system.command import CommandResult
from mnigs.system.process import LaunchTimeout
from mnigs.softether.client import ACCOUNT, VpnClient, accountCommands
from mnigs.softether.vpncmd import portOpen
from tests.unit.fakeprocess import FakeSpawner
from tests.unit.test_softether import captured
from tests.unit.test_softether.fakeserver import PEM


class FakeClientVpncmd:
    """Answers client batches: every command succeeds, AccountList says C{status}."""

    def __init__(self):
        self.batches = []
        self.status = "Connecting"

    def __call__(self, reactor, argv, stdin=b"", env=None, timeout=30, path=None):
        with open(argv[-1][len("/IN:"):]) as f:
            lines = f.read().splitlines()
        self.batches.append(dict(argv=argv, lines=lines, stdin=stdin, path=path))
        out = ['Connected to VPN Client "localhost".', ""]
        for line in lines:
            out.append("VPN Client>" + line)
            if line == "AccountList":
                out += ["VPN Connection Setting Name,Status,VPN Server Hostname,Virtual Hub,"
                        "Virtual Network Adapter Name",
                        f"{ACCOUNT},{self.status},10.0.0.1:5555 (Direct TCP/IP Connection),"
                        "mnigs,mc0"]
        return defer.succeed(CommandResult(tuple(argv), 0, None,
                                           ("\n".join(out) + "\n").encode(), b""))


class VpnClientTests(SynchronousTestCase):
    def setUp(self):
        self.directory = os.path.join(tempfile.mkdtemp(), "softether-mc0")
        self.addCleanup(shutil.rmtree, os.path.dirname(self.directory), ignore_errors=True)
        self.clock = Clock()
        self.spawner = FakeSpawner()
        self.vpncmd = FakeClientVpncmd()
        self.listening = True
        self.exits = []
        self.client = VpnClient(self.clock, self.directory, python="/py", vpnclient="/vc",
                                vpncmd="/vpncmd", launchTimeout=2, onExit=self.exits.append,
                                spawn=self.spawner, run=self.vpncmd,
                                portOpen=lambda reactor, host, port: defer.succeed(
                                    self.listening and port == 9931))

    def start(self):
        d = self.client.start()
        self.clock.advance(0)
        return d

    def test_aFreshDirectoryAndTheLauncher(self):
        os.makedirs(os.path.join(self.directory, "root", "lib"))
        with open(os.path.join(self.directory, "root", "lib", "vpn_client.config"), "w") as f:
            f.write("old accounts")
        self.successResultOf(self.start())
        self.assertFalse(os.path.exists(os.path.join(self.directory, "root", "lib")))
        self.assertEqual(stat.S_IMODE(os.stat(self.directory).st_mode), 0o700)
        self.assertEqual(self.spawner.spawned[0]["args"],
                         ["/py", "-m", "mnigs.softether.launch",
                          os.path.join(self.directory, "root"), "/vc", "start", "--foreground"])

    def test_readyOnceTheManagementPasswordIsSet(self):
        self.listening = False
        d = self.start()
        self.clock.advance(0.1)
        self.assertNoResult(d)
        self.assertEqual(self.vpncmd.batches, [])  # no vpncmd while nothing listens
        self.listening = True
        self.clock.advance(0.1)
        self.successResultOf(d)
        [batch] = self.vpncmd.batches
        self.assertEqual(batch["lines"], ["PasswordSet /REMOTEONLY:no"])
        password = self.client.password.encode()
        self.assertEqual(batch["stdin"], password + b"\n" + password + b"\n" + password + b"\n")

    def test_neverListeningIsALaunchTimeout(self):
        self.listening = False
        d = self.start()
        self.clock.pump([0.1] * 25)
        self.failureResultOf(d, LaunchTimeout)

    def test_theAccountWithThePinnedCertificate(self):
        self.successResultOf(self.start())
        self.successResultOf(self.client.connectAccount("10.0.0.1:5555", "mnigs", "m" + "1" * 24,
                                                        "user-password-xxxx", PEM, "mc0"))
        batch = self.vpncmd.batches[-1]
        certificate = os.path.join(self.directory, "scratch", "server.pem")
        self.assertEqual(batch["lines"], [c.line() for c in accountCommands(
            "mc0", "10.0.0.1:5555", "mnigs", "m" + "1" * 24, "x", certificate)])
        self.assertIn(b"user-password-xxxx\nuser-password-xxxx\n", batch["stdin"])
        self.assertNotIn("user-password-xxxx", " ".join(batch["lines"] + batch["argv"]))
        with open(certificate) as f:
            self.assertEqual(f.read(), PEM)
        self.assertEqual(stat.S_IMODE(os.stat(certificate).st_mode), 0o600)

    def test_capturedAccountBatchIsWhatIsBuilt(self):
        commands, _, _ = captured("client_connect")
        certificate = commands[3].args[1][len("/LOADCERT:"):]
        self.assertEqual([c.line() for c in commands],
                         [c.line() for c in accountCommands("cap0", "127.0.0.1:5555", "mnigs",
                                                            commands[1].args[3][len("/USERNAME:"):],
                                                            "x", certificate)])

    def test_status(self):
        self.successResultOf(self.start())
        self.assertEqual(self.successResultOf(self.client.status()), "Connecting")
        self.vpncmd.status = "Connected"
        self.assertEqual(self.successResultOf(self.client.status()), "Connected")

    def test_lastErrorFromTheDaemonsOutput(self):
        self.successResultOf(self.start())
        self.assertEqual(self.client.lastError(), "unknown")
        with open(os.path.join(self.directory, "vpnclient.log"), "a") as f:
            f.write('2026-11-24 23:04:47.290 VPN Connection Setting "mnigs": The connection has '
                    "been either disconnected or it failed. Cause: User authentication failed. "
                    "(code 9)\n")
        self.assertEqual(self.client.lastError(), "User authentication failed. (code 9)")

    def test_stopKillsAfterASecondAndRemovesTheDirectory(self):
        self.successResultOf(self.start())
        d = self.client.stop()
        process = self.spawner.last
        self.assertEqual(process.signals, ["TERM"])
        self.clock.advance(1)
        self.assertEqual(process.signals, ["TERM", "KILL"])
        process.end(sig=9, code=None)
        self.successResultOf(d)
        self.assertFalse(os.path.exists(self.directory))

    def test_aDeathIsReported(self):
        self.successResultOf(self.start())
        self.spawner.last.end(sig=9, code=None)
        self.assertEqual(len(self.exits), 1)


class PortOpenTests(SynchronousTestCase):
    def test_openThenClosedAtOnce(self):
        reactor = MemoryReactorClock()
        d = portOpen(reactor, "127.0.0.1", 9931)
        host, port, factory, timeout, _ = reactor.tcpClients[0]
        self.assertEqual((host, port, timeout), ("127.0.0.1", 9931, 1.0))
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertTrue(self.successResultOf(d))

    def test_refused(self):
        reactor = MemoryReactorClock()
        d = portOpen(reactor, "127.0.0.1", 9931)
        factory = reactor.tcpClients[0][2]
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        self.assertFalse(self.successResultOf(d))
