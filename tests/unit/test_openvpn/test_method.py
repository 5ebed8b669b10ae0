"""
Tests for L{mnigs.methods.openvpn}: the gateway's live decisions on the
management events openvpn sends, and the client's connection, both against
recording fakes of the daemon, the access list and the routing.
"""

import ipaddress
import os
import shutil
import stat
import tempfile

from twisted.internet import defer
from twisted.internet.error import ProcessTerminated
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mnigs.interfaces import IClientConnection, IClientMethod, IGatewayMethod
from mnigs.methods.openvpn import OpenVPNClient, OpenVPNGateway, WrongAddress
from mnigs.methods.traffic import Traffic
from mnigs.openvpn import management as m
from mnigs.openvpn.config import LeaseConfigRejected
from mnigs.openvpn.daemon import NotRunning
from mnigs.system.process import ProcessExitedEarly
from mnigs.protocol import GATEWAY_FULL, INVALID_PARAMS, RPCError, certificateSHA256
from mnigs.server.leases import Lease
from tests.unit.test_openvpn.test_config import caPEM, goodConfig

TOKEN_A = "tokenA-" + "a" * 32
TOKEN_B = "tokenB-" + "b" * 32


class FakeServerDaemon:
    def __init__(self, onEvent, onExit, onReady):
        self.onEvent, self.onExit, self.onReady = onEvent, onExit, onReady
        self.commands = []
        self.pid = 42
        self.running = False
        self.failWith = None

    def start(self):
        self.running = True
        return defer.succeed(None)

    def stop(self):
        self.running = False
        return defer.succeed(None)

    def command(self, text, timeout=None):
        self.commands.append(text)
        if self.failWith is not None:
            return defer.fail(self.failWith)
        return defer.succeed(m.Reply(True, "ok"))


class FakeAccess:
    def __init__(self):
        self.calls = []

    def allow(self, admission):
        self.calls.append(("allow", admission.describe()))
        return defer.succeed(None)

    def deny(self, admission):
        self.calls.append(("deny", admission.describe()))
        return defer.succeed(None)


def lease(leaseId, token, address):
    return Lease(id=leaseId, token=token, clientId=f"client-{leaseId}", clientName="",
                 method="openvpn", clientHost="10.251.0.9", params={},
                 config={"address": f"{address}/32"}, createdAt=0.0, expiresAt=600.0)


def connect(cid, username, password, kid=1, kind=m.ClientConnect):
    env = m.Environment(untrusted_ip="10.99.1.2", username=username)
    if password is not None:
        env["password"] = password
    return kind(cid, kid, env)


class LogCapture:
    def __init__(self, testcase):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        testcase.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def text(self):
        from twisted.logger import formatEvent
        return "\n".join(formatEvent(e) + repr(e) for e in self.events)


