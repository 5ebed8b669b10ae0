"""
Tests for L{mnigs.methods.softether}: the gateway turning leases into hub
users and gate entries, the client's connection, and the checks on what a
lease config from the network may hold; against recording fakes.
"""

import ipaddress
import os
import shutil
import tempfile

from twisted.internet import defer
from twisted.internet.error import ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mnigs.interfaces import IClientConnection, IClientMethod, IGatewayMethod
from mnigs.methods.softether import (
    CertificateMismatch,
    ConnectFailed,
    SoftEtherClient,
    SoftEtherGateway,
    checkLeaseConfig,
)
from mnigs.protocol import GATEWAY_FULL, INTERNAL_ERROR, INVALID_PARAMS, UNAVAILABLE, RPCError
from mnigs.server.leases import Lease
from mnigs.softether.hub import userName
from mnigs.softether.hubsync import NotReady
from mnigs.softether.server import certificateFingerprint
from mnigs.softether.vpncmd import VpncmdError, VpncmdFailed
from tests.unit.test_softether.fakeserver import PEM, FakeNetlink


class FakeServer:
    """The part of L{SoftEtherServer} the gateway method uses."""

    def __init__(self, events):
        self.events = events
        self.port = 5555
        self.hub = "mnigs"
        self.tap = "tap_mnigs"
        self.certificate = None
        self.onDeath = None
        self.failAdd = self.failRemove = None  # an exception to fail with

    def setUsers(self, users):
        self.events.append(("setUsers", sorted((u.name, str(u.address)) for u in users)))

    def start(self):
        self.certificate = PEM
        self.events.append(("start",))
        return defer.succeed(None)

    def addUser(self, user):
        self.events.append(("addUser", user.name, user.password, str(user.address)))
        return defer.fail(self.failAdd) if self.failAdd else defer.succeed(None)

    def removeUser(self, name):
        self.events.append(("removeUser", name))
        return defer.fail(self.failRemove) if self.failRemove else defer.succeed(None)

    def stop(self):
        self.events.append(("stop",))
        return defer.succeed(None)

    def describe(self):
        return {"hub": self.hub}


class FakeAccess:
    def __init__(self, events):
        self.events = events

    def allow(self, admission):
        self.events.append(("allow", admission.describe()))
        return defer.succeed(None)

    def deny(self, admission):
        self.events.append(("deny", admission.describe()))
        return defer.succeed(None)


def lease(leaseId, address="0.0.0.0/24", password="p" * 32):
    return Lease(id=leaseId, token="t" * 32, clientId=f"client-{leaseId}", clientName="",
                 method="softether", clientHost="10.251.0.9", params={},
                 config={"address": address, "password": password}, createdAt=0.0,
                 expiresAt=600.0)


