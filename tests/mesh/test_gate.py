"""
The data-path gate against forged source addresses, with real daemons and
a real attacker node, counting the packets where they would arrive: an
nft counter per UDP port in the internet namespace's prerouting hook, on
whatever comes in from the gateway (masqueraded or not).  What mnigs
believes plays no part::

    victim ---\\
               lan (a bridge) --- m0  gw === inet (198.51.100.1, counters)
    thief  ---/                   m1  |
      \\------------------------------/   (the thief's own link to gw)

No babeld: every node routes the internet host by hand.  The thief forges
with a raw socket (L{tests.mesh.spoof}), from the shared LAN (same link,
its own MAC), from its own link, and from inside a tunnel of its own
lease.  Each forgery is followed by a control the gate must let through,
counted on another port, so that "0 packets" is not a path that carries
nothing.
"""

import json
import os
import secrets
import sys

from twisted.trial.unittest import TestCase

from mnigs.system.nft import elementValue
from tests.mesh.gatewayproc import GatewayProcess, daemonEnvironment, rpc
from tests.mesh.harness import (
    Mesh,
    missingForNamespaces,
    requireNamespaces,
    skipOrFail,
    waitUntil,
)

INTERNET = "198.51.100.1"
GW_LAN = "10.98.0.1"
VICTIM_LAN = "10.98.0.2"
THIEF_LAN = "10.98.0.3"
SPOOFED = 20


class Counter:
    """
    Named nft counters in C{node}, one per UDP destination port, in its
    prerouting hook (before anything else) for what arrives on
    C{interface}: by default the internet node's side of the uplink.
    """

    def __init__(self, node, ports, interface="isp0", table="mnigs_count"):
        self.node = node
        self.table = table
        counters = "".join(f"\tcounter p{port} {{ }}\n" for port in ports)
        rules = "".join(f'\t\tiifname "{interface}" udp dport {port} counter name "p{port}"\n'
                        for port in ports)
        node.run(["nft", "-f", "-"], input=(
            f"table inet {table} {{\n" + counters +
            "\tchain pre {\n\t\ttype filter hook prerouting priority -500; policy accept;\n"
            + rules + "\t}\n}\n"))

    def packets(self, port):
        listing = json.loads(self.node.run(["nft", "-j", "list", "counter", "inet",
                                            self.table, f"p{port}"]).stdout)
        [counter] = [item["counter"] for item in listing["nftables"] if "counter" in item]
        return counter["packets"]


class Ports:
    """Fresh UDP ports, one per kind of traffic in a test."""

    def __init__(self):
        self.next = 41000

    def __call__(self):
        self.next += 1
        return self.next


