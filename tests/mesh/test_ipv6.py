"""
IPv6 egress through WireGuard (and OpenVPN) with real daemons (issue 15): babeld, two
mnigs-server gateways whose uplinks carry IPv6 (L{Mesh.internet} with
C{ipv6=True}: the internet's IPv6 host is 2001:db8:ffff::1, and it routes
back only to the uplink's /64), and mnigs-client.  What the internet host
sees is read from its side (L{tests.mesh.tcpseen}); nothing is mocked.

The topology builders are the harness's (L{Mesh.nearAndFarGateway},
L{Mesh.clientNextToGateway}, both with C{ipv6=True}); a gateway offers
IPv6 with C{methods.wireguard.pool6} (L{tests.mesh.ipv6net.ipv6Gateway}),
and L{tests.mesh.ipv6net} has the checks.
"""

import secrets
import time

from twisted.logger import Logger

from mnigs.client.routes import routingSnapshot
from tests.mesh.daemontest import DaemonMeshTestCase
from tests.mesh.harness import INTERNET_HOST, INTERNET_HOST6, requireNamespaces, waitUntil
from tests.mesh.ipv6net import (
    UPLINK6,
    addresses6,
    forwardedDevice,
    ipv6Gateway,
    mnigsRules6,
    ping6,
    routeDevice,
    seenFrom,
    serveSeen,
    tableRoutes6,
    unreachableDefault6,
)
from tests.mesh.router import (
    BulkServer,
    PacketCounter,
    fetch,
    lanHost,
    narrowPath,
    nftRuleset,
    sysctl,
)
from tests.mesh.test_client import silence

log = Logger()


