"""
What each gateway method hands the gate (L{mnigs.system.admission.Admission}):
forward binds a lease to the interface and MAC its registration came from
and keeps them in the lease; the tunnel methods bind to their interface;
restored leases give the same admissions as their grants did.  (OpenVPN,
SoftEther and cjdns: their own test_method modules.)
"""

import ipaddress

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mnigs.system.admission import Admission
from mnigs.interfaces import IGatewayMethod
from mnigs.methods.forward import ForwardGateway
from mnigs.methods.wireguard import WireGuardGateway
from mnigs.protocol import METHOD_UNAVAILABLE, RPCError
from mnigs.server.leases import Lease
from mnigs.server.service import GatewayService
from mnigs.wireguard.uapi import generatePrivateKey, publicKey

ip = ipaddress.ip_address
MAC = "02:00:5e:10:00:02"


class RecordingAccess:
    def __init__(self):
        self.calls = []

    def allow(self, admission):
        self.calls.append(("allow", admission))
        return defer.succeed(None)

    def deny(self, admission):
        self.calls.append(("deny", admission))
        return defer.succeed(None)


class FakeNetlink:
    """A gateway on 10.99.1.1/24 (m0) and 10.99.2.1/24 (m1)."""

    def __init__(self, neighbours):
        self.neighbours = neighbours  # (address text, interface) -> MAC
        self.asked = []

    def connectedInterface(self, address):
        return {"10.99.1": "m0", "10.99.2": "m1", "10.99.3": "wgm"}.get(
            str(address).rsplit(".", 1)[0])

    def addresses(self, interface):
        return [ipaddress.ip_interface({"m0": "10.99.1.1/24", "m1": "10.99.2.1/24",
                                        "wgm": "10.99.3.1/24"}[interface])]

    def isEthernet(self, interface):
        return interface != "wgm"

    def neighbourLinkAddress(self, address, interface):
        self.asked.append((str(address), interface))
        return self.neighbours.get((str(address), interface))


def lease(method, clientHost="10.99.1.2", params=None, leaseId="aaaa"):
    return Lease(id=leaseId, token="t" * 32, clientId=f"client-{leaseId}", clientName="",
                 method=method, clientHost=clientHost, params=params or {}, config={},
                 createdAt=0.0, expiresAt=600.0)


class ForwardTests(SynchronousTestCase):
    def setUp(self):
        self.access = RecordingAccess()
        self.netlink = FakeNetlink({("10.99.1.2", "m0"): MAC})
        self.method = ForwardGateway(self.access, self.netlink, ["m0", "m1"])

    def test_providesTheInterface(self):
        verifyObject(IGatewayMethod, self.method)
        self.assertEqual(self.method.tunnelInterfaces(), ())

    def test_allocateRecordsTheInterfaceAndMACOfTheRequest(self):
        fresh = lease("forward")
        fresh.config = self.method.allocate(fresh, [], "10.251.0.3")
        self.assertEqual(fresh.config["address"], "10.99.1.2/32")
        self.assertEqual(fresh.origin, {"interface": "m0", "link_address": MAC})
        self.assertNotIn(MAC, repr(fresh.config))  # the origin is not sent
        self.assertEqual(self.netlink.asked, [("10.99.1.2", "m0")])

    def test_noKnownMACNoLease(self):
        error = self.assertRaises(RPCError, self.method.allocate, lease("forward", "10.99.2.7"),
                                  [], "10.251.0.3")
        self.assertEqual(error.code, METHOD_UNAVAILABLE)

    def test_aLinkWithoutMACsBindsTheInterfaceAlone(self):
        """
        A mesh link over a tun or WireGuard interface has no neighbour
        MACs: the lease is bound to that interface.
        """
        fresh = lease("forward", "10.99.3.2")
        fresh.config = self.method.allocate(fresh, [], "10.251.0.3")
        self.assertEqual(fresh.origin, {"interface": "wgm"})
        self.successResultOf(self.method.grant(fresh))
        self.assertEqual(self.access.calls, [("allow", Admission(ip("10.99.3.2"), "wgm"))])

    def test_grantAndRevokeBindAddressInterfaceAndMAC(self):
        fresh = lease("forward")
        fresh.config = self.method.allocate(fresh, [], "10.251.0.3")
        self.successResultOf(self.method.grant(fresh))
        self.successResultOf(self.method.revoke(fresh))
        expected = Admission(ip("10.99.1.2"), "m0", MAC)
        self.assertEqual(self.access.calls, [("allow", expected), ("deny", expected)])

    def test_aRestoredLeaseGivesTheSameAdmission(self):
        """
        The origin travels in the lease record: after a restart the gate
        is rebuilt from it, not from whatever the neighbour table says now.
        """
        fresh = lease("forward")
        fresh.config = self.method.allocate(fresh, [], "10.251.0.3")
        restored = Lease.fromRecord(fresh.record())
        self.netlink.neighbours.clear()
        self.assertEqual(self.method.admissions(restored)[0], Admission(ip("10.99.1.2"), "m0", MAC))

    def test_aDamagedOriginIsRefused(self):
        fresh = lease("forward")
        fresh.config = {"address": "10.99.1.2/32"}
        for origin in ({}, {"link_address": MAC}, {"interface": 'm0" accept', "link_address": MAC},
                       {"interface": "m0", "link_address": "ff:ff:ff:ff:ff:ff"}):
            fresh.origin = origin
            self.assertRaises((KeyError, ValueError), self.method.admissions, fresh)