class GateMesh(TestCase):
    timeout = 180
    binaries = ("wireguard-go", "wg", "nft")
    #: Whether the uplink carries IPv6 too (L{Mesh.internet}).
    uplinkIPv6 = False

    def setUp(self):
        requireNamespaces(self, *self.binaries)
        self.mesh = Mesh(self)
        self.gw, lan = self.mesh.node("gw"), self.mesh.node("lan")
        self.victim, self.thief = self.mesh.node("victim"), self.mesh.node("thief")
        lan.run(["ip", "link", "add", "br0", "type", "bridge"])
        lan.run(["ip", "link", "set", "br0", "up"])
        for node, address in ((self.gw, GW_LAN), (self.victim, VICTIM_LAN),
                              (self.thief, THIEF_LAN)):
            _, port = self.mesh.link(node, lan, f"{address}/24", None)
            lan.run(["ip", "link", "set", port, "master", "br0"])
        self.thiefLink, _ = self.mesh.link(self.thief, self.gw)  # thief m1, gw m1
        self.gwOnThiefLink = self.gw.interfaceAddresses["m1"].split("/")[0]
        self.internet = self.mesh.internet(self.gw, ipv6=self.uplinkIPv6)
        self.ports = Ports()
        self.counted = {}

    def startGateway(self, **overrides):
        self.gateway = GatewayProcess(self.gw, overrides)
        self.addCleanup(self.gateway.stop)
        self.gateway.start(timeout=40)
        return self.gateway

    def count(self, *ports):
        """Count what reaches the internet host on C{ports} from now on."""
        self.counter = Counter(self.internet, ports)

    def countOnTheGateway(self, interface, *ports):
        """
        Count what the gateway's kernel receives on C{interface} for
        C{ports}: 0 from a tunnel shows that its daemon dropped the
        packets, not the gate (the control's port shows the counter
        counts).
        """
        return Counter(self.gw, ports, interface, table="mnigs_probe")

    def register(self, node, method, params=None):
        # One client key per node and method (mnigs-rpc signs with it).
        kind, value = rpc(node, GW_LAN, "gateway.register",
                          {"method": method, "params": params or {}}, key=method)
        self.assertEqual(kind, "result", value)
        return value["lease"]

    def route(self, node, *how, host=INTERNET):
        node.run(["ip", "route", "replace", host, *how])

    def send(self, node, source, port, count=SPOOFED, host=INTERNET):
        """C{count} datagrams to the internet host (C{host}) from C{node}:
        forged with C{source}, or C{"plain"} (the kernel's choice)."""
        node.run(["env", f"PYTHONPATH={daemonEnvironment()['PYTHONPATH']}", sys.executable,
                  "-m", "tests.mesh.spoof", source, host, str(port), str(count)])

    def controlGetsThrough(self, node, port, host=INTERNET):
        """
        Plain datagrams from C{node} reach the internet host: the path the
        forgeries took works, and whatever of them got through has been
        counted by now.
        """
        before = self.counter.packets(port)

        def through():
            self.send(node, "plain", port, count=1, host=host)
            return self.counter.packets(port) > before

        waitUntil(through, 10, interval=0.1, message=f"{node.name}'s control on port {port}")

    def assertNothingArrived(self, port, what):
        self.assertEqual(self.counter.packets(port), 0,
                         f"{what}: forged packets reached the internet host")

    def gateSets(self):
        listing = json.loads(self.gw.run(["nft", "-j", "list", "table", "inet", "mnigs"]).stdout)
        return {item["set"]["name"]: sorted(json.dumps(elementValue(e))
                                            for e in item["set"].get("elem", []))
                for item in listing["nftables"] if "set" in item}


class ForwardAndWireGuardTests(GateMesh):
    def test_forwardAddressFromAnotherMACOrLinkGetsNothing(self):
        """
        The victim holds a forward lease on the LAN.  The thief sends with
        the victim's address from the same LAN (its own MAC) and from its
        own link to the gateway: none of it arrives, before and after a
        gateway restart, while the victim's own traffic does.
        """
        self.startGateway()
        lease = self.register(self.victim, "forward")
        self.assertEqual(lease["config"]["address"], f"{VICTIM_LAN}/32")
        self.route(self.victim, "via", GW_LAN)
        victimPort, sameLan, ownLink = self.ports(), self.ports(), self.ports()
        self.count(victimPort, sameLan, ownLink)
        self.controlGetsThrough(self.victim, victimPort)
        mac = self.victim.run(["cat", "/sys/class/net/m0/address"]).stdout.strip()
        self.assertEqual(self.gateSets()["link4"],
                         [json.dumps({"concat": [VICTIM_LAN, "m0", mac]})])

        def attack():
            self.route(self.thief, "via", GW_LAN, "dev", "m0")
            self.send(self.thief, VICTIM_LAN, sameLan)
            self.route(self.thief, "via", self.gwOnThiefLink, "dev", self.thiefLink)
            self.send(self.thief, VICTIM_LAN, ownLink)
            self.controlGetsThrough(self.victim, victimPort)
            self.assertNothingArrived(sameLan, "the victim's address from the thief's MAC")
            self.assertNothingArrived(ownLink, "the victim's address from another link")

        attack()
        before = self.gateSets()
        self.gateway.stop()
        self.gateway.start(timeout=40)
        self.assertEqual(self.gateSets(), before, "a restart changed the gate")
        attack()

    def test_wireguardInnerAddressOnlyFromItsPeer(self):
        """
        Victim and thief each hold a WireGuard lease.  The thief sends with
        the victim's inner address from inside its own tunnel (WireGuard's
        allowed-ips drops it), from the LAN and from its own link (the
        gate drops it): none of it arrives, while both tunnels carry their
        own traffic.
        """
        from tests.mesh.test_gateway import HandMadeWireGuard

        self.startGateway()
        tunnels = {}
        for node in (self.victim, self.thief):
            wg = tunnels[node.name] = HandMadeWireGuard(node)
            lease = self.register(node, "wireguard", {"public_key": wg.public})
            wg.use(lease)
            wg.address = lease["config"]["address"].split("/")[0]
        victimPort, thiefPort, inTunnel, sameLan, ownLink = (self.ports() for _ in range(5))
        self.count(victimPort, thiefPort, inTunnel, sameLan, ownLink)
        self.controlGetsThrough(self.victim, victimPort)
        self.controlGetsThrough(self.thief, thiefPort)
        victimAddress = tunnels["victim"].address

        onWireGuard = self.countOnTheGateway(self.gateway.wgInterface, inTunnel, thiefPort)
        self.send(self.thief, victimAddress, inTunnel)  # its route goes into its tunnel
        self.controlGetsThrough(self.thief, thiefPort)
        self.assertNothingArrived(inTunnel, "another peer's inner address inside the tunnel")
        self.assertEqual(onWireGuard.packets(inTunnel), 0, "wireguard-go passed them on")
        self.assertGreater(onWireGuard.packets(thiefPort), 0)
        self.route(self.thief, "via", GW_LAN, "dev", "m0")
        self.send(self.thief, victimAddress, sameLan)
        self.route(self.thief, "via", self.gwOnThiefLink, "dev", self.thiefLink)
        self.send(self.thief, victimAddress, ownLink)
        self.controlGetsThrough(self.victim, victimPort)
        self.assertNothingArrived(sameLan, "a WireGuard inner address from the LAN")
        self.assertNothingArrived(ownLink, "a WireGuard inner address from a mesh link")