class GatewayTests(SynchronousTestCase):
    def setUp(self):
        self.events = []
        self.server = FakeServer(self.events)
        self.passwords = iter(f"password-{n:02d}-xxxxxxxxxxxx" for n in range(100))
        self.gateway = SoftEtherGateway(self.server, FakeAccess(self.events),
                                        ipaddress.ip_network("100.66.0.0/29"),
                                        endpoints=["10.251.0.3"],
                                        password=lambda: next(self.passwords))
        self.a = lease("aaaa", "100.66.0.2/29")
        self.successResultOf(self.gateway.start([self.a]))

    def test_providesTheInterface(self):
        verifyObject(IGatewayMethod, self.gateway)

    def test_startHandsTheLiveLeasesToTheServerFirst(self):
        self.assertEqual(self.events, [("setUsers", [(userName("aaaa"), "100.66.0.2")]),
                                       ("start",)])

    def test_offerEntryNamesTheCertificateNotASecret(self):
        self.assertEqual(self.gateway.offerEntry("10.251.0.3"),
                         {"type": "softether", "endpoint": "10.251.0.3:5555", "hub": "mnigs",
                          "cert_sha256": certificateFingerprint(PEM)})
        self.assertEqual(self.gateway.offerEntry("10.99.7.1")["endpoint"], "10.251.0.3:5555")

    def test_paramsMustBeEmpty(self):
        self.assertEqual(self.gateway.checkParams({}), {})
        error = self.assertRaises(RPCError, self.gateway.checkParams, {"x": 1})
        self.assertEqual(error.code, INVALID_PARAMS)

    def test_allocateGivesAnAddressOnTheTapSubnetAndCredentials(self):
        fresh = lease("bbbb")
        config = self.gateway.allocate(fresh, [self.a], "10.251.0.3")
        self.assertEqual(config, {"address": "100.66.0.3/29", "gateway_address": "100.66.0.1",
                                  "endpoint": "10.251.0.3:5555", "hub": "mnigs",
                                  "username": userName("bbbb"),
                                  "password": "password-00-xxxxxxxxxxxx",
                                  "server_cert": PEM, "dns": []})
        checkLeaseConfig(config)  # what the gateway hands out, the client takes

    def test_poolExhausted(self):
        live = [self.a]
        for n in range(4):
            extra = lease(f"x{n}")
            extra.config = self.gateway.allocate(extra, live, "10.251.0.3")
            live.append(extra)
        error = self.assertRaises(RPCError, self.gateway.allocate, lease("y"), live, "10.251.0.3")
        self.assertEqual(error.code, GATEWAY_FULL)

    def test_grantMakesTheUserThenOpensTheGate(self):
        b = lease("bbbb")
        b.config = self.gateway.allocate(b, [self.a], "10.251.0.3")
        del self.events[:]
        self.successResultOf(self.gateway.grant(b))
        self.assertEqual(self.events, [("addUser", userName("bbbb"), b.config["password"],
                                        "100.66.0.3"),
                                       ("allow", "100.66.0.3 on tap_mnigs")])

    def test_revokeClosesTheGateThenRemovesTheUser(self):
        del self.events[:]
        self.successResultOf(self.gateway.revoke(self.a))
        self.assertEqual(self.events, [("deny", "100.66.0.2 on tap_mnigs"), ("removeUser", userName("aaaa"))])
        self.assertEqual(self.gateway.allocate(lease("cccc"), [], "10.251.0.3")["address"],
                         "100.66.0.2/29")

    def grantOf(self, leaseId):
        b = lease(leaseId)
        b.config = self.gateway.allocate(b, [self.a], "10.251.0.3")
        del self.events[:]
        return self.gateway.grant(b)

    def test_aVpnserverBeingRelaunchedIsTemporarilyUnavailable(self):
        """
        The server is not ready in time (or stops answering): the
        registration is answered 1005 and the gate stays closed.
        """
        self.server.failAdd = NotReady("the vpnserver of hub mnigs is being launched again")
        error = self.failureResultOf(self.grantOf("bbbb"), RPCError).value
        self.assertEqual((error.code, error.message),
                         (UNAVAILABLE, "temporarily unavailable: the vpnserver of hub mnigs is "
                          "being launched again"))
        self.assertEqual([e[0] for e in self.events], ["addUser"])

    def test_aCommandTheVpnserverRefusesIsAnInternalError(self):
        self.server.failAdd = VpncmdError("UserCreate", 7, "no")
        error = self.failureResultOf(self.grantOf("bbbb"), RPCError).value
        self.assertEqual(error.code, INTERNAL_ERROR)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_aRevokeWhoseUserCannotBeRemovedStillCloses(self):
        """
        The gate is what admits: when vpncmd cannot remove the user (the
        vpnserver died under the revoke), the revoke still succeeds, with
        the gate closed and the address free.
        """
        for failure in (VpncmdFailed(1, "Connection to the server failed."),
                        VpncmdError("UserDelete", 7, "no")):
            self.server.failRemove = failure
            self.successResultOf(self.gateway.grant(self.a))
            del self.events[:]
            self.successResultOf(self.gateway.revoke(self.a))
            self.assertEqual(self.events, [("deny", "100.66.0.2 on tap_mnigs"),
                                           ("removeUser", userName("aaaa"))])
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(self.gateway.allocate(lease("cccc"), [], "10.251.0.3")["address"],
                         "100.66.0.2/29")

    def test_stop(self):
        del self.events[:]
        self.successResultOf(self.gateway.stop())
        self.assertEqual(self.events, [("stop",)])


def goodConfig(**changes):
    config = {"address": "100.66.0.3/24", "gateway_address": "100.66.0.1",
              "endpoint": "10.251.0.3:5555", "hub": "mnigs", "username": userName("bbbb"),
              "password": "password-00-xxxxxxxxxxxx", "server_cert": PEM, "dns": []}
    config.update(changes)
    return config


