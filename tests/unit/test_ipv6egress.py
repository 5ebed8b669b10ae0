"""
IPv6 egress through WireGuard (issue 15): the pool both sides accept
(L{mnigs.methods.inet6}), the gateway's inner IPv6 address per lease and
its gate admissions, the offer's C{pool6} and the client's checks of a
lease against it (hostile gateways), the server's configuration errors
and the gate's unmasqueraded routed pools.  The kernel's side is in
tests.mesh.test_ipv6.
"""

import ipaddress
import os

from twisted.trial.unittest import SynchronousTestCase

from mnigs.client.config import loadClientConfig
from mnigs.daemon.config import ConfigError
from mnigs.methods import inet6
from mnigs.methods import openvpn as openvpnMethod
from mnigs.openvpn import management
from mnigs.methods.wireguard import WireGuardClient, WireGuardGateway, checkLeaseConfig, kernelHasIPv6
from mnigs.protocol import GATEWAY_FULL, OfferRejected, RPCError, certificateSHA256, verifyOffer
from mnigs.server.config import loadServerConfig, routedPools6
from mnigs.server.leases import Lease
from mnigs.system.admission import Admission
from mnigs.system.nft import tableScript
from mnigs.wireguard.uapi import generatePrivateKey, publicKey
from tests.unit import test_config
from tests.unit.test_gatemethods import FakeDevice, RecordingAccess, lease
from tests.unit.test_openvpn.test_config import caPEM, goodConfig
from tests.unit.test_protocol import makeOffer

ip = ipaddress.ip_address
net = ipaddress.ip_network
POOL6 = "fd64:6d6e:6967::/64"
GW_KEY = publicKey(generatePrivateKey())


class PoolTests(SynchronousTestCase):
    def test_aUniqueLocalOrGlobalPrefixIsAPool(self):
        self.assertEqual(inet6.pool6(POOL6), net(POOL6))
        self.assertEqual(inet6.pool6("2001:db8:1::/48"), net("2001:db8:1::/48"))
        self.assertEqual(inet6.gatewayAddress6(net(POOL6)), ip("fd64:6d6e:6967::1"))

    def test_whatIsNeverAPool(self):
        for value, reason in (
                ("100.64.0.0/24", "not an IPv6 network"),
                ("fd64::1/64", "not a network"),          # host bits set
                ("fd64::/40", "/48 to /126"),
                ("fd64::/127", "/48 to /126"),
                ("200:1::/64", "overlaps 200::/7"),       # Yggdrasil
                ("fc00:1::/64", "overlaps fc00::/8"),     # cjdns
                ("fe80::/64", "overlaps fe80::/10"),
                ("ff02::/64", "overlaps ff00::/8"),
                ("::ffff:0:0/96", "overlaps ::/8"),        # IPv4-mapped
                ("64:ff9b::/96", "overlaps ::/8"),        # NAT64
                ("fd64::/64 ", "not a network"),
                (7, "written as text")):
            error = self.assertRaises(ValueError, inet6.pool6, value)
            self.assertIn(reason, str(error), value)


def config6(address6="fd64:6d6e:6967::2/128", gateway6="fd64:6d6e:6967::1"):
    return {"address": "100.64.0.2/32", "gateway_address": "100.64.0.1",
            "peer_public_key": GW_KEY, "endpoint": "10.99.0.5:51820", "dns": [],
            "address6": address6, "gateway_address6": gateway6}


