"""
mnigs over a real Yggdrasil 0.4 overlay (yggdrasil 0.4.7 daemons in
network namespaces, peered over veths with tcp:// URLs on the links'
IPv4 addresses, no multicast, no babeld: the kernels route nothing beyond
each link but yggdrasil's 200::/7), real mnigs-server gateways with
wireguard-go and nftables, an internet namespace behind each gateway, a
real twistd mnigs-client.  Faults are nftables drops.  Nothing is mocked.
"""

import ipaddress
import json
import time

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from mnigs.routing.candidates import HOP_METRIC
from mnigs.routing.yggdrasil import YggdrasilAdmin, YggdrasilError, YggdrasilRouteSource
from tests.mesh.clientproc import ClientProcess
from tests.mesh.gatewayproc import GatewayProcess
from tests.mesh.harness import Mesh, requireNamespaces, waitUntil
from tests.mesh.test_client import silence
from tests.mesh.yggdrasilnet import YggdrasilOverlay

INTERNET = "198.51.100.1"


def routeDevice(node, address):
    """The interface the node's kernel sends C{address}'s packets out of."""
    result = node.run(["ip", "-j", "route", "get", address])
    return json.loads(result.stdout)[0]["dev"]


class AdminAndWalkTests(TestCase):
    """
    L{YggdrasilAdmin} and L{YggdrasilRouteSource} in this process (the
    real reactor) against real daemons' admin sockets.
    """

    timeout = 120

    def setUp(self):
        requireNamespaces(self, "yggdrasil", "ping")
        self.mesh = Mesh(self)
        self.overlay = YggdrasilOverlay(self.mesh)

    def test_theWalkFindsEveryNodeAtItsHopCount(self):
        """
        a - b - c - d - e, and f off c: walking from a finds b..f at their
        hops, nearest first, and never a.
        """
        m, o = self.mesh, self.overlay
        for name in "abcdef":
            m.node(name)
        for x, y in ("ab", "bc", "cd", "de", "cf"):
            o.link(x, y)
        o.start()
        o.waitAllReachable("a")
        hops = {"b": 1, "c": 2, "d": 3, "f": 3, "e": 4}
        addresses = {name: ipaddress.IPv6Address(o.address(name)) for name in "abcdef"}
        admin = YggdrasilAdmin(reactor, o.endpoint("a"), timeout=10)
        source = YggdrasilRouteSource(reactor, admin, budget=20, concurrency=8)
        started = time.monotonic()
        d = source.candidates()

        def check(candidates):
            byAddress = {c.address: c.distance for c in candidates}
            self.assertNotIn(addresses["a"], byAddress)
            self.assertEqual({a: byAddress.get(a) for n, a in addresses.items() if n != "a"},
                             {addresses[n]: float(h) for n, h in hops.items()})
            self.assertEqual([c.distance for c in candidates],
                             sorted(c.distance for c in candidates))
            self.assertEqual(source.lastWalk.answered, 5)
            self.assertLess(time.monotonic() - started, 20)

        return d.addCallback(check)

    def test_errorsAreTheDaemonsOwn(self):
        m, o = self.mesh, self.overlay
        m.node("a"), m.node("b")
        o.link("a", "b")
        o.start()
        admin = YggdrasilAdmin(reactor, o.endpoint("a"), timeout=10)
        d = admin.call("getTunnelRouting")
        d = self.assertFailure(d, YggdrasilError)

        def unknown(error):
            self.assertEqual(error.error, "Unknown action 'gettunnelrouting', try 'list' for help")
            return self.assertFailure(admin.call("debug_remoteGetPeers", key="zz"), YggdrasilError)

        def notHex(error):
            self.assertIn("encoding/hex", error.error)
            return admin.call("getSelf")

        def itself(answer):
            self.assertEqual(answer["key"], o.key("a"))

        return d.addCallback(unknown).addCallback(notHex).addCallback(itself)


