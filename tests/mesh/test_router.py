"""
A mesh router (issue 15) with real daemons in network namespaces: babeld,
mnigs-server gateways with wireguard-go and nftables, mnigs-client with a
LAN namespace behind it.  LAN sharing, MTU and MSS clamping over a
1280-byte mesh link, and failing closed while the client switches.
Nothing is mocked.  Topology builders: L{tests.mesh.router}.
"""

import ipaddress

from mnigs.client.routes import routingSnapshot
from tests.mesh.daemontest import DaemonMeshTestCase
from tests.mesh.harness import INTERNET_HOST, waitUntil
from tests.mesh.test_standby import readyStandby
from tests.mesh.router import (
    BulkServer,
    PacketCounter,
    TransferFailed,
    fetch,
    lanHost,
    leakWhileSwitching,
    narrowPath,
    nftRuleset,
    sysctl,
)

MB = 2**20


def leaseAddress(status):
    return str(ipaddress.ip_interface(status["current"]["address"]).ip)


class LanSharingTests(DaemonMeshTestCase):

    def snapshot(self, node):
        return (routingSnapshot(node.ns), nftRuleset(node), sysctl(node, "net.ipv4.ip_forward"))

    def checkShared(self, client, gw, lan, other, status):
        """
        The shared LAN host pings the internet host and fetches from it;
        the gateway sees its packets from the lease's address (and the
        internet host from the gateway's uplink, as for the client's
        own); the unshared host gets nothing through (its packets follow
        the mesh's default route bare, as before, and the gate drops them).
        """
        inet = self.mesh.nodes["inet"]
        address = leaseAddress(status)
        server = BulkServer(inet, size=2 * MB)
        asLease = PacketCounter(gw, f"ip saddr {address} tcp dport {server.port}",
                                table="count_lease")
        # The shared LAN's own addresses never reach the gateway.
        asLan = PacketCounter(gw, f"ip saddr {lan.prefix}", table="count_lan")
        fetch(client, INTERNET_HOST, server.port, server.size, timeout=30)
        fromClient = asLease.packets()
        self.assertGreater(fromClient, 0)
        waitUntil(lambda: lan.node.ping(INTERNET_HOST, timeout=0.5), 10,
                  message="the LAN host's ping through the tunnel")
        fetch(lan.node, INTERNET_HOST, server.port, server.size, timeout=30)
        self.assertGreater(asLease.packets(), fromClient)
        [seen] = set(server.peers())
        self.assertEqual(server.peers(), [seen, seen])
        self.assertFalse(other.node.ping(INTERNET_HOST, timeout=1.0))
        self.assertRaises(TransferFailed, fetch, other.node, INTERNET_HOST, server.port,
                          server.size, timeout=3)
        self.assertEqual(len(server.peers()), 2)
        self.assertEqual(asLan.packets(), 0)

    def test_aSharedPrefixGoesThroughTheTunnelAndStopRestoresAll(self):
        """
        client - gw === internet, with two LAN hosts behind the client:
        192.168.77.0/24 is shared (C{share.prefixes}), 192.168.78.0/24 is
        not.  IPv4 forwarding starts off on the client: mnigs turns it on
        and back off.  Stop leaves rules, routes, links, nft ruleset and
        the sysctl as they were.
        """
        client, gw = self.mesh.clientNextToGateway()
        lan = lanHost(self.mesh, client, "lan", "192.168.77.0/24")
        other = lanHost(self.mesh, client, "other", "192.168.78.0/24")
        client.run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=0"])
        self.gateway(gw)
        c = self.clientProcess(client, share={"prefixes": [lan.prefix]})
        # Counted before the NAT, by the tunnel they leave by.
        shared = PacketCounter(client, f'oifname "{c.wgInterface}" ip saddr {lan.prefix}',
                               table="count_shared", hook="postrouting")
        unshared = PacketCounter(client, f'oifname "{c.wgInterface}" ip saddr {other.prefix}',
                                 table="count_unshared", hook="postrouting")
        before = self.snapshot(client)
        status = c.start().waitState("online", 30)
        self.assertEqual(sysctl(client, "net.ipv4.ip_forward"), "1")
        self.assertEqual(status["current"]["device"], c.wgInterface)
        self.checkShared(client, gw, lan, other, status)
        self.assertGreater(shared.packets(), 0)
        self.assertEqual(unshared.packets(), 0)
        c.stop()
        self.assertEqual(self.snapshot(client), before)

    def test_aSharedInterfaceOverForward(self):
        """
        The same with C{forward} (no tunnel: the lease is the client's
        own mesh address, which the LAN is translated to) and the LAN
        shared by interface (C{share.interfaces}).
        """
        client, gw = self.mesh.clientNextToGateway()
        lan = lanHost(self.mesh, client, "lan", "192.168.77.0/24")
        other = lanHost(self.mesh, client, "other", "192.168.78.0/24")
        self.gateway(gw)
        c = self.clientProcess(client, share={"interfaces": [lan.interface]},
                               methods={"order": ["forward"]})
        before = self.snapshot(client)
        status = c.start().waitState("online", 30)
        self.assertEqual(status["current"]["method"], "forward")
        self.checkShared(client, gw, lan, other, status)
        c.stop()
        self.assertEqual(self.snapshot(client), before)