class LeaseAddressTests(SynchronousTestCase):
    def test_aLeaseWithinTheOfferedPool(self):
        self.assertEqual(inet6.leaseAddresses6(config6(), net(POOL6)),
                         (ip("fd64:6d6e:6967::2"), ip("fd64:6d6e:6967::1")))

    def test_aLeaseWithoutIPv6(self):
        self.assertEqual(inet6.leaseAddresses6({"address": "100.64.0.2/32"}, None), (None, None))
        self.assertEqual(inet6.leaseAddresses6({"address": "100.64.0.2/32"}, net(POOL6)),
                         (None, None))

    def test_hostileLeasesAreRefused(self):
        for config, pool, reason in (
                (config6(), None, "names no pool6"),
                (config6(address6="2001:db8::2/128"), net(POOL6), "not a host of the offered pool6"),
                (config6(address6="200::2/128"), net(POOL6), "not a host"),      # a mesh address
                (config6(address6="fd64:6d6e:6967::/128"), net(POOL6), "not a host"),
                (config6(gateway6="fd64:1::1"), net(POOL6), "gateway_address6"),
                (config6(address6="fd64:6d6e:6967::2/64"), net(POOL6), "an IPv6 /128"),
                (config6(address6="100.64.0.9/32"), net(POOL6), "an IPv6 /128"),
                (config6(gateway6="100.64.0.1"), net(POOL6), "must be an IPv6 address"),
                (config6(address6="fd64:6d6e:6967::1/128"), net(POOL6), "the gateway's own"),
                (config6(address6=None), net(POOL6), "must both be text"),
                (config6(address6=["fd64::2"]), net(POOL6), "must both be text"),
                (config6(address6="fd64:6d6e:6967::2%eth0/128"), net(POOL6), "without a zone"),
                (config6(gateway6="fd64:6d6e:6967::1%1"), net(POOL6), "without a zone")):
            error = self.assertRaises(ValueError, inet6.leaseAddresses6, config, pool)
            self.assertIn(reason, str(error), config)


def gateway(pool6=POOL6, pool="100.64.0.0/24"):
    access = RecordingAccess()
    method = WireGuardGateway(FakeDevice(), access, GW_KEY, net(pool), 51820,
                              pool6=net(pool6) if pool6 else None)
    return method, access


def wgLease(leaseId="aaaa"):
    return lease("wireguard", params={"public_key": publicKey(generatePrivateKey())},
                 leaseId=leaseId)


class GatewayTests(SynchronousTestCase):
    def test_aLeaseGetsAnInnerIPv6AddressAndBothAreAdmitted(self):
        method, access = gateway()
        fresh = wgLease()
        fresh.config = method.allocate(fresh, [], "10.251.0.3")
        self.assertEqual((fresh.config["address6"], fresh.config["gateway_address6"]),
                         ("fd64:6d6e:6967::2/128", "fd64:6d6e:6967::1"))
        self.successResultOf(method.grant(fresh))
        [([peer], [])] = method.device.peers
        self.assertEqual([str(n) for n in peer.allowed_ips],
                         ["100.64.0.2/32", "fd64:6d6e:6967::2/128"])
        self.successResultOf(method.revoke(fresh))
        v4, v6 = Admission(ip("100.64.0.2"), "mw0"), Admission(ip("fd64:6d6e:6967::2"), "mw0")
        self.assertEqual(access.calls, [("allow", v4), ("allow", v6), ("deny", v4), ("deny", v6)])

    def test_theOfferAndThePoolRoutesNameThePool(self):
        method, _ = gateway()
        self.assertEqual(method.offerEntry("10.99.0.5")["pool6"], POOL6)
        self.assertEqual(method.tunnelPools(), ((net("100.64.0.0/24"), "mw0"),
                                                (net(POOL6), "mw0")))
        self.assertEqual(method.describe()["pool6"], POOL6)

    def test_withoutAPoolNothingIPv6(self):
        method, access = gateway(pool6=None)
        fresh = wgLease()
        fresh.config = method.allocate(fresh, [], "10.251.0.3")
        self.assertNotIn("address6", fresh.config)
        self.assertNotIn("pool6", method.offerEntry("10.99.0.5"))
        self.assertEqual(method.tunnelPools(), ((net("100.64.0.0/24"), "mw0"),))
        self.assertEqual(method.admissions(fresh), (Admission(ip("100.64.0.2"), "mw0"),))

    def test_aRestoredLeaseKeepsItsAddressAndTheNextGetsAnother(self):
        method, _ = gateway()
        first = wgLease("aaaa")
        first.config = method.allocate(first, [], "10.251.0.3")
        restored = Lease.fromRecord(first.record())
        method, _ = gateway()
        self.successResultOf(method.start([restored]))
        self.assertEqual(method.admissions(restored)[1], Admission(ip("fd64:6d6e:6967::2"), "mw0"))
        second = wgLease("bbbb")
        second.config = method.allocate(second, [restored], "10.251.0.3")
        self.assertEqual(second.config["address6"], "fd64:6d6e:6967::3/128")

    def test_aLeaseRestoredAfterIPv6WasSwitchedOffOrMovedIsAdmittedOnIPv4Only(self):
        method, _ = gateway()
        first = wgLease()
        first.config = method.allocate(first, [], "10.251.0.3")
        for pool6 in (None, "fd64:1::/64"):
            method, _ = gateway(pool6=pool6)
            self.assertEqual(method.admissions(first), (Admission(ip("100.64.0.2"), "mw0"),))
            self.assertEqual([str(n) for n in method._peer(first).allowed_ips], ["100.64.0.2/32"])

    def test_aFullIPv6PoolGivesBackTheIPv4Address(self):
        method, _ = gateway(pool6="fd64::/126")  # room for ::2 and ::3
        leases = []
        for leaseId in ("aaaa", "bbbb"):
            fresh = wgLease(leaseId)
            fresh.config = method.allocate(fresh, list(leases), "10.251.0.3")
            leases.append(fresh)
        error = self.assertRaises(RPCError, method.allocate, wgLease("cccc"), leases, "10.251.0.3")
        self.assertEqual(error.code, GATEWAY_FULL)
        self.assertIn("IPv6", error.message)
        self.assertIsNone(method._addresses.owner(ip("100.64.0.4")))  # given back
        # A lease that goes frees its IPv6 address for the next.
        method._release(leases[0])
        fresh = wgLease("dddd")
        fresh.config = method.allocate(fresh, leases[1:], "10.251.0.3")
        self.assertEqual(fresh.config["address6"], "fd64::2/128")