class GatewayTests(SynchronousTestCase):
    def setUp(self):
        self.access = FakeAccess()
        self.gateway = OpenVPNGateway(self.makeDaemon, self.access, caPEM(),
                                      ipaddress.ip_network("100.65.0.0/29"), 1194, "udp",
                                      "mo0", endpoints=["10.251.0.3"])
        self.a = lease("aaaa", TOKEN_A, "100.65.0.2")
        self.b = lease("bbbb", TOKEN_B, "100.65.0.3")
        self.successResultOf(self.gateway.start([self.a]))
        self.successResultOf(self.gateway.grant(self.b))
        self.daemon.commands.clear()

    def makeDaemon(self, onEvent, onExit, onReady):
        self.daemon = FakeServerDaemon(onEvent, onExit, onReady)
        return self.daemon

    def test_providesTheInterface(self):
        verifyObject(IGatewayMethod, self.gateway)

    def test_offerEntryHoldsNoSecret(self):
        self.assertEqual(self.gateway.offerEntry("10.251.0.3"),
                         {"type": "openvpn", "endpoint": "10.251.0.3:1194", "proto": "udp",
                          "ca_sha256": certificateSHA256(self.gateway.caPEM)})
        self.assertEqual(self.gateway.offerEntry("10.99.7.1")["endpoint"], "10.251.0.3:1194")

    def test_paramsMustBeEmpty(self):
        self.assertEqual(self.gateway.checkParams({}), {})
        error = self.assertRaises(RPCError, self.gateway.checkParams, {"public_key": "x"})
        self.assertEqual(error.code, INVALID_PARAMS)

    def test_allocateGivesTheNextAddressAndWhatTheClientNeeds(self):
        fresh = lease("cccc", "t", "0.0.0.0")
        config = self.gateway.allocate(fresh, [self.a, self.b], "10.251.0.3")
        self.assertEqual(config, {"address": "100.65.0.4/32", "gateway_address": "100.65.0.1",
                                  "endpoint": "10.251.0.3:1194", "proto": "udp", "ca": caPEM(),
                                  "dns": []})
        self.assertNotIn("token", repr(config))

    def test_poolExhausted(self):
        live = [self.a, self.b]
        for n in range(3):
            extra = lease(f"x{n}", "t", "0.0.0.0")
            extra.config = self.gateway.allocate(extra, live, "10.251.0.3")
            live.append(extra)
        error = self.assertRaises(RPCError, self.gateway.allocate, lease("y", "t", "0.0.0.0"),
                                  live, "10.251.0.3")
        self.assertEqual(error.code, GATEWAY_FULL)

    def test_grantAndRevokeDriveTheAccessList(self):
        self.assertEqual(self.access.calls, [("allow", "100.65.0.3 on mo0")])
        self.successResultOf(self.gateway.revoke(self.b))
        self.assertEqual(self.access.calls[-1], ("deny", "100.65.0.3 on mo0"))

    def test_leaseHolderGetsExactlyItsAddress(self):
        self.daemon.onEvent(connect(0, "aaaa", TOKEN_A))
        self.assertEqual(self.daemon.commands,
                         ["client-auth 0 1\nifconfig-push 100.65.0.2 255.255.255.248\nEND"])
        self.daemon.onEvent(connect(1, "bbbb", TOKEN_B, kid=2))
        self.assertEqual(self.daemon.commands[-1],
                         "client-auth 1 2\nifconfig-push 100.65.0.3 255.255.255.248\nEND")
        self.assertEqual(self.gateway.sessions, {0: "aaaa", 1: "bbbb"})

    def test_everythingElseIsDenied(self):
        capture = LogCapture(self)
        for cid, (user, password) in enumerate([
                ("aaaa", TOKEN_B), ("aaaa", TOKEN_A[:-1]), ("aaaa", None), ("zzzz", TOKEN_A),
                ("", ""), ("aaaa\n", TOKEN_A), ("aaaa", TOKEN_A + " "), ("aaaa", "é" + TOKEN_A)]):
            self.daemon.onEvent(connect(cid, user, password))
            self.assertEqual(self.daemon.commands[-1],
                             f'client-deny {cid} 1 "no live lease for these credentials" '
                             '"no live lease for these credentials"')
        self.assertEqual(self.gateway.sessions, {})
        self.assertNotIn(TOKEN_A[:20], capture.text())
        self.assertNotIn(TOKEN_B[:20], capture.text())

    def test_reauthKeepsTheSessionOnItsLease(self):
        self.daemon.onEvent(connect(0, "aaaa", TOKEN_A))
        self.daemon.onEvent(connect(0, "aaaa", TOKEN_A, kid=2, kind=m.ClientReauth))
        self.assertEqual(self.daemon.commands[-1], "client-auth-nt 0 2")
        self.daemon.onEvent(connect(0, "bbbb", TOKEN_B, kid=3, kind=m.ClientReauth))
        self.assertTrue(self.daemon.commands[-1].startswith("client-deny 0 3 "))

    def test_revokeKillsOnlyThatLeasesSessions(self):
        for cid, user, token in ((0, "aaaa", TOKEN_A), (3, "bbbb", TOKEN_B), (5, "aaaa", TOKEN_A)):
            self.daemon.onEvent(connect(cid, user, token))
        self.daemon.commands.clear()
        self.successResultOf(self.gateway.revoke(self.a))
        self.assertEqual(self.access.calls[-1], ("deny", "100.65.0.2 on mo0"))
        self.assertEqual(self.daemon.commands, ["client-kill 0 HALT", "client-kill 5 HALT"])
        self.assertEqual(self.gateway.sessions, {3: "bbbb"})
        self.daemon.onEvent(connect(6, "aaaa", TOKEN_A))
        self.assertTrue(self.daemon.commands[-1].startswith("client-deny 6 1 "))

    def test_revokeWhileOpenVPNIsDownStillRevokes(self):
        self.daemon.onEvent(connect(0, "aaaa", TOKEN_A))
        self.daemon.failWith = NotRunning("restarting")
        self.successResultOf(self.gateway.revoke(self.a))
        self.assertEqual(self.access.calls[-1], ("deny", "100.65.0.2 on mo0"))
        self.assertEqual(self.gateway.sessions, {})

    def test_disconnectAndCounters(self):
        """
        BYTECOUNT_CLI's "in" is what openvpn received from the client: the
        lease's bytes out.  A lease's ended sessions still count (the
        client reconnected), until the lease goes.
        """
        self.daemon.onEvent(connect(0, "aaaa", TOKEN_A))
        self.daemon.onEvent(m.ClientByteCount(0, 10, 20))
        self.assertEqual(self.gateway.counts, {0: (10, 20)})
        self.assertEqual(self.successResultOf(self.gateway.traffic()),
                         {"aaaa": Traffic(20, 10), "bbbb": Traffic(0, 0)})
        self.daemon.onEvent(m.ClientDisconnect(0, m.Environment()))
        self.assertEqual((self.gateway.sessions, self.gateway.counts), ({}, {}))
        self.daemon.onEvent(connect(1, "aaaa", TOKEN_A))
        self.daemon.onEvent(m.ClientByteCount(1, 1, 2))
        self.assertEqual(self.successResultOf(self.gateway.traffic())["aaaa"], Traffic(22, 11))
        self.daemon.onExit(Failure(ProcessTerminated(signal=9)))  # sessions end with it
        self.assertEqual(self.successResultOf(self.gateway.traffic())["aaaa"], Traffic(22, 11))
        self.successResultOf(self.gateway.revoke(self.a))
        self.assertNotIn("aaaa", self.successResultOf(self.gateway.traffic()))

    def test_deadServerHasNoSessions(self):
        self.daemon.onEvent(connect(0, "aaaa", TOKEN_A))
        self.daemon.onExit(Failure(ProcessTerminated(signal=9)))
        self.assertEqual(self.gateway.sessions, {})
        self.daemon.onReady()
        self.daemon.onEvent(connect(0, "aaaa", TOKEN_A))
        self.assertEqual(self.gateway.sessions, {0: "aaaa"})

    def test_describe(self):
        self.daemon.onEvent(connect(0, "aaaa", TOKEN_A))
        self.assertEqual(self.gateway.describe(),
                         {"interface": "mo0", "port": 1194, "proto": "udp",
                          "pool": "100.65.0.0/29", "leases": 2, "sessions": 1, "pid": 42})

    def test_stopStopsTheDaemon(self):
        self.successResultOf(self.gateway.stop())
        self.assertFalse(self.daemon.running)