class MTUTests(DaemonMeshTestCase):
    timeout = 400

    def test_aNarrowMeshLinkIsNoBlackHole(self):
        """
        client --(MTU 1280)-- r1 --- gw === internet, r1 sending no ICMP
        "fragmentation needed", a LAN host behind the client: 10 MB
        downloads from the internet host through WireGuard, by the client
        and by the LAN host, with the client setting the tunnel MTU and
        clamping the MSS, with either one alone, and with neither (for
        contrast: a black hole, since the gateway's outer packets carry DF
        and r1 says nothing).  The times are printed.
        """
        client, r1, gw = narrowPath(self.mesh, 1280)
        lan = lanHost(self.mesh, client, "lan", "192.168.77.0/24")
        self.gateway(gw)
        server = BulkServer(self.mesh.nodes["inet"], size=10 * MB)
        results = {}
        for name, setMTU, clamp in (("both", True, True), ("clamp only", False, True),
                                    ("MTU only", True, False), ("neither", False, False)):
            c = self.clientProcess(client, name=name.replace(" ", ""),
                                   share={"prefixes": [lan.prefix]},
                                   mtu={"set_tunnel_mtu": setMTU, "clamp_mss": clamp})
            c.start().waitState("online", 30)
            mtu = int(client.run(["cat", f"/sys/class/net/{c.wgInterface}/mtu"]).stdout)
            if setMTU:
                self.assertEqual(mtu, 1216)  # 1280 - 60, to a multiple of 16
            for who in (client, lan.node):
                if name == "MTU only" and who is lan.node:
                    continue  # a LAN host's own MSS knows nothing of the tunnel
                # The black hole passes no byte at all; the paths that work
                # take well under a second for the 10 MB.
                try:
                    seconds = fetch(who, INTERNET_HOST, server.port, server.size,
                                    timeout=3 if name == "neither" else 30)
                except TransferFailed as e:
                    seconds = f"failed ({e})"
                results[(name, who.name, mtu)] = seconds
            c.stop()
        for key, seconds in results.items():
            print(f"MTU 1280 path, {key[0]}, {key[1]} (tunnel MTU {key[2]}): 10 MB in {seconds} s")
        for (name, _, _), seconds in results.items():
            if name == "neither":  # the black hole the rest avoid
                self.assertIsInstance(seconds, str, str(results))
            else:
                self.assertIsInstance(seconds, float, str(results))


class FailClosedTests(DaemonMeshTestCase):

    def leaked(self, failClosed, standbys=0):
        """
        client - r1 - gwA, r1 - r2 - gwB, the gateways' default route
        announced into the mesh (so the client's main table has one via
        r1), a shared LAN host behind the client: pings to the internet
        host every 10 ms from both while gwA dies silently and the client
        moves to gwB.  Returns how many of them r1 forwarded bare (by the
        mesh default, not in a tunnel).  Stop leaves the routing as it
        was, either way.
        """
        client, gwA, gwB = self.mesh.nearAndFarGateway()
        self.assertIn(("0.0.0.0/0"), [dest for dest, _, _ in client.routes(42)])
        r1 = self.mesh.nodes["r1"]
        self.gateway(gwA)
        self.gateway(gwB)
        lan = lanHost(self.mesh, client, "lan", "192.168.77.0/24")
        # No standby: a promotion moves the route in one step, leaving no
        # moment without a session to leak in (test_aStandbyLeavesNoGap).
        c = self.clientProcess(client, routing={"fail_closed": failClosed},
                               share={"prefixes": [lan.prefix]}, standby={"count": standbys})
        before = routingSnapshot(client.ns)
        c.start().waitState("online", 30, gateway="gwA")
        if standbys:
            waitUntil(lambda: readyStandby(c) is not None, 30, message="a ready standby")
        leaked = leakWhileSwitching([client, lan.node], r1, c, gwA, "gwB")
        self.assertEqual(c.status()["current"]["name"], "gwB")
        with open(c.logPath) as f:
            self.assertEqual("routing: failing closed" in f.read(), failClosed and not standbys)
        c.stop()
        self.assertEqual(routingSnapshot(client.ns), before)
        return leaked

    def test_failClosedLeaksNothing(self):
        leaked = self.leaked(True)
        print(f"fail closed: {leaked} packets left by the mesh default route while switching")
        self.assertEqual(leaked, 0)

    def test_aStandbyLeavesNoGap(self):
        """
        With a hot standby (the default) the failover is a route change
        from one tunnel to the other: nothing leaves by the mesh default
        route even without failing closed.
        """
        leaked = self.leaked(False, standbys=1)
        print(f"a standby, not failing closed: {leaked} packets left by the mesh default route")
        self.assertEqual(leaked, 0)

    def test_withoutFailClosedPacketsLeak(self):
        leaked = self.leaked(False)
        print(f"not failing closed: {leaked} packets left by the mesh default route")
        self.assertGreater(leaked, 0)