class ClientOverYggdrasilTests(TestCase):
    timeout = 240

    def setUp(self):
        requireNamespaces(self, "yggdrasil", "wireguard-go", "wg", "nft", "ping")
        self.mesh = Mesh(self)
        self.overlay = YggdrasilOverlay(self.mesh)

    def gateway(self, node):
        process = GatewayProcess(node, {"rpc": {"listen": ["::"]}}, name=node.name)
        self.addCleanup(process.stop)
        return process.start()

    def clientProcess(self, node):
        process = ClientProcess(node, {
            "discovery": {"sources": ["yggdrasil"], "scan": ["routes"], "timeout": 2.0},
            "sources": {"yggdrasil": {"admin": self.overlay.endpoint(node), "budget": 15.0,
                                      "poll_interval": 2.0}},
            "health": {"beyond": [INTERNET]},
        })
        self.addCleanup(process.stop)
        return process

    def test_findsAGatewayByWalkingAndFailsOverWhenItGoesSilent(self):
        """
        client - r1 - gwA, and r1 - r2 - gwB over Yggdrasil only: the
        client walks the overlay (gwA 2 hops away, gwB 3), goes online
        through one of them by WireGuard between the two nodes' 200::/7
        addresses, reaches the internet host, and moves to the other when
        the first silently drops everything.  Which one comes first is the
        ranking's choice: at 2 and 3 hops the distance term barely differs,
        and the round trip of one gateway.info call decides.  r1 holds the
        lowest key, so the spanning tree's root dies with neither gateway
        (this test is about mnigs's failover, not yggdrasil's re-rooting).
        """
        m, o = self.mesh, self.overlay
        client, r1, r2, gwA, gwB = (m.node(n) for n in ("client", "r1", "r2", "gwA", "gwB"))
        o.link(client, r1), o.link(r1, gwA), o.link(r1, r2), o.link(r2, gwB)
        m.internet(gwA), m.internet(gwB)
        o.start(root=r1)
        addresses = o.waitAllReachable(client)
        # Nothing but the overlay between the client and the gateways: its
        # one IPv4 route is its link's own subnet.
        self.assertEqual([(gateway, proto) for _, gateway, proto in client.routes()], [(None, 2)])
        self.assertFalse(client.ping(gwA.address, timeout=0.5))
        self.gateway(gwA)
        self.gateway(gwB)
        c = self.clientProcess(client).start()
        status = c.waitState("online", 60)
        first = status["current"]["name"]
        second = {"gwA": "gwB", "gwB": "gwA"}[first]
        self.assertEqual(status["current"]["method"], "wireguard")
        self.assertEqual(ipaddress.ip_address(status["current"]["host"]),
                         ipaddress.ip_address(addresses[first]))
        status = waitUntil(lambda: len(c.status()["gateways"]) == 2 and c.status(), 20,
                           message="both gateways ranked")
        distances = {g["name"]: g["distance"] for g in status["gateways"]}
        self.assertEqual(distances, {"gwA": 2 * HOP_METRIC, "gwB": 3 * HOP_METRIC})  # hops, in metric units
        self.assertTrue(client.ping(INTERNET))
        # WireGuard's own packets go to the gateway's overlay address, and
        # the kernel sends them into yggdrasil, never into the tunnel.
        endpoints = {line.split("\t")[2] for line in client.run(
            ["wg", "show", c.wgInterface, "dump"]).stdout.splitlines()[1:]}
        self.assertEqual(endpoints, {f"[{addresses[first]}]:51820"})
        ygg = o.configs[client]["IfName"]
        self.assertEqual(routeDevice(client, addresses[first]), ygg)
        self.assertEqual(routeDevice(client, INTERNET), c.wgInterface)

        silence(m.nodes[first])
        died = time.monotonic()
        status = c.waitState("online", 60, gateway=second)
        waitUntil(lambda: client.ping(INTERNET, timeout=0.5), 15, message=f"internet via {second}")
        self.assertLess(time.monotonic() - died, 20)
        self.assertEqual(ipaddress.ip_address(status["current"]["host"]),
                         ipaddress.ip_address(addresses[second]))
        self.assertEqual(routeDevice(client, addresses[second]), ygg)
        quality = {g["name"]: g["quality"] for g in status["gateways"]}
        self.assertGreaterEqual(quality[first]["failures"], 1)