class OpenVPNTests(GateMesh):
    binaries = GateMesh.binaries + ("openvpn",)

    def test_openvpnInnerAddressOnlyFromItsClient(self):
        """
        Victim and thief each hold an OpenVPN lease.  The thief sends with
        the victim's inner address through its own tunnel (openvpn drops a
        client's packet whose source is not the address pushed to it) and
        from the LAN (the gate drops it): none of it arrives.
        """
        from tests.mesh.test_openvpn import HandMadeOpenVPN, gatewayOverrides

        self.startGateway(**gatewayOverrides())
        tunnels = {}
        for node in (self.victim, self.thief):
            lease = self.register(node, "openvpn")
            vpn = tunnels[node.name] = HandMadeOpenVPN(node, lease).start()
            vpn.address = lease["config"]["address"].split("/")[0]
        for vpn in tunnels.values():
            vpn.waitUp()  # routes the internet host into the tunnel
        victimPort, thiefPort, inTunnel, sameLan = (self.ports() for _ in range(4))
        self.count(victimPort, thiefPort, inTunnel, sameLan)
        self.controlGetsThrough(self.victim, victimPort)
        self.controlGetsThrough(self.thief, thiefPort)
        victimAddress = tunnels["victim"].address

        onTun = self.countOnTheGateway(self.gateway.config["methods"]["openvpn"]["interface"],
                                       inTunnel, thiefPort)
        self.send(self.thief, victimAddress, inTunnel)
        self.controlGetsThrough(self.thief, thiefPort)
        self.assertNothingArrived(inTunnel, "another client's inner address inside the tunnel")
        self.assertEqual(onTun.packets(inTunnel), 0, "openvpn passed them to its tun")
        self.assertGreater(onTun.packets(thiefPort), 0)
        self.route(self.thief, "via", GW_LAN, "dev", "m0")
        self.send(self.thief, victimAddress, sameLan)
        self.controlGetsThrough(self.victim, victimPort)
        self.assertNothingArrived(sameLan, "an OpenVPN inner address from the LAN")