class IPv6EgressTests(DaemonMeshTestCase):

    def test_ipv6ThroughWireGuardAndAcrossAFailover(self):
        """
        client - r1 - gwA, r1 - r2 - gwB, both offering IPv6 egress from
        their own pool: the client reaches the internet's IPv6 host through
        its tunnel (ping and TCP), seen there from the gateway's uplink
        address (NAT66); when gwA goes silent it moves to gwB and reaches
        the IPv6 host again through the new tunnel, from an address of
        gwB's pool (its standby's tunnel, which takes over by a route
        change, IPv6's included).
        """
        client, gwA, gwB = self.mesh.nearAndFarGateway(ipv6=True)
        self.gateway(gwA, **ipv6Gateway("fd64:a::/64"))
        self.gateway(gwB, **ipv6Gateway("fd64:b::/64"))
        for gw in (gwA, gwB):
            serveSeen(gw.internet)
        c = self.clientProcess(client).start()
        status = c.waitState("online", 30, gateway="gwA")
        self.assertEqual(status["current"]["address6"], "fd64:a::2/128")
        self.assertEqual(addresses6(client, c.wgInterface), ["fd64:a::2"])
        self.assertEqual(routeDevice(client, INTERNET_HOST6), c.wgInterface)
        waitUntil(lambda: ping6(client), 10, message="ping6 through gwA")
        self.assertEqual(waitUntil(lambda: seenFrom(client), 10, message="TCP over IPv6 via gwA"),
                         UPLINK6)
        self.assertTrue(client.ping(INTERNET_HOST))

        silence(gwA)
        died = time.monotonic()
        # The standby's device (the next name) takes over.
        device = c.waitState("online", 30, gateway="gwB")["current"]["device"]
        self.assertEqual(addresses6(client, device), ["fd64:b::2"])
        waitUntil(lambda: ping6(client, timeout=0.5), 10, message="ping6 through gwB")
        back = time.monotonic() - died
        log.info("ipv6 figures: IPv6 through gwB {back:.1f} s after gwA went silent", back=back)
        self.assertLess(back, 15)  # as over IPv4 (test_client)
        self.assertEqual(waitUntil(lambda: seenFrom(client), 10, message="TCP over IPv6 via gwB"),
                         UPLINK6)
        self.assertEqual(routeDevice(client, INTERNET_HOST6), device)
        # The mesh's own IPv6 space never takes the tunnel.
        self.assertNotIn(routeDevice(client, "200::1"), (device, c.wgInterface))
        self.assertNotIn(routeDevice(client, "fc00::1"), (device, c.wgInterface))

    def test_anIPv4OnlyGatewayGivesAnIPv6ClientIPv4Only(self):
        """
        A gateway without pool6 (its uplink has IPv6, it offers none):
        the client is online over IPv4, with no IPv6 route or rule of
        mnigs's and no inner IPv6 address, and says nothing about it.
        """
        client, gw = self.mesh.clientNextToGateway(ipv6=True)
        self.gateway(gw)
        c = self.clientProcess(client).start()
        status = c.waitState("online", 30, gateway="gw")
        self.assertNotIn("address6", status["current"])
        self.assertTrue(client.ping(INTERNET_HOST))
        self.assertEqual((mnigsRules6(client), tableRoutes6(client)), ([], []))
        self.assertEqual(addresses6(client, c.wgInterface), [])
        self.assertFalse(ping6(client, timeout=0.5))
        with open(c.logPath) as f:
            log = f.read()
        self.assertNotIn("Traceback", log)
        self.assertNotIn("IPv6", log)

    def test_aClientThatIgnoresIPv6OnAnIPv6Gateway(self):
        """
        The reverse: C{methods.wireguard.ipv6 = false} on the client, as a
        client from before IPv6 egress: the lease's IPv6 is not used.
        """
        client, gw = self.mesh.clientNextToGateway(ipv6=True)
        self.gateway(gw, **ipv6Gateway("fd64:6d6e:6967::/64"))
        c = self.clientProcess(client, methods={"wireguard": {"ipv6": False}}).start()
        status = c.waitState("online", 30, gateway="gw")
        self.assertNotIn("address6", status["current"])
        self.assertTrue(client.ping(INTERNET_HOST))
        self.assertEqual((mnigsRules6(client), tableRoutes6(client)), ([], []))
        self.assertEqual(addresses6(client, c.wgInterface), [])

    def test_stopRemovesEverythingIPv6(self):
        """
        Online with IPv6 egress, the client has its IPv6 rules, its ::/0
        and its inner address; after stop the routing of both families is
        exactly what it was.
        """
        client, gw = self.mesh.clientNextToGateway(ipv6=True)
        self.gateway(gw, **ipv6Gateway("fd64:6d6e:6967::/64"))
        before = routingSnapshot(client.ns)
        c = self.clientProcess(client).start()
        c.waitState("online", 30, gateway="gw")
        self.assertEqual(len(mnigsRules6(client)), 2)
        self.assertIn(("::", 0), tableRoutes6(client))
        self.assertTrue(waitUntil(lambda: ping6(client), 10, message="ping6 through gw"))
        c.stop()
        self.assertEqual(routingSnapshot(client.ns), before)
        self.assertEqual((mnigsRules6(client), tableRoutes6(client)), ([], []))

    def test_failClosedCoversIPv6WhileSwitching(self):
        """
        C{routing.fail_closed} with IPv6 egress, and an IPv6 default route
        into the mesh in the client's main table (C{dev m0}, towards r1):
        while the client moves from gwA (gone silent) to gwB, its ::/0 is
        unreachable, so the internet's IPv6 host is never routed by the
        mesh default, neither for the client nor for its shared LAN
        (fd77::/64); then both go through gwB's tunnel; stop leaves the
        routing of both families as it was.  Without a standby: with one
        the route moves in one replacement, with no unreachable moment
        to see.
        """
        client, gwA, gwB = self.mesh.nearAndFarGateway(ipv6=True)
        self.gateway(gwA, **ipv6Gateway("fd64:a::/64"))
        self.gateway(gwB, **ipv6Gateway("fd64:b::/64"))
        lan = lanHost(self.mesh, client, "lan", "192.168.77.0/24", prefix6="fd77::/64")
        client.run(["ip", "-6", "route", "add", "default", "dev", "m0"])
        before = routingSnapshot(client.ns)
        c = self.clientProcess(client, routing={"fail_closed": True},
                               share={"prefixes": [lan.prefix6]}, standby={"count": 0}).start()
        c.waitState("online", 30, gateway="gwA")
        waitUntil(lambda: ping6(client), 10, message="ping6 through gwA")
        waitUntil(lambda: ping6(lan.node), 10, message="the LAN's ping6 through gwA")

        silence(gwA)
        devices, failedClosed = set(), False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            devices.add(routeDevice(client, INTERNET_HOST6))
            devices.add(forwardedDevice(client, INTERNET_HOST6, lan.address6, lan.interface))
            failedClosed = failedClosed or unreachableDefault6(client)
            current = c.status().get("current") or {}
            if current.get("name") == "gwB":
                break
        self.assertEqual(current.get("name"), "gwB")
        self.assertTrue(failedClosed)
        self.assertNotIn("m0", devices)
        self.assertIn(None, devices)  # unreachable while switching
        waitUntil(lambda: ping6(client, timeout=0.5), 10, message="ping6 through gwB")
        self.assertEqual(routeDevice(client, INTERNET_HOST6), c.wgInterface)
        waitUntil(lambda: ping6(lan.node, timeout=0.5), 10, message="the LAN's ping6 through gwB")
        c.stop()
        self.assertEqual(routingSnapshot(client.ns), before)

    def test_aNarrowPathKeepsIPv6(self):
        """
        client --(MTU 1280)-- r1 --- gw === internet, r1 sending no ICMP,
        gw offering IPv6 egress: the client sets its tunnel's MTU to 1280,
        not the 1216 that fits the path (the kernel would take the tunnel's
        IPv6 address and routes away below 1280), keeps its inner IPv6
        address, and fetches 2 MB from the internet host over IPv6 and
        over IPv4 through the tunnel, TCP clamped to what fits the path.
        """
        client, r1, gw = narrowPath(self.mesh, 1280, ipv6=True)
        self.gateway(gw, **ipv6Gateway("fd64:6d6e:6967::/64"))
        inet = self.mesh.nodes["inet"]
        servers = {6: BulkServer(inet, port=5006, size=2 * 2**20, address="::"),
                   4: BulkServer(inet, port=5004, size=2 * 2**20)}
        c = self.clientProcess(client).start()
        c.waitState("online", 30, gateway="gw")
        mtu = int(client.run(["cat", f"/sys/class/net/{c.wgInterface}/mtu"]).stdout)
        self.assertEqual(mtu, 1280)
        self.assertEqual(addresses6(client, c.wgInterface), ["fd64:6d6e:6967::2"])
        for version, host in ((6, INTERNET_HOST6), (4, INTERNET_HOST)):
            seconds = fetch(client, host, servers[version].port, servers[version].size, timeout=30)
            log.info("ipv6 figures: 2 MB over IPv{v} through a 1280 path in {s:.2f} s",
                     v=version, s=seconds)

    def test_aRoutedPrefixLeavesUnmasqueraded(self):
        """
        C{nat6 = false}: the pool is routed to the gateway (here by the
        internet node), and the internet host sees the client's own inner
        address.
        """
        client, gw = self.mesh.clientNextToGateway(ipv6=True)
        self.mesh.routeToGateway6(gw, "2001:db8:5::/64")
        self.gateway(gw, **ipv6Gateway("2001:db8:5::/64", nat6=False))
        serveSeen(gw.internet)
        c = self.clientProcess(client).start()
        c.waitState("online", 30, gateway="gw")
        self.assertEqual(waitUntil(lambda: seenFrom(client), 10, message="TCP over IPv6"),
                         "2001:db8:5::2")


