"""
The gateway answers a mesh peer by the way its packets came
(L{mnigs.server.arrival}; issue 11), with a real C{twistd mnigs-server},
real nftables and wireguard-go, and static routes instead of babel, so
that the asymmetry is there from the first packet::

    client --- r1 --- gw === inet (198.51.100.1)
                      |
                      r2        (forwards nothing)

The client reaches the gateway through r1; the gateway's main table sends
everything for the client's link to r2, which drops it (as a dead gateway
on babel's stale route would).  Nothing is mocked.
"""

import json
import socket

from twisted.trial.unittest import TestCase

from tests.mesh import test_gateway
from tests.mesh.gatewayproc import GatewayProcess, rpc
from tests.mesh.harness import Mesh, requireNamespaces, waitUntil

INTERNET = test_gateway.INTERNET
REPLY_TABLE, REPLY_PRIORITY = 8160, 8149


class ReplyByArrivalTests(TestCase):
    timeout = 120

    def setUp(self):
        requireNamespaces(self, "wireguard-go", "wg", "nft", "ping")
        self.mesh = Mesh(self)
        self.client, self.r1, self.gw, self.r2 = (
            self.mesh.node(name) for name in ("client", "r1", "gw", "r2"))
        self.mesh.link(self.client, self.r1)
        self.r1ToGw, _ = self.mesh.link(self.r1, self.gw)
        _, self.r2ToGw = self.mesh.link(self.gw, self.r2)
        self.mesh.internet(self.gw)
        self.r2.run(["sysctl", "-qw", "net.ipv4.ip_forward=0"])
        self.clientLink = self.client.meshSubnets[0]
        self.client.run(["ip", "route", "add", f"{self.gw.address}/32",
                         "via", self.address(self.r1, "m0")])
        self.r1.run(["ip", "route", "add", f"{self.gw.address}/32",
                     "via", self.address(self.gw, "m0")])

    @staticmethod
    def address(node, ifname):
        return node.interfaceAddresses[ifname].split("/")[0]

    def routeBackThrough(self, node, ifname):
        """The gateway's main-table route to the client's link: to C{node}'s C{ifname}."""
        self.gw.run(["ip", "route", "replace", self.clientLink, "via", self.address(node, ifname)])

    def startGateway(self, **overrides):
        self.gateway = GatewayProcess(self.gw, overrides)
        self.addCleanup(self.gateway.stop)
        return self.gateway.start()

    def nftTable(self):
        result = self.gw.run(["nft", "-j", "list", "table", "inet", "mnigs_hops"], check=False)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def nftRules(self):
        """The rules of the gateway's marking, without their handles."""
        return sorted(json.dumps({key: value for key, value in item["rule"].items()
                                  if key != "handle"}, sort_keys=True)
                      for item in self.nftTable()["nftables"] if "rule" in item)

    def knowsR1(self):
        """Whether the gateway's marking has r1 (its MAC on the gateway's link to it)."""
        mac = self.r1.run(["cat", f"/sys/class/net/{self.r1ToGw}/address"]).stdout.strip()
        table = self.nftTable()
        return table is not None and mac in json.dumps(table)

    def waitKnowsR1(self):
        try:
            waitUntil(self.knowsR1, 5, interval=0.1, message="the gateway to learn r1")
        except AssertionError as e:
            neighbours = self.gw.run(["ip", "neigh"]).stdout
            raise AssertionError(f"{e}\nneighbours:\n{neighbours}\ntable: {self.nftTable()}\n"
                                 f"{self.gateway.logTail()}") from None

    def reachGatewayOnce(self):
        """
        One packet from the client to the gateway: r1 resolves the
        gateway, so the gateway's neighbour table gets r1.
        """
        self.client.ping(self.gw.address, timeout=0.2)

    def register(self):
        wg = test_gateway.HandMadeWireGuard(self.client)
        kind, value = rpc(self.client, self.gw.address, "gateway.register",
                          {"client": {"name": "client"}, "method": "wireguard",
                           "params": {"public_key": wg.public}}, key="client")
        return wg, kind, value

    def ours(self):
        """Our policy rules and the routes of our tables, as left in the gateway."""
        ipr = self.gw.ipr()
        rules = [rule for family in (socket.AF_INET, socket.AF_INET6)
                 for rule in ipr.get_rules(family=family)
                 if rule.get_attr("FRA_PRIORITY") == REPLY_PRIORITY]
        routes = [route for family in (socket.AF_INET, socket.AF_INET6)
                  for route in ipr.route("dump", family=family)
                  if REPLY_TABLE <= (route.get_attr("RTA_TABLE") or 0) < REPLY_TABLE + 255]
        return rules, routes

    def assertTunnelWorks(self):
        wg, kind, value = self.register()
        self.assertEqual(kind, "result", value)
        wg.use(value["lease"])
        waitUntil(lambda: self.client.ping(INTERNET, timeout=1), 15,
                  message="a ping through the tunnel")

    def test_asymmetricRouteAnsweredByArrival(self):
        """
        The gateway's main table sends its answers into r2; answered by
        arrival, the offer, the registration and the tunnel all work, and
        everything of the feature goes with the data path (a drain; a
        plain stop keeps it for the next start, like the rest).
        """
        self.routeBackThrough(self.r2, self.r2ToGw)
        self.startGateway()
        self.reachGatewayOnce()
        self.waitKnowsR1()
        self.assertIsNotNone(self.gateway.info(self.client, self.gw.address), "no offer")
        self.assertTunnelWorks()
        rules, routes = self.ours()
        r1 = self.address(self.r1, self.r1ToGw)
        self.assertIn(r1, [route.get_attr("RTA_GATEWAY") for route in routes])
        self.assertEqual(len(rules), 2 * len(routes))  # one per family, a route for IPv4 only
        self.gateway.ctl("drain", "--timeout", "0")
        waitUntil(lambda: self.gateway.status()["state"] == "drained", 30, message="drained")
        self.assertEqual(self.ours(), ([], []))
        self.assertIsNone(self.nftTable())

    def test_noRouteBackAnsweredByArrival(self):
        """
        No route to the client at all: the main table's default route sends
        the answers to the uplink, and they are routed again to r1.
        """
        self.startGateway()
        self.reachGatewayOnce()
        self.waitKnowsR1()
        self.assertTunnelWorks()

    def test_ipv6AnsweredByArrival(self):
        """
        The same over IPv6: the gateway's neighbour entry for r1 is its
        link-local address, the way back C{default via fe80::...}.
        """
        v6 = {(self.client, "m0"): "fd00:1::1", (self.r1, "m0"): "fd00:1::2",
              (self.r1, self.r1ToGw): "fd00:2::1", (self.gw, "m0"): "fd00:2::2",
              (self.gw, "m1"): "fd00:3::1", (self.r2, self.r2ToGw): "fd00:3::2"}
        for (node, ifname), address in v6.items():
            node.run(["ip", "-6", "addr", "add", f"{address}/64", "dev", ifname, "nodad"])
        self.r2.run(["sysctl", "-qw", "net.ipv6.conf.all.forwarding=0"])
        self.client.run(["ip", "-6", "route", "add", "fd00:2::/64", "via", "fd00:1::2"])
        self.gw.run(["ip", "-6", "route", "add", "fd00:1::/64", "via", "fd00:3::2"])
        self.startGateway(rpc={"listen": ["::"]})
        self.client.run(["ping", "-6", "-n", "-q", "-c", "1", "-W", "0.2", "fd00:2::2"],
                        check=False)

        waitUntil(lambda: any(via.startswith("fe80:") for via in self.v6Gateways()), 5, interval=0.1, message="the gateway to learn r1's fe80 address")
        waitUntil(lambda: self.client.run(["ping", "-6", "-n", "-q", "-c", "1", "-W", "1",
                                           "fd00:2::2"], check=False).returncode == 0,
                  5, message="a ping6 answered by arrival")
        self.assertIsNotNone(self.gateway.info(self.client, "fd00:2::2"), "no offer over IPv6")

    def v6Gateways(self):
        """The IPv6 next hops of our tables in the gateway."""
        return [route.get_attr("RTA_GATEWAY")
                for route in self.gw.ipr().route("dump", family=socket.AF_INET6)
                if REPLY_TABLE <= (route.get_attr("RTA_TABLE") or 0) < REPLY_TABLE + 255]

    def test_switchedOffTheAnswersAreLost(self):
        self.routeBackThrough(self.r2, self.r2ToGw)
        self.startGateway(routing={"reply_by_arrival": False})
        self.reachGatewayOnce()
        self.assertIsNone(self.gateway.info(self.client, self.gw.address),
                          "answered although the way back is broken")
        wg, kind, value = self.register()
        self.assertEqual(kind, "failure", value)
        self.assertEqual(self.ours(), ([], []))
        self.assertIsNone(self.nftTable())

    def test_symmetricRouteStillWorks(self):
        """
        With the main table right, nothing changes; with no mesh interface
        configured, the gateway answers by arrival on its Ethernet links.
        """
        self.routeBackThrough(self.r1, self.r1ToGw)
        self.startGateway(mesh={"interfaces": []})
        self.reachGatewayOnce()
        self.waitKnowsR1()
        self.assertNotIn(b"up0", json.dumps(self.nftTable()).encode())
        self.assertTunnelWorks()

    def test_restartKeepsTheWayBack(self):
        """
        A gateway killed and started again keeps answering by arrival: the
        data path stays while it is down, and the new run takes it over.
        """
        self.routeBackThrough(self.r2, self.r2ToGw)
        self.startGateway()
        self.reachGatewayOnce()
        self.waitKnowsR1()
        self.assertTunnelWorks()
        before, rulesBefore = self.nftRules(), len(self.ours()[0])
        self.gateway.kill()
        self.assertTrue(self.client.ping(INTERNET, timeout=1), "a crashed server cut the client")
        self.gateway.start()
        self.assertEqual(self.nftRules(), before)  # the same ids
        self.assertEqual(len(self.ours()[0]), rulesBefore)  # taken over, not doubled
        self.assertTrue(self.client.ping(INTERNET, timeout=1), "the restarted server cut the client")
        self.assertIsNotNone(self.gateway.info(self.client, self.gw.address), "no offer")