class LeaseConfigTests(SynchronousTestCase):
    def test_good(self):
        config = checkLeaseConfig(goodConfig())
        self.assertEqual(config["address"], ipaddress.ip_interface("100.66.0.3/24"))
        self.assertEqual(config["endpoint"], (ipaddress.ip_address("10.251.0.3"), 5555))

    def test_hostileValuesAreRefused(self):
        for change in (
                {"address": "100.66.0.3/32"},  # no room for the gateway on the segment
                {"address": "fd00::3/64"},
                {"gateway_address": "100.67.0.1"},  # off the segment
                {"gateway_address": "100.66.0.3"},  # ourselves
                {"endpoint": "gw.example:5555"},
                {"hub": "mnigs /PASSWORD:x"},
                {"hub": "a" * 33},
                {"username": "admin"},
                {"username": userName("x") + " /x"},
                {"password": "short"},
                {"password": "password-00-xxx\nUserDelete x"},
                {"password": " password-00-xxxxxxxxxxxx"},
                {"password": 12345678901234567},
                {"server_cert": "not a certificate"},
                {"server_cert": PEM.replace("MII", "!!!")},
                {"server_cert": "x" * 9000},
        ):
            self.assertRaises((ValueError, TypeError), checkLeaseConfig, goodConfig(**change))

    def test_anIPv6EndpointGoesToTheAccountAsVpncmdTakesIt(self):
        FakeVpnClient.instances = []
        netlink, clock = FakeNetlink(), Clock()
        netlink.add("vpn_mc0")
        self.patch(FakeVpnClient, "netlink", netlink)
        stateDir = self.mktemp()
        method = SoftEtherClient(clock, "mc0", FakeRouting(), netlink, stateDir,
                                 vpnclientFactory=FakeVpnClient)
        lease = {"id": "b", "token": "t", "config": goodConfig(endpoint="[fd00::3]:5555")}
        self.successResultOf(method.connect(None, lease))
        self.assertEqual(FakeVpnClient.instances[0].events[1][1], "[fd00::3]:5555")

    def test_notADict(self):
        self.assertRaises(ValueError, checkLeaseConfig, ["address"])


class FakeVpnClient:
    """
    A vpnclient whose session comes up (its NIC up) when the account is
    connected, unless C{sessionComesUp} is false.
    """

    instances = []
    netlink = None
    sessionComesUp = True

    def __init__(self, reactor, directory, onExit=None, launchTimeout=None):
        self.directory = directory
        self.onExit = onExit
        self.launchTimeout = launchTimeout
        self.events = []
        self.statuses = ["Connecting", "Connected"]
        self.failStart = None
        self.pid = 99
        FakeVpnClient.instances.append(self)

    def start(self):
        self.events.append("start")
        if self.failStart:
            return defer.fail(self.failStart)
        return defer.succeed(None)

    def connectAccount(self, endpoint, hub, username, password, certificatePEM, nic):
        self.events.append(("account", endpoint, hub, username, password, nic))
        if self.sessionComesUp:
            self.netlink.links["vpn_" + nic]["up"] = True
        return defer.succeed(None)

    def status(self):
        self.events.append("status")
        return defer.succeed(self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0])

    def lastError(self):
        return "User authentication failed."

    def stop(self):
        self.events.append("stop")
        return defer.succeed(None)


class FakeRouting:
    def __init__(self):
        self.events = []

    def install(self, interface, gateway=None, source=None):
        self.events.append(("install", interface, gateway, source))

    def withdraw(self, interface=None):
        self.events.append(("withdraw",))


class Step:
    def __init__(self, entry):
        self.offerEntry = entry