class SoftEtherTests(GateMesh):
    def test_softetherAddressOnlyFromItsSession(self):
        """
        Victim and thief each hold a SoftEther lease.  The thief sends with
        the victim's address through its own session and from the LAN:
        none of it arrives.  Through the session, nothing of mnigs's nft
        table stops it (the gate admits the victim's address from the tap,
        and the way back to it is the tap): the hub's access rules for the
        thief's user (only its own source address) discard it.
        """
        from tests.mesh.test_softether import (
            POOL,
            HandMadeSoftEther,
            gatewayOverrides,
            softetherMissing,
        )

        missing = softetherMissing()
        if missing:
            if os.environ.get("CI"):
                self.fail(missing)
            self.skipTest(missing)
        self.startGateway(**gatewayOverrides(bridge="s" + secrets.token_hex(4)))
        sessions = {}
        for node in (self.victim, self.thief):
            lease = self.register(node, "softether")
            vpn = sessions[node.name] = HandMadeSoftEther(node)
            self.addCleanup(vpn.stop)
            vpn.use(lease)
            vpn.address = lease["config"]["address"].split("/")[0]
        for node in (self.victim, self.thief):
            sessions[node.name].waitStatus("Connected")
            self.route(node, "via", POOL.replace("0/24", "1"), "dev", sessions[node.name].ifname)
        victimPort, thiefPort, inTunnel, sameLan = (self.ports() for _ in range(4))
        self.count(victimPort, thiefPort, inTunnel, sameLan)
        self.controlGetsThrough(self.victim, victimPort)
        self.controlGetsThrough(self.thief, thiefPort)
        victimAddress = sessions["victim"].address

        onTap = self.countOnTheGateway(
            "tap_" + self.gateway.config["methods"]["softether"]["bridge"], inTunnel, thiefPort)
        self.send(self.thief, victimAddress, inTunnel)
        self.controlGetsThrough(self.thief, thiefPort)
        self.assertNothingArrived(inTunnel, "another session's address through the hub")
        self.assertEqual(onTap.packets(inTunnel), 0, "the hub passed them to its tap")
        self.assertGreater(onTap.packets(thiefPort), 0)
        self.route(self.thief, "via", GW_LAN, "dev", "m0")
        self.send(self.thief, victimAddress, sameLan)
        self.controlGetsThrough(self.victim, victimPort)
        self.assertNothingArrived(sameLan, "a SoftEther address from the LAN")


POOL6 = "fd64:6d6e:6967::/64"
GW_LAN6, THIEF_LAN6 = "fd98::1", "fd98::3"
GW_OWN6, THIEF_OWN6 = "fd97::1", "fd97::2"