class OfferTests(SynchronousTestCase):
    def entry(self, **extra):
        return dict({"type": "wireguard", "endpoint": "10.99.0.5:51820",
                     "public_key": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}, **extra)

    def test_anOfferedPoolIsKept(self):
        offer, _ = makeOffer(methods=[self.entry(pool6=POOL6)])
        self.assertEqual(verifyOffer(offer).method("wireguard")["pool6"], POOL6)

    def test_anOfferWithoutAPoolIsAsBefore(self):
        offer, _ = makeOffer(methods=[self.entry()])
        self.assertNotIn("pool6", verifyOffer(offer).method("wireguard"))

    def test_aHostilePoolMakesTheOfferInvalid(self):
        for pool in ("::/0", "200::/7", "fc00::/64", "fe80::/64", "100.64.0.0/24", 64, None,
                     "x" * 100):
            offer, _ = makeOffer(methods=[self.entry(pool6=pool)])
            error = self.assertRaises(OfferRejected, verifyOffer, offer)
            self.assertIn("wireguard method", str(error), pool)


class ClientCheckTests(SynchronousTestCase):
    def client(self, ipv6=True):
        return WireGuardClient(None, "mc0", generatePrivateKey(), routing=None, ipv6=ipv6)

    def entry(self, pool6=POOL6):
        entry = {"type": "wireguard", "endpoint": "10.99.0.5:51820", "public_key": GW_KEY}
        if pool6:
            entry["pool6"] = pool6
        return entry

    def test_aLeaseThatAgreesWithTheOffer(self):
        self.client().checkAgainstOffer(self.entry(), config6())
        self.client().checkAgainstOffer(self.entry(), {"peer_public_key": GW_KEY})
        self.client().checkAgainstOffer(self.entry(pool6=None), {"peer_public_key": GW_KEY})

    def test_aLeaseWhoseIPv6DisagreesWithTheOfferIsRefused(self):
        for entry, config, reason in (
                (self.entry(), config6(address6="fd99::2/128"), "not a host of the offered pool6"),
                (self.entry(pool6=None), config6(), "names no pool6"),
                (self.entry(), config6(gateway6=None), "must both be text")):
            for ipv6 in (True, False):  # a lie is a lie, used or not
                error = self.assertRaises(ValueError, self.client(ipv6).checkAgainstOffer,
                                          entry, config)
                self.assertIn(reason, str(error))

    def test_theCheckedConfigCarriesTheIPv6Addresses(self):
        checked = checkLeaseConfig(config6())
        self.assertEqual((checked["address6"], checked["gateway_address6"]),
                         ("fd64:6d6e:6967::2/128", "fd64:6d6e:6967::1"))
        self.assertNotIn("address6", checkLeaseConfig(dict(config6(), address6=None,
                                                           gateway_address6=None)))

    def test_kernelHasIPv6(self):
        path = self.mktemp()
        for text, expected in (("0\n", True), ("1\n", False)):
            with open(path, "w") as f:
                f.write(text)
            self.assertEqual(kernelHasIPv6(path), expected)
        self.assertFalse(kernelHasIPv6(path + ".missing"))