class SharedLANIPv6Tests(DaemonMeshTestCase):
    """
    A mesh router's LAN in IPv6 (C{[share]}): two LAN hosts behind the
    client, each with an IPv4 and an IPv6 prefix and a default route of
    each family via the client; one LAN is shared, the other not.
    Nothing is mocked.
    """

    def snapshot(self, node):
        return (routingSnapshot(node.ns), nftRuleset(node),
                sysctl(node, "net.ipv4.ip_forward"), sysctl(node, "net.ipv6.conf.all.forwarding"))

    def shareAndCheck(self, share, openvpn=False):
        """
        client - gw === internet (IPv6 uplink), gw offering IPv6 egress
        with NAT66 over WireGuard (C{openvpn}: over OpenVPN); the client shares the LAN fd77::/64 as C{share} says
        (given the L{LanHost}), not fd78::/64.  Forwarding of both
        families starts off on the client: mnigs turns it on and back off.
        The shared host pings the internet's IPv6 host and makes a TCP
        connection to it through the WireGuard tunnel: the gateway sees
        its packets from the lease's address6 (never from the LAN's
        prefix), the internet host from the gateway's uplink (NAT66).  The
        unshared host's IPv6 does not take the tunnel.  Stop leaves rules,
        routes, links, nft ruleset and both sysctls as they were.
        """
        client, gw = self.mesh.clientNextToGateway(ipv6=True)
        lan = lanHost(self.mesh, client, "lan", "192.168.77.0/24", prefix6="fd77::/64")
        other = lanHost(self.mesh, client, "other", "192.168.78.0/24", prefix6="fd78::/64")
        client.run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=0",
                    "net.ipv6.conf.all.forwarding=0"])
        if openvpn:
            from tests.mesh.test_openvpn import gatewayOverrides

            requireNamespaces(self, "openvpn")
            self.gateway(gw, **gatewayOverrides(pool6="fd64:6d6e:6967::/64"))
            tunnel = "mp" + secrets.token_hex(4)
            c = self.clientProcess(client, share=share(lan), methods={
                "order": ["openvpn"], "openvpn": {"interface": tunnel}})
        else:
            self.gateway(gw, **ipv6Gateway("fd64:6d6e:6967::/64"))
            c = self.clientProcess(client, share=share(lan))
            tunnel = c.wgInterface
        serveSeen(gw.internet)
        # On the client, counted before the NAT, by the tunnel they leave by.
        shared = PacketCounter(client, f'oifname "{tunnel}" ip6 saddr {lan.prefix6}',
                               table="count_shared", hook="postrouting")
        unshared = PacketCounter(client, f'oifname "{tunnel}" ip6 saddr {other.prefix6}',
                                 table="count_unshared", hook="postrouting")
        asLan = PacketCounter(gw, "ip6 saddr { fd77::/64, fd78::/64 }", table="count_lan")
        before = self.snapshot(client)
        status = c.start().waitState("online", 30, gateway="gw")
        address6 = status["current"]["address6"].split("/")[0]
        self.assertEqual(address6, "fd64:6d6e:6967::2")
        asLease = PacketCounter(gw, f"ip6 saddr {address6} tcp dport 8080", table="count_lease")
        self.assertEqual(sysctl(client, "net.ipv6.conf.all.forwarding"), "1")
        self.assertEqual(sysctl(client, "net.ipv4.ip_forward"), "1")
        self.assertEqual(len(mnigsRules6(client)), 3)  # main, iif lo, the LAN
        waitUntil(lambda: ping6(lan.node), 10, message="the LAN host's ping6 through the tunnel")
        self.assertEqual(waitUntil(lambda: seenFrom(lan.node), 10,
                                   message="the LAN host's TCP over IPv6"), UPLINK6)
        self.assertGreater(shared.packets(), 0)
        self.assertGreater(asLease.packets(), 0)
        # The mesh's own IPv6 space never takes the tunnel from the LAN either.
        for mesh in ("200::1", "fc00::1"):
            self.assertNotEqual(forwardedDevice(client, mesh, lan.address6, lan.interface),
                                tunnel)
        self.assertEqual(forwardedDevice(client, INTERNET_HOST6, lan.address6, lan.interface),
                         tunnel)
        self.assertNotEqual(forwardedDevice(client, INTERNET_HOST6, other.address6,
                                            other.interface), tunnel)
        # Its IPv4 goes through as well (as tests.mesh.test_router checks).
        self.assertTrue(lan.node.ping(INTERNET_HOST, timeout=2.0))

        self.assertFalse(ping6(other.node, timeout=1.0))
        self.assertIsNone(seenFrom(other.node))
        self.assertEqual((unshared.packets(), asLan.packets()), (0, 0))
        c.stop()
        self.assertEqual(self.snapshot(client), before)

    def test_aSharedIPv6PrefixGoesThroughTheTunnelAsAddress6(self):
        self.shareAndCheck(lambda lan: {"prefixes": [lan.prefix, lan.prefix6]})

    def test_aSharedInterfaceCarriesItsIPv6Too(self):
        self.shareAndCheck(lambda lan: {"interfaces": [lan.interface]})

    def test_aSharedIPv6PrefixThroughOpenVPN(self):
        self.shareAndCheck(lambda lan: {"prefixes": [lan.prefix, lan.prefix6]}, openvpn=True)


