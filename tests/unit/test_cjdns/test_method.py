"""
Tests for L{mnigs.methods.cjdns}.  No cjdns here: the method talks to the
FAKE admin endpoint of L{tests.unit.fakecjdns}, and the tests compare the
IpTunnel calls it recorded with what tunnel/IpTunnel_admin.c expects.  The
TUN interface's addresses, the access list and the routing are recording
fakes.
"""

import ipaddress
import random
from types import SimpleNamespace

from twisted.internet import defer
from twisted.internet.defer import CancelledError
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mnigs.cjdns.admin import CjdnsAdmin
from mnigs.cjdns.names import ipForKey
from mnigs.interfaces import IClientConnection, IClientMethod, IGatewayMethod
from mnigs.methods.cjdns import CjdnsClient, CjdnsGateway, TunnelTimeout
from mnigs.methods.forward import ConnectFailed
from mnigs.protocol import (
    GATEWAY_FULL,
    INVALID_PARAMS,
    METHOD_UNAVAILABLE,
    RegisterRequest,
    RPCError,
)
from mnigs.server.leases import Lease, LeaseBook
from mnigs.server.leasestore import GroupCommit
from mnigs.server.registry import Registry
from tests.unit.fakecjdns import FakeCjdns
from tests.unit.fakeudp import LoopbackUDPReactor
from tests.unit.syntheticmesh import SyntheticMesh, randomKey

MESH = SyntheticMesh(seed=5, size=10, gateways=1)
KEYS = [randomKey(random.Random(n)) for n in range(6)]
GATEWAY_KEY, CLIENT_KEY, OTHER_KEY = KEYS[:3]
POOL = ipaddress.ip_network("100.64.0.0/29")


class Access:
    def __init__(self):
        self.events = []

    def allow(self, admission):
        self.events.append(("allow", admission.describe()))
        return defer.succeed(None)

    def deny(self, admission):
        self.events.append(("deny", admission.describe()))
        return defer.succeed(None)


class Netlink:
    def __init__(self):
        self.added = []

    def addAddress(self, name, address):
        self.added.append((name, str(address)))


class Routing:
    def __init__(self):
        self.events = []

    def install(self, interface, gateway=None, source=None):
        self.events.append(("install", interface, source))

    def withdraw(self, interface=None):
        self.events.append(("withdraw",))


def setup(password="gw-pw"):
    reactor = LoopbackUDPReactor()
    fake = FakeCjdns(MESH, password=password)
    reactor.addEndpoint(fake)
    reactor.advance(1_700_000_000)
    admin = CjdnsAdmin(reactor, password=password)
    return reactor, fake, admin


def lease(key=CLIENT_KEY, address="100.64.0.2/32", leaseId="L1", host=None):
    return Lease(leaseId, "token", f"client-{leaseId}", "", "cjdns",
                 str(host or ipForKey(key)), {"public_key": key},
                 {"address": address}, 0, 600)