SERVER = """
[uplink]
interface = "up0"
[methods.wireguard]
"""


class ConfigTests(test_config.ConfigFileTestCase):
    assertConfigError = test_config.ServerConfigTests.assertConfigError

    def test_ipv6IsOffByDefault(self):
        config = loadServerConfig(self.write(SERVER))
        self.assertIsNone(config.methods.wireguard.pool6)
        self.assertTrue(config.methods.wireguard.nat6)
        self.assertEqual(routedPools6(config), [])

    def test_aPoolAndWhetherItIsRouted(self):
        config = loadServerConfig(self.write(SERVER + f'pool6 = "{POOL6}"\n'))
        self.assertEqual(config.methods.wireguard.pool6, net(POOL6))
        self.assertEqual(routedPools6(config), [])
        config = loadServerConfig(self.write(SERVER + 'pool6 = "2001:db8:5::/64"\nnat6 = false\n'))
        self.assertEqual(routedPools6(config), [net("2001:db8:5::/64")])
        config = loadServerConfig(self.write(
            SERVER + 'enabled = false\npool6 = "2001:db8:5::/64"\nnat6 = false\n'
            + '[methods.forward]\n'))
        self.assertEqual(routedPools6(config), [])

    def test_badPoolsNameTheKeyAndTheReason(self):
        self.assertConfigError(SERVER + 'pool6 = "100.64.8.0/24"\n', "methods.wireguard.pool6",
                               "not an IPv6 network")
        self.assertConfigError(SERVER + 'pool6 = "200:1::/64"\n', "methods.wireguard.pool6",
                               "overlaps 200::/7")
        self.assertConfigError(SERVER + 'pool6 = "fd64::/32"\n', "methods.wireguard.pool6",
                               "/48 to /126")
        self.assertConfigError(SERVER + 'pool6 = "fd64::1/64"\n', "methods.wireguard.pool6",
                               "host bits set")
        self.assertConfigError(SERVER + 'nat6 = "yes"\n', "methods.wireguard.nat6", "true/false")

    def test_twoMethodsPoolsMustNotOverlap(self):
        self.assertConfigError(SERVER + 'pool6 = "fd64::/64"\n[methods.openvpn]\npool6 = "fd64::/48"\n',
                               "methods.openvpn.pool6", "overlaps methods.wireguard.pool6")
        config = loadServerConfig(self.write(
            SERVER + 'pool6 = "fd64::/64"\n[methods.openvpn]\npool6 = "2001:db8:6::/64"\n'
            + 'nat6 = false\n'))
        self.assertEqual(routedPools6(config), [net("2001:db8:6::/64")])

    def test_theIPv4PoolIsStillIPv4(self):
        self.assertConfigError(SERVER + f'pool = "{POOL6}"\n', "methods.wireguard.pool",
                               "must be an IPv4 network")

    def test_theClientCanIgnoreIPv6(self):
        path = self.write("[methods.wireguard]\nipv6 = false\n")
        self.assertFalse(loadClientConfig(path).methods.wireguard.ipv6)
        self.assertTrue(loadClientConfig(self.write("")).methods.wireguard.ipv6)
        e = self.assertRaises(ConfigError, loadClientConfig,
                              self.write("[methods.wireguard]\nipv6 = 1\n"))
        self.assertEqual(e.key, "methods.wireguard.ipv6")


class GateTests(SynchronousTestCase):
    def test_aRoutedPoolIsNotMasqueraded(self):
        script = tableScript("mnigs", "up0", [], routed6=[net("2001:db8:5::/64")])
        lines = [line.strip() for line in script.splitlines()]
        accept = lines.index('oifname "up0" ip6 saddr { 2001:db8:5::/64 } accept')
        self.assertEqual(lines[accept + 1], 'oifname "up0" ip6 saddr @clients6 masquerade')

    def test_withoutRoutedPoolsEverythingIsMasqueraded(self):
        self.assertNotIn("accept\n\t\toifname \"up0\" ip6 saddr @clients6 masquerade",
                         tableScript("mnigs", "up0", []))

    def test_onlyIPv6NetworksAreRoutedPools(self):
        self.assertRaises(TypeError, tableScript, "mnigs", "up0", [], routed6=["2001:db8::/64"])
        self.assertRaises(TypeError, tableScript, "mnigs", "up0", [],
                          routed6=[net("100.64.0.0/24")])


