"""
Tests for L{mnigs.client.routes.PolicyRouting} against a fake rtnetlink
that keeps rules, routes and links the way the kernel answers pyroute2
(messages with fields and C{get_attr}).  The real kernel's side is in
the namespace tests (tests.mesh.test_client, tests.mesh.test_softether).
"""

import ipaddress
import socket

from pyroute2.netlink.exceptions import NetlinkError
from twisted.trial.unittest import SynchronousTestCase

from mnigs.client.routes import PolicyRouting, ruleSpecs

MAIN = 254
TABLE = 4242
PRIORITY = 4242
UNICAST, UNREACHABLE = 1, 7


class Message(dict):
    """A pyroute2 message: header fields by key, attributes by get_attr."""

    def __init__(self, attrs, **fields):
        super().__init__(fields)
        self.attrs = attrs

    def get_attr(self, name):
        return self.attrs.get(name)


class Kernel:
    """What the fake rtnetlink reads and changes."""

    def __init__(self):
        self.links = {1: "lo", 2: "eth0", 3: "wg-mnigs"}
        self.rules = [(0, 255), (32766, MAIN), (32767, 253)]  # IPv4 (priority, table)
        self.rules6 = [(0, 255), (32766, MAIN)]  # IPv6 (priority, table)
        self.suppressed = set()  # (family, priority) with suppress_prefixlength 0
        self.selectors = []  # IPv4: (priority, table, selectors) of each rule added
        self.selectors6 = []  # IPv6: the same
        self.mtus = {}  # link index -> MTU
        self.routeMTUs = {}  # destination -> the route's mtu metric
        self.routes = {}  # table -> [route dict]
        self.lookups = {}  # destination -> (oif or None) for route get
        self.opened = 0
        self.closed = 0
        self.failDeletes = False


class FakeIPRoute:
    def __init__(self, kernel):
        self.kernel = kernel

    def __enter__(self):
        self.kernel.opened += 1
        return self

    def __exit__(self, *exc):
        self.kernel.closed += 1

    def _rules(self, family):
        return self.kernel.rules6 if family == socket.AF_INET6 else self.kernel.rules

    def get_rules(self, family=socket.AF_INET):
        return [Message({"FRA_PRIORITY": priority or None, "FRA_TABLE": table},
                        table=table if table < 256 else 252, family=family)
                for priority, table in self._rules(family)]

    def rule(self, command, family, priority, table, suppress_prefixlen=None, **selectors):
        rules = self._rules(family)
        if command == "add":
            rules.append((priority, table))
            (self.kernel.selectors6 if family == socket.AF_INET6 else self.kernel.selectors).append(
                (priority, table, selectors))
            if suppress_prefixlen == 0:
                self.kernel.suppressed.add((family, priority))
        elif command == "del":
            if self.kernel.failDeletes or (priority, table) not in rules:
                raise NetlinkError(2, "No such file or directory")
            rules.remove((priority, table))
            self.kernel.suppressed.discard((family, priority))

    def flush_routes(self, table, family):
        version = 6 if family == socket.AF_INET6 else 4
        kept = [r for r in self.kernel.routes.get(table, [])
                if ipaddress.ip_network(r["dst"]).version != version]
        if kept:
            self.kernel.routes[table] = kept
        else:
            self.kernel.routes.pop(table, None)

    def link_lookup(self, ifname):
        return [index for index, name in self.kernel.links.items() if name == ifname]

    def get_links(self, index):
        name = self.kernel.links.get(index)
        return [Message({"IFLA_IFNAME": name, "IFLA_MTU": self.kernel.mtus.get(index, 1500)})] \
            if name else []

    def link(self, command, index, mtu):
        assert command == "set"
        self.kernel.mtus[index] = mtu

    def route(self, command, **spec):
        if command == "replace":
            routes = self.kernel.routes.setdefault(spec["table"], [])
            routes[:] = [r for r in routes if r["dst"] != spec["dst"]]
            spec.pop("family", None)
            routes.append(spec)
            return []
        if command == "get":
            if spec["dst"] not in self.kernel.lookups:
                raise NetlinkError(101, "Network is unreachable")
            metrics = None
            if spec["dst"] in self.kernel.routeMTUs:
                metrics = Message({"RTAX_MTU": self.kernel.routeMTUs[spec["dst"]]})
            return [Message({"RTA_OIF": self.kernel.lookups[spec["dst"]],
                             "RTA_METRICS": metrics})]
        raise AssertionError(command)

    def get_routes(self, family, table):
        found = []
        for route in self.kernel.routes.get(table, []):
            network = ipaddress.ip_network(route["dst"])
            if network.version != (4 if family == socket.AF_INET else 6):
                continue
            attrs = {} if network.prefixlen == 0 else {"RTA_DST": str(network.network_address)}
            found.append(Message(attrs, dst_len=network.prefixlen,
                                 type=route.get("type", UNICAST)))
        return found