class GatewayTests(SynchronousTestCase):
    def setUp(self):
        self.reactor, self.fake, admin = setup()
        self.access = Access()
        self.netlink = Netlink()
        self.gateway = CjdnsGateway(admin, self.access, self.netlink, GATEWAY_KEY, POOL, "tun0")

    def settle(self, d):
        self.reactor.advance(0)
        return self.successResultOf(d)

    def test_interface(self):
        self.assertTrue(verifyObject(IGatewayMethod, self.gateway))

    def test_offeredOnlyOnOurCjdnsAddress(self):
        own = str(ipForKey(GATEWAY_KEY))
        self.assertEqual(self.gateway.offerEntry(own), {"type": "cjdns", "public_key": GATEWAY_KEY})
        self.assertIsNone(self.gateway.offerEntry("10.0.0.1"))
        self.assertIsNone(self.gateway.offerEntry(str(ipForKey(OTHER_KEY))))
        self.assertIsNone(self.gateway.offerEntry("not an address"))

    def test_checkParams(self):
        self.assertEqual(self.gateway.checkParams({"public_key": CLIENT_KEY.upper()[:-2] + ".k"}),
                         {"public_key": CLIENT_KEY})
        for params, words in (({}, "needs params.public_key"),
                              ({"public_key": CLIENT_KEY, "x": 1}, "unknown"),
                              ({"public_key": CLIENT_KEY[:50]}, "key must be 52 characters long"),
                              ({"public_key": CLIENT_KEY[:52] + ".j"}, "key must end in .k"),
                              ({"public_key": "a" * 52 + ".k"}, "failed to base-32 decode key"),
                              ({"public_key": "0" * 52 + ".k"}, "not a valid cjdns public key"),
                              ({"public_key": 5}, "key must be 52 characters long")):
            error = self.assertRaises(RPCError, self.gateway.checkParams, params)
            self.assertEqual(error.code, INVALID_PARAMS)
            self.assertIn(words, error.message)

    def test_checkClientWantsCjdnsAddress(self):
        self.gateway.checkClient(str(ipForKey(CLIENT_KEY)), "fc00::1")
        for host in ("10.0.0.2", "fd00::2"):
            error = self.assertRaises(RPCError, self.gateway.checkClient, host, "fc00::1")
            self.assertEqual(error.code, METHOD_UNAVAILABLE)

    def test_allocateChecksTheKeyAgainstTheSender(self):
        """
        The request must come from the fc00::/8 address of the key it
        registers (crypto/AddressCalc.c), so nobody can claim another's key.
        """
        config = self.gateway.allocate(lease(), [], "fc00::1")
        self.assertEqual(config, {"address": "100.64.0.2/32", "gateway_address": "100.64.0.1",
                                  "peer_public_key": GATEWAY_KEY, "dns": []})
        error = self.assertRaises(RPCError, self.gateway.allocate,
                                  lease(host=ipForKey(OTHER_KEY)), [], "fc00::1")
        self.assertEqual(error.code, METHOD_UNAVAILABLE)

    def test_allocateFromThePool(self):
        others = [lease(KEYS[3 + n], f"100.64.0.{2 + n}/32", f"O{n}") for n in range(2)]
        self.assertEqual(self.gateway.allocate(lease(), others, "")["address"], "100.64.0.4/32")
        error = self.assertRaises(RPCError, self.gateway.allocate, lease(KEYS[3]), others, "")
        self.assertEqual(error.code, METHOD_UNAVAILABLE)
        error = self.assertRaises(RPCError, self.gateway.allocate, lease(GATEWAY_KEY), [], "")
        self.assertEqual(error.code, METHOD_UNAVAILABLE)
        full = [lease(randomKey(random.Random(100 + n)), f"100.64.0.{n}/32", f"F{n}")
                for n in range(2, 7)]
        error = self.assertRaises(RPCError, self.gateway.allocate, lease(), full, "")
        self.assertEqual(error.code, GATEWAY_FULL)

    def test_grantAllowsTheConnection(self):
        """
        Against the fake cjdns admin endpoint (no cjdns here): grant is
        IpTunnel_allowConnection with the client's key, its /32, prefix 32
        (no route from cjdns) and alloc 32 (what binds the address to the
        key's connection inside cjdns), then the access list's allow of
        that address from cjdns's TUN only, where reverse-path filtering
        is strict.
        """
        self.assertEqual(self.gateway.tunnelInterfaces(), ("tun0",))
        self.settle(self.gateway.grant(lease()))
        self.assertEqual(self.fake.calls, [("IpTunnel_allowConnection", {
            "publicKeyOfAuthorizedNode": CLIENT_KEY, "ip4Address": "100.64.0.2",
            "ip4Prefix": 32, "ip4Alloc": 32})])
        self.assertEqual(self.fake.connections, [{
            "number": 0, "key": CLIENT_KEY, "outgoing": 0, "ip4Address": "100.64.0.2",
            "ip4Prefix": 32, "ip4Alloc": 32}])
        self.assertEqual(self.access.events, [("allow", "100.64.0.2 on tun0")])

    def test_revokeRemovesOnlyThatConnection(self):
        """
        Against the fake cjdns admin endpoint (no cjdns here): revoke finds
        the connection by listConnections and showConnection (key and
        address), removes it, and leaves other tunnels alone; revoking
        again is harmless.
        """
        mine, theirs = lease(), lease(OTHER_KEY, "100.64.0.3/32", "L2")
        self.settle(self.gateway.grant(mine))
        self.settle(self.gateway.grant(theirs))
        self.fake.do_IpTunnel_allowConnection({"publicKeyOfAuthorizedNode": CLIENT_KEY,
                                               "ip4Address": "192.168.7.7"})
        self.fake.calls.clear()
        self.settle(self.gateway.revoke(mine))
        self.assertEqual([name for name, _ in self.fake.calls],
                         ["IpTunnel_listConnections"] + ["IpTunnel_showConnection"] * 3
                         + ["IpTunnel_removeConnection"])
        self.assertEqual(self.fake.callsOf("IpTunnel_removeConnection"), [{"connection": 0}])
        self.assertEqual([c["number"] for c in self.fake.connections], [1, 2])
        self.assertEqual(self.access.events[-1], ("deny", "100.64.0.2 on tun0"))
        self.fake.calls.clear()
        self.settle(self.gateway.revoke(mine))
        self.assertEqual(self.fake.callsOf("IpTunnel_removeConnection"), [])

    def test_startAdoptsAndCleansUp(self):
        """
        Against the fake cjdns admin endpoint (no cjdns here): after a
        restart the tunnels of live leases are kept or added, a stale one
        of our pool is removed, one outside the pool is not ours to touch;
        the pool address goes on cjdns's TUN.  stop removes ours.
        """
        kept, missing = lease(), lease(OTHER_KEY, "100.64.0.3/32", "L2")
        for key, address in ((CLIENT_KEY, "100.64.0.2"), (KEYS[3], "100.64.0.5"),
                             (KEYS[4], "10.1.1.1")):
            self.fake.do_IpTunnel_allowConnection({"publicKeyOfAuthorizedNode": key,
                                                   "ip4Address": address, "ip4Alloc": 32})
        self.settle(self.gateway.start([kept, missing]))
        self.assertEqual(self.netlink.added, [("tun0", "100.64.0.1/29")])
        self.assertEqual(self.fake.callsOf("IpTunnel_removeConnection"), [{"connection": 1}])
        self.assertEqual(self.fake.callsOf("IpTunnel_allowConnection")[-1]["publicKeyOfAuthorizedNode"],
                         OTHER_KEY)
        self.assertEqual(sorted((c["key"], c["ip4Address"]) for c in self.fake.connections),
                         sorted([(CLIENT_KEY, "100.64.0.2"), (KEYS[4], "10.1.1.1"),
                                 (OTHER_KEY, "100.64.0.3")]))
        self.settle(self.gateway.stop())
        self.assertEqual([(c["key"], c["ip4Address"]) for c in self.fake.connections],
                         [(KEYS[4], "10.1.1.1")])

    def test_releaseAndExpiryThroughTheRegistry(self):
        """
        Against the fake cjdns admin endpoint (no cjdns here): the server's
        registry registering, releasing and expiring cjdns leases leaves no
        tunnel behind.
        """
        events = []
        store = SimpleNamespace(save=lambda records: events.append("save"))
        book = LeaseBook(maxClients=4, leaseSeconds=60)
        hooks = SimpleNamespace(run=lambda *args: None, ask=lambda *args: None)
        registry = Registry(self.reactor, book, {"cjdns": self.gateway},
                            GroupCommit(self.reactor, store, book.records), hooks)
        clientHost = str(ipForKey(CLIENT_KEY))
        own = str(ipForKey(GATEWAY_KEY))
        first = self.settle(registry.register(
            RegisterRequest("c1", "", "cjdns", {"public_key": CLIENT_KEY}), clientHost, own))
        self.assertEqual(first["lease"]["config"]["address"], "100.64.0.2/32")
        self.assertEqual(len(self.fake.connections), 1)
        self.settle(registry.unregister(first["lease"]["id"], first["lease"]["token"]))
        self.assertEqual(self.fake.connections, [])
        self.settle(registry.register(
            RegisterRequest("c2", "", "cjdns", {"public_key": OTHER_KEY}),
            str(ipForKey(OTHER_KEY)), own))
        self.assertEqual(len(self.fake.connections), 1)
        self.reactor.advance(61)
        self.settle(registry.sweep())
        self.assertEqual(self.fake.connections, [])
        self.assertEqual(self.access.events, [("allow", "100.64.0.2 on tun0"), ("deny", "100.64.0.2 on tun0"),
                                              ("allow", "100.64.0.2 on tun0"), ("deny", "100.64.0.2 on tun0")])
        d = registry.register(RegisterRequest("c3", "", "cjdns", {"public_key": CLIENT_KEY}),
                              str(ipForKey(OTHER_KEY)), own)
        self.reactor.advance(0)
        self.assertEqual(self.failureResultOf(d, RPCError).value.code, METHOD_UNAVAILABLE)