class IPv6Tests(GateMesh):
    """
    IPv6 egress (C{methods.wireguard.pool6}): the internet host is
    2001:db8:ffff::1, the LAN and the thief's own link carry IPv6 too.
    """

    uplinkIPv6 = True

    def setUp(self):
        super().setUp()
        for node, interface, address in ((self.gw, "m0", GW_LAN6), (self.thief, "m0", THIEF_LAN6),
                                         (self.gw, "m1", GW_OWN6),
                                         (self.thief, self.thiefLink, THIEF_OWN6)):
            node.run(["ip", "-6", "addr", "add", f"{address}/64", "dev", interface])

    def test_wireguardInnerIPv6AddressOnlyFromItsPeer(self):
        """
        The victim holds a WireGuard lease with an inner IPv6 address.  The
        thief, without a lease, sends with that address from the LAN and
        from its own link (the gate drops it); then, holding a lease of its
        own, from inside its tunnel (WireGuard's allowed-ips drops it).
        None of it arrives at the internet's IPv6 host, while both tunnels
        carry their own IPv6 traffic there, masqueraded, before and after
        a gateway restart.
        """
        from tests.mesh.test_gateway import HandMadeWireGuard

        host = self.mesh.internetHost6
        self.startGateway(methods={"wireguard": {"pool6": POOL6}})
        victim = HandMadeWireGuard(self.victim)
        lease = self.register(self.victim, "wireguard", {"public_key": victim.public})
        victim.use(lease)
        victimAddress = lease["config"]["address6"].split("/")[0]
        self.assertEqual(lease["config"]["gateway_address6"], "fd64:6d6e:6967::1")
        self.assertIn(json.dumps({"concat": [victimAddress, self.gateway.wgInterface]}),
                      self.gateSets()["tunnel6"])
        victimPort, thiefPort, inTunnel, sameLan, ownLink = (self.ports() for _ in range(5))
        self.count(victimPort, thiefPort, inTunnel, sameLan, ownLink)
        self.controlGetsThrough(self.victim, victimPort, host=host)

        self.route(self.thief, "via", GW_LAN6, "dev", "m0", host=host)
        self.send(self.thief, victimAddress, sameLan, host=host)
        self.route(self.thief, "via", GW_OWN6, "dev", self.thiefLink, host=host)
        self.send(self.thief, victimAddress, ownLink, host=host)
        self.controlGetsThrough(self.victim, victimPort, host=host)
        self.assertNothingArrived(sameLan, "an inner IPv6 address from the LAN, no lease")
        self.assertNothingArrived(ownLink, "an inner IPv6 address from a mesh link, no lease")

        thief = HandMadeWireGuard(self.thief)
        thiefLease = self.register(self.thief, "wireguard", {"public_key": thief.public})
        thief.use(thiefLease)  # routes the IPv6 host into its tunnel
        self.controlGetsThrough(self.thief, thiefPort, host=host)
        onWireGuard = self.countOnTheGateway(self.gateway.wgInterface, inTunnel, thiefPort)
        self.send(self.thief, victimAddress, inTunnel, host=host)
        self.controlGetsThrough(self.thief, thiefPort, host=host)
        self.assertNothingArrived(inTunnel, "another peer's inner IPv6 address inside the tunnel")
        self.assertEqual(onWireGuard.packets(inTunnel), 0, "wireguard-go passed them on")
        self.assertGreater(onWireGuard.packets(thiefPort), 0)

        # A restart rebuilds the same gate, IPv6 included, from the lease
        # file, and the tunnels go on carrying IPv6.
        before = self.gateSets()
        self.gateway.stop()
        self.gateway.start(timeout=40)
        self.assertEqual(self.gateSets(), before, "a restart changed the gate")
        self.controlGetsThrough(self.victim, victimPort, host=host)

    def test_openvpnInnerIPv6AddressOnlyFromItsClient(self):
        """
        The same with OpenVPN leases: the thief's forgeries of the victim's
        inner IPv6 address from the LAN (no lease) and through its own
        tunnel (openvpn drops a client's packet whose source is not the
        address pushed to it) never arrive; both tunnels carry their own.
        """
        missing = missingForNamespaces("openvpn")
        if missing:
            skipOrFail(self, missing)
        from tests.mesh.test_openvpn import HandMadeOpenVPN, gatewayOverrides

        host = self.mesh.internetHost6
        self.startGateway(**gatewayOverrides(pool6=POOL6))
        tunnels = {}
        for node in (self.victim, self.thief):
            lease = self.register(node, "openvpn")
            vpn = tunnels[node.name] = HandMadeOpenVPN(node, lease).start()
            vpn.address6 = lease["config"]["address6"].split("/")[0]
        for vpn in tunnels.values():
            vpn.waitUp()
        victimPort, thiefPort, inTunnel, sameLan = (self.ports() for _ in range(4))
        self.count(victimPort, thiefPort, inTunnel, sameLan)
        self.controlGetsThrough(self.victim, victimPort, host=host)
        self.controlGetsThrough(self.thief, thiefPort, host=host)
        victimAddress = tunnels["victim"].address6

        onTun = self.countOnTheGateway(self.gateway.config["methods"]["openvpn"]["interface"],
                                       inTunnel, thiefPort)
        self.send(self.thief, victimAddress, inTunnel, host=host)
        self.controlGetsThrough(self.thief, thiefPort, host=host)
        self.assertNothingArrived(inTunnel, "another client's inner IPv6 address in the tunnel")
        self.assertEqual(onTun.packets(inTunnel), 0, "openvpn passed them to its tun")
        self.assertGreater(onTun.packets(thiefPort), 0)
        self.route(self.thief, "via", GW_LAN6, "dev", "m0", host=host)
        self.send(self.thief, victimAddress, sameLan, host=host)
        self.controlGetsThrough(self.victim, victimPort, host=host)
        self.assertNothingArrived(sameLan, "an OpenVPN inner IPv6 address from the LAN")