class PolicyRoutingTests(SynchronousTestCase):
    def setUp(self):
        self.kernel = Kernel()
        self.routing = PolicyRouting(TABLE, PRIORITY, ipRoute=lambda: FakeIPRoute(self.kernel))

    def ours(self):
        return [rule for rule in self.kernel.rules if rule[0] in (PRIORITY, PRIORITY + 1)]

    def ours6(self):
        return [rule for rule in self.kernel.rules6 if rule[0] in (PRIORITY, PRIORITY + 1)]

    def routes6(self):
        return [r for r in self.kernel.routes.get(TABLE, [])
                if ipaddress.ip_network(r["dst"]).version == 6]

    def test_installWithIPv6PointsBothFamiliesAtTheTunnel(self):
        """
        IPv6 egress: ::/0 from the inner address through the tunnel, behind
        the same two rules in IPv6, and the mesh's IPv6 space thrown back
        to the rules after ours.
        """
        self.routing.install("wg-mnigs", source6="fd64::7")
        self.assertEqual(self.kernel.routes[TABLE], [
            {"dst": "0.0.0.0/0", "table": TABLE, "oif": 3},
            {"dst": "200::/7", "table": TABLE, "type": 9},
            {"dst": "fc00::/8", "table": TABLE, "type": 9},
            {"dst": "::/0", "table": TABLE, "oif": 3, "prefsrc": "fd64::7"}])
        self.assertEqual(self.ours(), [(PRIORITY, MAIN), (PRIORITY + 1, TABLE)])
        self.assertEqual(self.ours6(), [(PRIORITY, MAIN), (PRIORITY + 1, TABLE)])
        self.assertEqual(self.kernel.suppressed, {(socket.AF_INET, PRIORITY),
                                                  (socket.AF_INET6, PRIORITY)})

    def test_installWithoutIPv6RemovesAPreviousGatewaysIPv6(self):
        """
        Failing over from a gateway with IPv6 egress to one without: no
        IPv6 route or rule of mnigs's is left, the IPv4 ones are.
        """
        self.routing.install("wg-mnigs", source6="fd64::7")
        self.routing.install("eth0", gateway="10.0.0.1")
        self.assertEqual(self.ours6(), [])
        self.assertEqual(self.routes6(), [])
        self.assertEqual(self.ours(), [(PRIORITY, MAIN), (PRIORITY + 1, TABLE)])

    def test_installRefusesAnIPv6SourceThatIsNotOne(self):
        self.assertRaises(ValueError, self.routing.install, "wg-mnigs", source6="10.0.0.1")
        self.assertRaises(ValueError, self.routing.install, "wg-mnigs", source6="fd64::7; rm")
        self.assertEqual(self.routes6(), [])
        self.assertEqual(self.ours6(), [])

    def test_clearRemovesBothFamilies(self):
        self.routing.install("wg-mnigs", source6="fd64::7")
        self.routing.clear()
        self.assertEqual((self.ours(), self.ours6()), ([], []))
        self.assertNotIn(TABLE, self.kernel.routes)
        self.assertEqual(self.kernel.rules6, [(0, 255), (32766, MAIN)])

    def test_installPointsTheTableAtTheTunnelBehindTwoRules(self):
        self.routing.install("wg-mnigs")
        self.assertEqual(self.kernel.routes[TABLE],
                         [{"dst": "0.0.0.0/0", "table": TABLE, "oif": 3}])
        self.assertEqual(self.ours(), [(PRIORITY, MAIN), (PRIORITY + 1, TABLE)])
        self.assertEqual(self.kernel.suppressed, {(socket.AF_INET, PRIORITY)})
        self.assertEqual(self.ours6(), [])
        # Only the client's own traffic takes mnigs's table: nothing shared.
        self.assertEqual(self.kernel.selectors[1], (PRIORITY + 1, TABLE, {"iifname": "lo"}))
        self.assertEqual(self.kernel.opened, self.kernel.closed)

    def test_installAgainReplacesTheRouteAndKeepsTheRules(self):
        self.routing.install("wg-mnigs")
        self.routing.install("eth0", gateway="10.0.0.1")
        self.assertEqual(self.kernel.routes[TABLE],
                         [{"dst": "0.0.0.0/0", "table": TABLE, "oif": 2, "gateway": "10.0.0.1"}])
        self.assertEqual(self.ours(), [(PRIORITY, MAIN), (PRIORITY + 1, TABLE)])

    def test_installViaGatewayFromSource(self):
        self.routing.install("eth0", gateway="10.0.0.1", source="100.64.0.2")
        [route] = self.kernel.routes[TABLE]
        self.assertEqual((route["gateway"], route["prefsrc"]), ("10.0.0.1", "100.64.0.2"))

    def test_installRefusesAnAddressThatIsNotOne(self):
        self.assertRaises(ValueError, self.routing.install, "eth0", gateway="10.0.0.1; rm")
        self.assertNotIn(TABLE, self.kernel.routes)

    def test_installOnMissingInterfaceChangesNothing(self):
        self.assertRaises(LookupError, self.routing.install, "wg-gone")
        self.assertEqual(self.ours(), [])
        self.assertEqual(self.kernel.routes, {})
        self.assertEqual(self.kernel.opened, self.kernel.closed)

    def test_clearRemovesOnlyOurs(self):
        self.kernel.rules.append((100, 100))
        self.kernel.routes[100] = [{"dst": "0.0.0.0/0", "table": 100, "oif": 2}]
        self.routing.install("wg-mnigs")
        self.routing.clear()
        self.assertEqual(self.ours(), [])
        self.assertNotIn(TABLE, self.kernel.routes)
        self.assertIn((100, 100), self.kernel.rules)
        self.assertIn(100, self.kernel.routes)
        self.assertIn((32766, MAIN), self.kernel.rules)

    def test_clearWithNothingThereIsHarmless(self):
        before = list(self.kernel.rules)
        self.routing.clear()
        self.assertEqual(self.kernel.rules, before)

    def test_clearGoesOnWhenARuleWillNotGo(self):
        self.routing.install("wg-mnigs")
        self.kernel.failDeletes = True
        self.routing.clear()  # warns for each rule, and flushes anyway
        self.assertNotIn(TABLE, self.kernel.routes)

    def test_routedOnMeshByAHostOrPrefixRoute(self):
        self.kernel.routes[MAIN] = [{"dst": "0.0.0.0/0"}, {"dst": "10.1.0.0/16"},
                                    {"dst": "10.2.0.5/32"}]
        self.assertTrue(self.routing.routedOnMesh("10.1.2.3"))
        self.assertTrue(self.routing.routedOnMesh("10.2.0.5"))
        self.assertFalse(self.routing.routedOnMesh("10.2.0.6"))

    def test_aDefaultRouteIsNotTheMesh(self):
        self.kernel.routes[MAIN] = [{"dst": "0.0.0.0/0"}]
        self.assertFalse(self.routing.routedOnMesh("10.1.2.3"))

    def test_anUnreachableRouteIsNotTheMesh(self):
        # babeld installs unreachable routes for retracted prefixes.
        self.kernel.routes[MAIN] = [{"dst": "10.1.0.0/16", "type": UNREACHABLE}]
        self.assertFalse(self.routing.routedOnMesh("10.1.2.3"))

    def test_routedOnMeshOverIPv6(self):
        self.kernel.routes[MAIN] = [{"dst": "10.0.0.0/8"}, {"dst": "fd00::/8"}]
        self.assertTrue(self.routing.routedOnMesh("fd12::1"))
        self.assertFalse(self.routing.routedOnMesh("fe80::1"))

    def test_outgoingDevice(self):
        self.kernel.lookups = {"10.1.2.3": 3, "10.9.9.9": None, "10.8.8.8": 42}
        self.assertEqual(self.routing.outgoingDevice("10.1.2.3"), "wg-mnigs")
        self.assertIsNone(self.routing.outgoingDevice("10.9.9.9"))  # no RTA_OIF
        self.assertIsNone(self.routing.outgoingDevice("10.8.8.8"))  # link gone meanwhile
        self.assertIsNone(self.routing.outgoingDevice("192.0.2.1"))  # unreachable
        self.assertEqual(self.kernel.opened, self.kernel.closed)

    def test_eachOperationOpensItsOwnSocket(self):
        self.routing.install("wg-mnigs")
        self.routing.routedOnMesh("10.1.2.3")
        self.routing.clear()
        self.assertEqual((self.kernel.opened, self.kernel.closed), (3, 3))