class OpenVPNIPv6Tests(DaemonMeshTestCase):
    def setUp(self):
        super().setUp()
        requireNamespaces(self, "openvpn")

    def test_ipv6ThroughOpenVPNAndStopRemovesIt(self):
        """
        client - gw offering IPv6 egress over OpenVPN: the client gets its
        lease's IPv6 address pushed, reaches the internet's IPv6 host
        through the tun (seen from the gateway's uplink address), and
        after stop the routing of both families is what it was.
        """
        from tests.mesh.test_openvpn import gatewayOverrides

        client, gw = self.mesh.clientNextToGateway(ipv6=True)
        self.gateway(gw, **gatewayOverrides(pool6="fd65:6d6e:6967::/64"))
        serveSeen(gw.internet)
        before = routingSnapshot(client.ns)
        tun = "mp" + secrets.token_hex(4)
        c = self.clientProcess(client, methods={"order": ["openvpn"],
                                                "openvpn": {"interface": tun}}).start()
        status = c.waitState("online", 30, gateway="gw")
        self.assertEqual((status["current"]["method"], status["current"]["address6"]),
                         ("openvpn", "fd65:6d6e:6967::2/128"))
        self.assertIn("fd65:6d6e:6967::2", addresses6(client, tun))
        self.assertEqual(routeDevice(client, INTERNET_HOST6), tun)
        waitUntil(lambda: ping6(client), 10, message="ping6 through openvpn")
        self.assertEqual(waitUntil(lambda: seenFrom(client), 10, message="TCP over IPv6"),
                         UPLINK6)
        c.stop()
        self.assertEqual(routingSnapshot(client.ns), before)