class TunAddresses:
    def __init__(self):
        self.byInterface = {}

    def __call__(self, ifname):
        if ifname not in self.byInterface:
            raise LookupError(ifname)
        return list(self.byInterface[ifname])


class ClientTests(SynchronousTestCase):
    def setUp(self):
        self.reactor, self.fake, admin = setup(password="client-pw")
        self.routing = Routing()
        self.addresses = TunAddresses()
        self.client = CjdnsClient(self.reactor, admin, self.routing, CLIENT_KEY, "tun0",
                                  addresses=self.addresses, connectTimeout=10, watchInterval=5)
        self.step = SimpleNamespace(host=str(ipForKey(GATEWAY_KEY)),
                                    offerEntry={"type": "cjdns", "public_key": GATEWAY_KEY})
        self.lease = {"config": {"address": "100.64.0.2/32", "gateway_address": "100.64.0.1",
                                 "peer_public_key": GATEWAY_KEY, "dns": []}}

    def issueAddressAfter(self, seconds):
        # What cjdns does once the gateway answers IpTunnel_getAddresses
        # (tunnel/IpTunnel.c, incomingAddresses: address/ip4Alloc on the TUN).
        def connected(connection):
            self.reactor.callLater(seconds, self.addresses.byInterface.__setitem__, "tun0",
                                   [ipaddress.ip_interface("100.64.0.2/32")])
        self.fake.onConnectTo = connected

    def test_interface(self):
        self.assertTrue(verifyObject(IClientMethod, self.client))
        self.assertEqual(self.client.registerParams(self.step.offerEntry), {"public_key": CLIENT_KEY})

    def connect(self):
        d = self.client.connect(self.step, self.lease)
        self.reactor.advance(0)
        return d

    def test_connectsThenRoutes(self):
        """
        Against the fake cjdns admin endpoint (no cjdns here): connectTo
        the gateway's key, wait for the /32 on the TUN, then mnigs's
        default route through it.
        """
        self.issueAddressAfter(2)
        d = self.connect()
        self.assertEqual(self.fake.calls, [("IpTunnel_connectTo",
                                            {"publicKeyOfNodeToConnectTo": GATEWAY_KEY})])
        self.assertNoResult(d)
        self.assertEqual(self.routing.events, [])
        self.reactor.pump([0.25] * 7)
        self.assertNoResult(d)
        self.reactor.pump([0.25, 0])
        connection = self.successResultOf(d)
        self.assertEqual(self.routing.events, [("install", "tun0", "100.64.0.2")])
        self.assertEqual(connection.describe()["connection"], 0)
        verifyObject(IClientConnection, connection)
        self.assertEqual(connection.device, "tun0")
        self.assertEqual(self.fake.connections[0]["outgoing"], 1)

        connection.disconnect()
        self.reactor.advance(0)
        self.assertEqual(self.routing.events[-1], ("withdraw",))
        self.assertEqual(self.fake.callsOf("IpTunnel_removeConnection"), [{"connection": 0}])
        self.assertEqual(self.fake.connections, [])

    def test_noAddressInTime(self):
        """
        Against the fake cjdns admin endpoint (no cjdns here): no address
        within the timeout fails the connect and removes the connection.
        """
        d = self.connect()
        self.reactor.advance(10.5)
        self.reactor.advance(0)
        self.failureResultOf(d, TunnelTimeout)
        self.assertEqual(self.fake.callsOf("IpTunnel_removeConnection"), [{"connection": 0}])
        self.assertEqual(self.routing.events, [])
        self.assertEqual(self.fake.connections, [])

    def test_cancelWhileWaiting(self):
        """Against the fake cjdns admin endpoint (no cjdns here): cancel cleans up."""
        d = self.connect()
        d.cancel()
        self.reactor.advance(0)
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.fake.connections, [])

    def test_lostWhenTheAddressGoes(self):
        """
        Against the fake cjdns admin endpoint (no cjdns here): the address
        leaving the TUN (cjdns gone, tunnel removed) is a lost connection.
        """
        self.issueAddressAfter(0)
        d = self.connect()
        self.reactor.advance(0)
        connection = self.successResultOf(d)
        lost = connection.whenLost()
        self.reactor.advance(5)
        self.assertNoResult(lost)
        del self.addresses.byInterface["tun0"]
        self.reactor.advance(5)
        self.assertIn("left tun0", self.successResultOf(lost))

    def test_refusesAWrongOrBrokenOffer(self):
        """
        Against the fake cjdns admin endpoint (no cjdns here): an offer key
        that is not the answering gateway's, or a broken lease, never
        reaches cjdns.
        """
        self.step.offerEntry = {"type": "cjdns", "public_key": OTHER_KEY}
        self.failureResultOf(self.connect(), ConnectFailed)
        self.step.offerEntry = {"type": "cjdns", "public_key": "junk"}
        self.failureResultOf(self.connect(), ConnectFailed)
        self.step.offerEntry = {"type": "cjdns", "public_key": GATEWAY_KEY}
        self.lease = {"config": {"address": "fd00::2/128", "gateway_address": "100.64.0.1"}}
        self.failureResultOf(self.connect(), ConnectFailed)
        self.assertEqual(self.fake.calls, [])