class RuleSpecTests(SynchronousTestCase):
    def test_theClientsOwnTrafficOnly(self):
        self.assertEqual(ruleSpecs(TABLE, PRIORITY), [
            {"family": socket.AF_INET, "priority": PRIORITY, "table": MAIN,
             "suppress_prefixlen": 0},
            {"family": socket.AF_INET, "priority": PRIORITY + 1, "table": TABLE,
             "iifname": "lo"}])

    def test_sharedPrefixesAndInterfacesOfTheFamily(self):
        rules = ruleSpecs(TABLE, PRIORITY, [ipaddress.ip_network("192.168.7.0/24"),
                                            ipaddress.ip_network("fd00:7::/64")], ["br-lan"])
        self.assertEqual([{k: v for k, v in rule.items() if k not in ("family", "table")}
                          for rule in rules[2:]],
                         [{"priority": PRIORITY + 1, "src": "192.168.7.0", "src_len": 24},
                          {"priority": PRIORITY + 1, "iifname": "br-lan"}])
        self.assertEqual({rule["table"] for rule in rules[1:]}, {TABLE})
        six = ruleSpecs(TABLE, PRIORITY, [ipaddress.ip_network("fd00:7::/64")], family=6)
        self.assertEqual(six[2]["src"], "fd00:7::")
        self.assertEqual({rule["family"] for rule in six}, {socket.AF_INET6})