class FakeDevice:
    ifname = "mw0"

    def __init__(self):
        self.peers = []

    def setPeers(self, add=(), remove=()):
        self.peers.append((list(add), list(remove)))
        return defer.succeed(None)

    def start(self):
        return defer.succeed(None)

    def onDeath(self, callback):
        pass

    def onRestored(self, callback):
        pass


class WireGuardTests(SynchronousTestCase):
    def test_grantAndRevokeBindTheInnerAddressToTheInterface(self):
        access = RecordingAccess()
        method = WireGuardGateway(FakeDevice(), access, publicKey(generatePrivateKey()),
                                  ipaddress.ip_network("100.64.0.0/24"), 51820)
        self.assertEqual(method.tunnelInterfaces(), ("mw0",))
        fresh = lease("wireguard", params={"public_key": publicKey(generatePrivateKey())})
        fresh.config = method.allocate(fresh, [], "10.251.0.3")
        self.successResultOf(method.grant(fresh))
        self.successResultOf(method.revoke(fresh))
        expected = Admission(ip("100.64.0.2"), "mw0")
        self.assertEqual(access.calls, [("allow", expected), ("deny", expected)])
        self.assertEqual(fresh.origin, {})


class LeaseRecordTests(SynchronousTestCase):
    def test_originIsStoredAndRestored(self):
        fresh = lease("forward")
        fresh.origin = {"interface": "m0", "link_address": MAC}
        self.assertEqual(Lease.fromRecord(fresh.record()).origin, fresh.origin)

    def test_recordsFromBeforeOriginsHaveNone(self):
        record = lease("wireguard").record()
        del record["origin"]
        self.assertEqual(Lease.fromRecord(record).origin, {})

    def test_originMustBeAnObject(self):
        record = dict(lease("forward").record(), origin=["m0"])
        self.assertRaises(TypeError, Lease.fromRecord, record)


class Book:
    def __init__(self, leases):
        self.leases = list(leases)

    def live(self):
        return list(self.leases)

    def remove(self, lease):
        self.leases.remove(lease)


class Committer:
    commits = 0

    def commit(self):
        self.commits += 1


class RestoredAdmissionsTests(SynchronousTestCase):
    def test_restoredLeasesGiveTheirGrantsAdmissionsAndOriginlessOnesGo(self):
        """
        What L{GatewayService.bringUp} installs: each restored lease's
        admission, as its grant allowed it; a forward lease stored before
        leases had an origin cannot say where it lives and is dropped.
        """
        forward = ForwardGateway(RecordingAccess(), FakeNetlink({}), ["m0"])
        wireguard = WireGuardGateway(FakeDevice(), RecordingAccess(),
                                     publicKey(generatePrivateKey()),
                                     ipaddress.ip_network("100.64.0.0/24"), 51820)
        bound = lease("forward", leaseId="f1")
        bound.config = {"address": "10.99.1.2/32"}
        bound.origin = {"interface": "m0", "link_address": MAC}
        old = lease("forward", "10.99.1.3", leaseId="f2")
        old.config = {"address": "10.99.1.3/32"}
        tunnel = lease("wireguard", leaseId="w1")
        tunnel.config = {"address": "100.64.0.2/32"}

        class Service:
            book = Book([bound, old, tunnel])
            methods = {"forward": forward, "wireguard": wireguard}
            committer = Committer()

        service = Service()
        admissions = GatewayService.restoredAdmissions(service)
        self.assertEqual(admissions, [Admission(ip("10.99.1.2"), "m0", MAC),
                                      Admission(ip("100.64.0.2"), "mw0")])
        self.assertEqual(service.book.live(), [bound, tunnel])
        self.assertEqual(service.committer.commits, 1)