class ClientTests(SynchronousTestCase):
    def setUp(self):
        FakeVpnClient.instances = []
        self.clock = Clock()
        self.routing = FakeRouting()
        self.netlink = FakeNetlink()
        self.patch(FakeVpnClient, "netlink", self.netlink)
        self.stateDir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.stateDir, ignore_errors=True)
        self.method = SoftEtherClient(self.clock, "mc0", self.routing, self.netlink,
                                      self.stateDir, connectTimeout=3.0,
                                      vpnclientFactory=FakeVpnClient)
        self.lease = {"id": "bbbb", "token": "t" * 32, "config": goodConfig()}
        self.step = Step({"type": "softether", "endpoint": "10.251.0.3:5555", "hub": "mnigs",
                          "cert_sha256": certificateFingerprint(PEM)})

    def connect(self, step="default"):
        self.netlink.add("vpn_mc0")
        d = self.method.connect(self.step if step == "default" else step, self.lease)
        self.clock.pump([0.1] * 5)
        return d

    def test_providesTheInterface(self):
        verifyObject(IClientMethod, self.method)
        self.assertEqual(self.method.registerParams({}), {})

    def test_theSessionIsUpWhenTheNicIsUp(self):
        self.netlink.add("vpn_mc0")
        self.patch(FakeVpnClient, "sessionComesUp", False)
        d = self.method.connect(self.step, self.lease)
        self.clock.pump([0.02] * 10)
        self.assertNoResult(d)
        self.netlink.links["vpn_mc0"]["up"] = True
        self.clock.advance(0.02)
        self.successResultOf(d)
        self.assertNotIn("status", FakeVpnClient.instances[0].events)

    def test_connectBringsTheAccountUpThenTheAddressThenTheRoute(self):
        connection = self.successResultOf(self.connect())
        [vpnclient] = FakeVpnClient.instances
        self.assertEqual(vpnclient.directory, os.path.join(self.stateDir, "softether-mc0"))
        self.assertEqual(vpnclient.events, ["start", ("account", "10.251.0.3:5555", "mnigs",
                                                      userName("bbbb"),
                                                      "password-00-xxxxxxxxxxxx", "mc0")])
        self.assertEqual(self.netlink.calls, [("addAddress", "vpn_mc0", "100.66.0.3/24"),
                                              ("setLinkUp", "vpn_mc0")])
        self.assertEqual(self.routing.events,
                         [("install", "vpn_mc0", "100.66.0.1", "100.66.0.3")])
        self.assertEqual(connection.describe()["interface"], "vpn_mc0")
        verifyObject(IClientConnection, connection)
        self.assertEqual(connection.device, "vpn_mc0")

    def test_withoutAStepThereIsNoOfferToCheckAgainst(self):
        self.successResultOf(self.connect(step=None))

    def test_aCertificateOtherThanTheSignedOffersIsRefused(self):
        self.step.offerEntry["cert_sha256"] = "00" * 32
        self.failureResultOf(self.connect(), CertificateMismatch)
        self.assertEqual(FakeVpnClient.instances, [])

    def test_anOfflineAccountFailsTheConnectAndCleansUp(self):
        self.netlink.add("vpn_mc0")
        self.patch(FakeVpnClient, "sessionComesUp", False)
        original = FakeVpnClient.__init__

        def offline(self, *a, **kw):
            original(self, *a, **kw)
            self.statuses = ["Connecting", "Offline"]

        self.patch(FakeVpnClient, "__init__", offline)
        d = self.method.connect(self.step, self.lease)
        self.clock.pump([0.02] * 40)
        self.assertNoResult(d)  # asked once at 0.5 s: still connecting
        self.clock.pump([0.02] * 40)
        failure = self.failureResultOf(d, ConnectFailed)
        self.assertIn("User authentication failed.", failure.getErrorMessage())
        [vpnclient] = FakeVpnClient.instances
        self.assertEqual(vpnclient.events[-1], "stop")
        self.assertEqual(self.routing.events, [("withdraw",)])

    def test_noSessionInTimeFails(self):
        self.netlink.add("vpn_mc0")
        self.patch(FakeVpnClient, "sessionComesUp", False)
        original = FakeVpnClient.__init__

        def stuck(self, *a, **kw):
            original(self, *a, **kw)
            self.statuses = ["Connecting"]

        self.patch(FakeVpnClient, "__init__", stuck)
        d = self.method.connect(self.step, self.lease)
        self.clock.pump([0.02] * 200)
        self.assertIn("no SoftEther session within 3.0 s",
                      self.failureResultOf(d, ConnectFailed).getErrorMessage())
        self.assertEqual(FakeVpnClient.instances[0].events[-1], "stop")

    def test_aFailedStartIsAFailedConnect(self):
        original = FakeVpnClient.__init__

        def failing(self, *a, **kw):
            original(self, *a, **kw)
            self.failStart = RuntimeError("no /dev/net/tun")

        self.patch(FakeVpnClient, "__init__", failing)
        self.failureResultOf(self.connect(), RuntimeError)

    def test_lostWhenTheNicLosesItsCarrier(self):
        connection = self.successResultOf(self.connect())
        lost = connection.whenLost()
        self.clock.advance(1)
        self.assertNoResult(lost)
        self.netlink.links["vpn_mc0"]["up"] = False
        self.clock.advance(0.25)
        self.assertIn("lost its carrier", self.successResultOf(lost))
        self.assertIn("lost its carrier", self.successResultOf(connection.whenLost()))

    def test_lostWhenTheVpnclientDies(self):
        connection = self.successResultOf(self.connect())
        lost = connection.whenLost()
        FakeVpnClient.instances[0].onExit(Failure(ProcessTerminated(None, 9)))
        self.assertIn("vpnclient exited", self.successResultOf(lost))

    def test_disconnectClearsTheRouteAndStopsTheVpnclientQuietly(self):
        connection = self.successResultOf(self.connect())
        lost = connection.whenLost()
        self.successResultOf(connection.disconnect())
        self.assertEqual(self.routing.events[-1], ("withdraw",))
        self.assertEqual(FakeVpnClient.instances[0].events[-1], "stop")
        self.netlink.links["vpn_mc0"]["up"] = False
        self.clock.advance(1)
        self.assertNoResult(lost)

    def test_badNicNames(self):
        for nic in ("", "a" * 12, "Mc0", "a-b", "a b", "é"):
            self.assertRaises(ValueError, SoftEtherClient, self.clock, nic, self.routing,
                              self.netlink, self.stateDir)