class SharingAndFailClosedTests(SynchronousTestCase):
    def routing(self, **kw):
        self.kernel = Kernel()
        return PolicyRouting(TABLE, PRIORITY, ipRoute=lambda: FakeIPRoute(self.kernel), **kw)

    def test_sharedSourcesGetRules(self):
        routing = self.routing(prefixes=[ipaddress.ip_network("192.168.7.0/24")],
                               interfaces=["br-lan"])
        routing.install("wg-mnigs")
        self.assertEqual([s for p, t, s in self.kernel.selectors],
                         [{}, {"iifname": "lo"}, {"src": "192.168.7.0", "src_len": 24},
                          {"iifname": "br-lan"}])
        routing.clear()
        self.assertEqual([r for r in self.kernel.rules if r[0] in (PRIORITY, PRIORITY + 1)], [])

    def test_withdrawWithoutFailClosedClears(self):
        routing = self.routing()
        routing.install("wg-mnigs")
        routing.withdraw()
        self.assertNotIn(TABLE, self.kernel.routes)
        self.assertEqual([r for r in self.kernel.rules if r[0] in (PRIORITY, PRIORITY + 1)], [])

    def test_withdrawByAConnectionWithoutTheRouteLeavesIt(self):
        """
        A standby that goes, or the old connection after its standby took
        the route over, leaves mnigs's route alone; the one holding it
        takes it down.
        """
        routing = self.routing()
        routing.install("eth0", gateway="10.0.0.1")
        routing.install("wg-mnigs")  # the standby takes over: one route replaced
        routing.withdraw("eth0")
        self.assertEqual(self.kernel.routes[TABLE],
                         [{"dst": "0.0.0.0/0", "table": TABLE, "oif": 3}])
        routing.withdraw("wg-mnigs")
        self.assertNotIn(TABLE, self.kernel.routes)
        routing.withdraw("wg-mnigs")  # nothing held: nothing done
        self.assertNotIn(TABLE, self.kernel.routes)

    def test_withdrawFailingClosedLeavesAnUnreachableDefault(self):
        routing = self.routing(failClosed=True)
        routing.install("wg-mnigs")
        routing.withdraw()
        self.assertEqual(self.kernel.routes[TABLE],
                         [{"dst": "0.0.0.0/0", "table": TABLE, "type": "unreachable"}])
        self.assertEqual([r for r in self.kernel.rules if r[0] in (PRIORITY, PRIORITY + 1)],
                         [(PRIORITY, MAIN), (PRIORITY + 1, TABLE)])
        # The next gateway's route replaces it; the rules are not doubled.
        routing.install("wg-mnigs")
        self.assertEqual(self.kernel.routes[TABLE], [{"dst": "0.0.0.0/0", "table": TABLE, "oif": 3}])
        self.assertEqual(len(self.kernel.rules), 5)
        routing.clear()
        self.assertNotIn(TABLE, self.kernel.routes)

    def test_ipv6RulesForTheSharedLAN(self):
        """
        With IPv6 egress and a shared LAN, IPv6's rules are IPv4's: the
        client's own traffic, the shared IPv6 prefixes (not the IPv4
        ones) and the shared interfaces (the LAN's IPv6 is translated to
        the lease's address6, L{mnigs.client.datapath}).
        """
        routing = self.routing(prefixes=[ipaddress.ip_network("192.168.7.0/24"),
                                         ipaddress.ip_network("fd00:7::/64")],
                               interfaces=["br-lan"])
        routing.install("wg-mnigs", source6="fd64::7")
        self.assertEqual([s for p, t, s in self.kernel.selectors6],
                         [{}, {"iifname": "lo"}, {"src": "fd00:7::", "src_len": 64},
                          {"iifname": "br-lan"}])
        self.assertEqual([s for p, t, s in self.kernel.selectors],
                         [{}, {"iifname": "lo"}, {"src": "192.168.7.0", "src_len": 24},
                          {"iifname": "br-lan"}])
        routing.clear()
        self.assertEqual(self.kernel.rules6, [(0, 255), (32766, MAIN)])

    def test_noIPv6EgressNoIPv6RulesForTheLAN(self):
        routing = self.routing(prefixes=[ipaddress.ip_network("fd00:7::/64")],
                               interfaces=["br-lan"])
        routing.install("wg-mnigs")
        self.assertEqual(self.kernel.rules6, [(0, 255), (32766, MAIN)])

    def test_failingClosedKeepsTheSharedLANsIPv6Rules(self):
        routing = self.routing(prefixes=[ipaddress.ip_network("fd00:7::/64")], failClosed=True)
        routing.install("wg-mnigs", source6="fd64::7")
        routing.withdraw()
        routes = {r["dst"]: r for r in self.kernel.routes[TABLE]}
        self.assertEqual(routes["::/0"]["type"], "unreachable")
        self.assertEqual([s for p, t, s in self.kernel.selectors6],
                         [{}, {"iifname": "lo"}, {"src": "fd00:7::", "src_len": 64}])
        # The rules stay: the LAN's IPv6 meets the unreachable default too.
        self.assertEqual([r for r in self.kernel.rules6 if r[0] in (PRIORITY, PRIORITY + 1)],
                         [(PRIORITY, MAIN), (PRIORITY + 1, TABLE), (PRIORITY + 1, TABLE)])
        routing.clear()
        self.assertEqual(self.kernel.rules6, [(0, 255), (32766, MAIN)])

    def test_withdrawFailingClosedCoversIPv6WhenTheSessionHadIt(self):
        routing = self.routing(failClosed=True)
        routing.install("wg-mnigs", source6="fd64::7")
        routing.withdraw()
        routes = {r["dst"]: r for r in self.kernel.routes[TABLE]}
        self.assertEqual(routes["::/0"], {"dst": "::/0", "table": TABLE, "type": "unreachable"})
        self.assertEqual(routes["0.0.0.0/0"]["type"], "unreachable")
        self.assertEqual(routes["200::/7"]["type"], 9)  # the mesh's IPv6 still falls through
        self.assertEqual([r for r in self.kernel.rules6 if r[0] in (PRIORITY, PRIORITY + 1)],
                         [(PRIORITY, MAIN), (PRIORITY + 1, TABLE)])
        # The next gateway's IPv6 route replaces it; the rules are not doubled.
        routing.install("wg-mnigs", source6="fd64::8")
        routes = {r["dst"]: r for r in self.kernel.routes[TABLE]}
        self.assertEqual(routes["::/0"]["prefsrc"], "fd64::8")
        self.assertEqual(len(self.kernel.rules6), 4)
        routing.clear()
        self.assertNotIn(TABLE, self.kernel.routes)
        self.assertEqual(self.kernel.rules6, [(0, 255), (32766, MAIN)])

    def test_withdrawFailingClosedLeavesIPv6AloneWithoutIt(self):
        routing = self.routing(failClosed=True)
        routing.install("wg-mnigs")
        routing.withdraw()
        self.assertEqual([r["dst"] for r in self.kernel.routes[TABLE]], ["0.0.0.0/0"])
        self.assertEqual(self.kernel.rules6, [(0, 255), (32766, MAIN)])

    def test_pathMTUFromTheRouteOrItsDevice(self):
        routing = self.routing()
        self.kernel.lookups = {"10.1.2.3": 2, "10.1.2.4": 2}
        self.kernel.mtus[2] = 1400
        self.kernel.routeMTUs["10.1.2.4"] = 1280
        self.assertEqual(routing.pathMTU("10.1.2.3"), 1400)
        self.assertEqual(routing.pathMTU("10.1.2.4"), 1280)
        self.assertIsNone(routing.pathMTU("192.0.2.1"))

    def test_setMTU(self):
        routing = self.routing()
        routing.setMTU("wg-mnigs", 1220)
        self.assertEqual(self.kernel.mtus[3], 1220)
        self.assertRaises(LookupError, routing.setMTU, "wg-gone", 1220)