class SampleTests(SynchronousTestCase):
    @staticmethod
    def sample(name="mnigs-server.toml"):
        return os.path.join(os.path.dirname(__file__), "..", "..", "etc", name)

    def test_theSamplesSayIPv6IsOffOnTheGatewayAndUsedOnTheClient(self):
        self.assertIsNone(loadServerConfig(self.sample()).methods.wireguard.pool6)
        self.assertTrue(loadClientConfig(self.sample("mnigs-client.toml")).methods.wireguard.ipv6)


class UplinkWarningTests(SynchronousTestCase):
    """
    A gateway that offers a pool6 with no IPv6 default route says so at
    start (and still serves).
    """

    def warnings(self, route, pools):
        from twisted.logger import Logger

        from mnigs.server import service

        class Netlink:
            def defaultRouteVia(self, family):
                self.family = family
                return route

        events = []
        self.patch(service, "log", Logger(observer=events.append))
        gateway = service.GatewayService(None, loadServerConfig(SampleTests.sample()),
                                         netlink=Netlink())
        gateway._checkIPv6Uplink(pools)
        return [e["log_format"] for e in events]

    def test_noIPv6DefaultRouteIsSaid(self):
        [warning] = self.warnings(None, [(net("100.64.0.0/22"), "wg0"), (net(POOL6), "wg0")])
        self.assertIn("no IPv6 default route", warning)

    def test_anIPv6DefaultRouteOrNoPool6IsQuiet(self):
        self.assertEqual(self.warnings("a route", [(net(POOL6), "wg0")]), [])
        self.assertEqual(self.warnings(None, [(net("100.64.0.0/22"), "wg0")]), [])


POOL6_OVPN = "fd65:6d6e:6967::/64"