class FakeClientDaemon:
    def __init__(self, reactor, argv, socketPath, name, onEvent, onExit, releaseEveryHold,
                 restart, launchTimeout):
        self.argv, self.socketPath, self.name = argv, socketPath, name
        self.onEvent, self.onExit = onEvent, onExit
        self.options = dict(releaseEveryHold=releaseEveryHold, restart=restart,
                            launchTimeout=launchTimeout)
        self.started = defer.Deferred()
        self.stopped = 0
        self.pid = 77

    def start(self):
        return self.started

    def stop(self):
        self.stopped += 1
        return defer.succeed(None)

    def up(self, address="100.65.0.7"):
        self.onEvent(m.State(1, "CONNECTED", "SUCCESS", address, "10.251.0.3", "1194"))
        self.started.callback(None)


class FakeRouting:
    def __init__(self):
        self.calls = []

    def install(self, interface, gateway=None, source=None, source6=None):
        self.calls.append(("install", interface) + ((source6,) if source6 else ()))

    def withdraw(self, interface=None):
        self.calls.append(("withdraw",))


class ClientTests(SynchronousTestCase):
    def setUp(self):
        self.stateDir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.stateDir)
        self.routing = FakeRouting()
        self.daemons = []
        self.client = OpenVPNClient(Clock(), "mp0", self.routing, self.stateDir,
                                    connectTimeout=4.0, daemonFactory=self.makeDaemon)
        self.dir = os.path.join(self.stateDir, "openvpn-mp0")
        self.lease = {"id": "0123abcd", "token": TOKEN_A, "config": goodConfig()}

    def makeDaemon(self, *args, **kw):
        daemon = FakeClientDaemon(*args, **kw)
        self.daemons.append(daemon)
        return daemon

    def connected(self):
        d = self.client.connect(None, self.lease)
        self.daemons[-1].up()
        return self.successResultOf(d)

    def test_providesTheInterface(self):
        verifyObject(IClientMethod, self.client)
        self.assertEqual(self.client.registerParams({"type": "openvpn"}), {})

    def test_theConnectionNamesItsDevice(self):
        connection = self.connected()
        verifyObject(IClientConnection, connection)
        self.assertEqual(connection.device, "mp0")

    def test_filesAreOursAndPrivate(self):
        d = self.client.connect(None, self.lease)
        [daemon] = self.daemons
        config = os.path.join(self.dir, "client.conf")
        self.assertEqual(daemon.argv, ["openvpn", "--config", config])
        self.assertEqual(daemon.socketPath, os.path.join(self.dir, "management.sock"))
        self.assertEqual(daemon.options, dict(releaseEveryHold=False, restart=False,
                                              launchTimeout=4.0))
        self.assertEqual(stat.S_IMODE(os.stat(self.dir).st_mode), 0o700)
        for name in ("client.conf", "credentials", "ca.pem"):
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(self.dir, name)).st_mode), 0o600)
        with open(os.path.join(self.dir, "credentials")) as f:
            self.assertEqual(f.read(), f"0123abcd\n{TOKEN_A}\n")
        with open(config) as f:
            text = f.read()
        self.assertIn(f"auth-user-pass {self.dir}/credentials\n", text)
        self.assertIn("remote 10.251.0.3 1194\n", text)
        self.assertNotIn(TOKEN_A, text)
        self.assertNoResult(d)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)

    def test_onlineInstallsTheDefaultRoute(self):
        connection = self.connected()
        self.assertEqual(self.routing.calls, [("install", "mp0")])
        self.assertEqual(connection.describe()["address"], "100.65.0.7/32")

    def test_wrongAddressFromTheGatewayIsRefused(self):
        d = self.client.connect(None, self.lease)
        self.daemons[-1].up("100.65.0.99")
        self.failureResultOf(d, WrongAddress)
        self.assertEqual(self.daemons[-1].stopped, 1)
        self.assertEqual(self.routing.calls, [])
        self.assertEqual(os.listdir(self.dir), [])

    def test_hostileLeasesAreRefusedBeforeAnythingIsWritten(self):
        hostile = [
            dict(self.lease, config=goodConfig(endpoint="evil.example:1194")),
            dict(self.lease, config=goodConfig(ca="nope")),
            dict(self.lease, config="not a dict"),
            dict(self.lease, token="a\nscript-security 3"),
            dict(self.lease, id="lease id"),
            dict(self.lease, token=None),
        ]
        for lease in hostile:
            self.failureResultOf(self.client.connect(None, lease), LeaseConfigRejected)
        self.assertEqual(self.daemons, [])
        self.assertFalse(os.path.exists(self.dir))

    def test_failedStartCleansUp(self):
        d = self.client.connect(None, self.lease)
        self.daemons[-1].started.errback(ProcessExitedEarly("openvpn", None))
        self.failureResultOf(d, ProcessExitedEarly)
        self.assertEqual(self.daemons[-1].stopped, 1)
        self.assertEqual(os.listdir(self.dir), [])

    def test_cancelledConnectCleansUp(self):
        d = self.client.connect(None, self.lease)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertEqual(self.daemons[-1].stopped, 1)
        self.assertEqual(os.listdir(self.dir), [])

    def test_lostWhenTheProcessEnds(self):
        connection = self.connected()
        lost = connection.whenLost()
        self.assertNoResult(lost)
        self.daemons[-1].onExit(Failure(ProcessTerminated(signal=9)))
        self.assertIn("openvpn exited", self.successResultOf(lost))
        self.assertIn("openvpn exited", self.successResultOf(connection.whenLost()))

    def test_lostWhenTheTunnelRestarts(self):
        connection = self.connected()
        lost = connection.whenLost()
        self.daemons[-1].onEvent(m.State(2, "RECONNECTING", "server-pushed-connection-reset",
                                         "", "", ""))
        self.assertEqual(self.successResultOf(lost),
                         "openvpn tunnel reconnecting (server-pushed-connection-reset)")

    def test_notLostAfterDisconnect(self):
        connection = self.connected()
        lost = connection.whenLost()
        self.successResultOf(connection.disconnect())
        self.daemons[-1].onExit(Failure(ProcessTerminated(signal=15)))
        self.assertNoResult(lost)
        lost.cancel()
        self.failureResultOf(lost, defer.CancelledError)
        self.assertEqual(self.routing.calls[-1], ("withdraw",))
        self.assertEqual(self.daemons[-1].stopped, 1)
        self.assertEqual(os.listdir(self.dir), [])

    def test_countersFromBytecount(self):
        connection = self.connected()
        self.daemons[-1].onEvent(m.ByteCount(2090, 1296))
        self.assertEqual(connection.counters(), {"bytes_in": 2090, "bytes_out": 1296})
        self.assertEqual(connection.traffic(), (2090, 1296))