class OpenVPNTests(SynchronousTestCase):
    """
    IPv6 egress over OpenVPN: the server's tun takes the pool's ::1, each
    admitted client gets its lease's /128 pushed beside its IPv4 address,
    and the client takes the pushed IPv6 address only if it is the
    lease's.  (Fakes of the daemons: tests.unit.test_openvpn.test_method.)
    """

    def gateway(self):
        from tests.unit.test_openvpn.test_method import FakeAccess, FakeServerDaemon

        def makeDaemon(onEvent, onExit, onReady):
            self.daemon = FakeServerDaemon(onEvent, onExit, onReady)
            return self.daemon

        self.access = FakeAccess()
        return openvpnMethod.OpenVPNGateway(makeDaemon, self.access, caPEM(), net("100.65.0.0/29"), 1194,
                              "udp", "mo0", endpoints=["10.251.0.3"], pool6=net(POOL6_OVPN))

    def test_theServerTunCarriesThePool(self):
        from mnigs.openvpn.config import serverArgv

        class PKI:
            ca, cert, key = "/ca", "/cert", "/key"

        argv = serverArgv("openvpn", "mo0", "udp", 1194, "100.65.0.0/24", PKI(),
                          pool6=net(POOL6_OVPN))
        at = argv.index("--ifconfig-ipv6")
        self.assertEqual(argv[at + 1:at + 3], ["fd65:6d6e:6967::1/64", "fd65:6d6e:6967::2"])
        self.assertNotIn("--ifconfig-ipv6", serverArgv("openvpn", "mo0", "udp", 1194,
                                                       "100.65.0.0/24", PKI()))

    def test_aClientGetsItsIPv6AddressPushedAndAdmitted(self):
        from tests.unit.test_openvpn.test_method import TOKEN_A, connect

        gateway = self.gateway()
        fresh = lease("openvpn", leaseId="aaaa")
        fresh.token = TOKEN_A
        fresh.config = gateway.allocate(fresh, [], "10.251.0.3")
        self.assertEqual((fresh.config["address6"], fresh.config["gateway_address6"]),
                         ("fd65:6d6e:6967::2/128", "fd65:6d6e:6967::1"))
        self.assertEqual(gateway.offerEntry("10.251.0.3")["pool6"], POOL6_OVPN)
        self.successResultOf(gateway.start([]))
        self.successResultOf(gateway.grant(fresh))
        self.assertEqual(self.access.calls, [("allow", "100.65.0.2 on mo0"),
                                             ("allow", "fd65:6d6e:6967::2 on mo0")])
        self.daemon.onEvent(connect(0, "aaaa", TOKEN_A))
        [command] = self.daemon.commands
        self.assertIn("ifconfig-push 100.65.0.2 255.255.255.248", command)
        self.assertIn("ifconfig-ipv6-push fd65:6d6e:6967::2/64 fd65:6d6e:6967::1", command)
        self.successResultOf(gateway.revoke(fresh))
        self.assertEqual(self.access.calls[2:], [("deny", "100.65.0.2 on mo0"),
                                                 ("deny", "fd65:6d6e:6967::2 on mo0")])

    def client(self, ipv6=True):
        from tests.unit.test_openvpn.test_method import FakeClientDaemon, FakeRouting

        stateDir = os.path.abspath(self.mktemp())  # openvpn's files are named absolutely
        self.routing, self.daemons = FakeRouting(), []

        def makeDaemon(*args, **kw):
            self.daemons.append(FakeClientDaemon(*args, **kw))
            return self.daemons[-1]

        self.patch(openvpnMethod, "kernelHasIPv6", lambda: True)
        return openvpnMethod.OpenVPNClient(None, "mp0", self.routing, stateDir, daemonFactory=makeDaemon,
                             ipv6=ipv6)

    def connect(self, client, pushed6):
        """Connect with a lease with IPv6; openvpn says it got C{pushed6}."""
        from tests.unit.test_openvpn.test_method import TOKEN_A

        config = goodConfig(address6="fd65:6d6e:6967::7/128",
                            gateway_address6="fd65:6d6e:6967::1")
        d = client.connect(None, {"id": "0123abcd", "token": TOKEN_A, "config": config})
        with open(os.path.join(client.directory, "client.conf")) as f:
            self.written = f.read()
        daemon = self.daemons[-1]
        daemon.onEvent(management.State(1, "CONNECTED", "SUCCESS", "100.65.0.7",
                                        "10.251.0.3", "1194", pushed6))
        daemon.started.callback(None)
        return d

    def test_theClientTakesItsPushedIPv6AddressAndRoutesIPv6(self):
        client = self.client()
        d = self.connect(client, "fd65:6d6e:6967::7")
        connection = self.successResultOf(d)
        self.assertNotIn('pull-filter ignore "ifconfig-ipv6"', self.written)
        self.assertEqual(self.routing.calls, [("install", "mp0", "fd65:6d6e:6967::7")])
        self.assertEqual(connection.describe()["address6"], "fd65:6d6e:6967::7/128")

    def test_anotherPushedIPv6AddressIsRefused(self):
        for pushed in ("fd65:6d6e:6967::8", ""):
            client = self.client()
            self.failureResultOf(self.connect(client, pushed), openvpnMethod.WrongAddress)
            self.assertEqual(self.routing.calls, [])

    def test_aClientThatIgnoresIPv6FiltersThePushOutAndChecksNothingOfIt(self):
        client = self.client(ipv6=False)
        connection = self.successResultOf(self.connect(client, ""))
        self.assertIn('pull-filter ignore "ifconfig-ipv6"', self.written)
        self.assertEqual(self.routing.calls, [("install", "mp0")])
        self.assertNotIn("address6", connection.describe())

    def test_theClientChecksTheLeaseAgainstTheOffer(self):
        entry = {"type": "openvpn", "ca_sha256": certificateSHA256(caPEM()), "pool6": POOL6_OVPN}
        config = goodConfig(address6="fd99::7/128", gateway_address6="fd65:6d6e:6967::1")
        error = self.assertRaises(ValueError, self.client().checkAgainstOffer, entry, config)
        self.assertIn("not a host of the offered pool6", str(error))

    def test_theStateLineCarriesTheTunnelsIPv6Address(self):
        [state] = management.ManagementParser().feed(
            ">STATE:1,CONNECTED,SUCCESS,100.65.0.2,10.251.9.1,1194,,,fd65::7")
        self.assertEqual((state.localAddress, state.localAddress6), ("100.65.0.2", "fd65::7"))
        [state] = management.ManagementParser().feed(">STATE:5,EXITING")
        self.assertEqual(state.localAddress6, "")

    def test_pushingAnIPv6Address(self):
        self.assertEqual(management.ifconfigPush6("fd65::7", "fd65::1", 64),
                         "ifconfig-ipv6-push fd65::7/64 fd65::1")
        self.assertRaises(ValueError, management.ifconfigPush6, "100.65.0.7", "fd65::1", 64)
        self.assertRaises(ValueError, management.ifconfigPush6, "fd65::7", "fd65::1", 129)
