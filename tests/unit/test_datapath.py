"""
L{mnigs.client.datapath}: the client's nft table (script generation) and
the IPv4 forwarding switch, with a recording nft runner and a temporary
file standing in for the sysctl.
"""

import ipaddress
import types
import os

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from mnigs.client.datapath import (
    IPV6_FORWARD,
    SHARE_MARK,
    ClientDataPath,
    Forwarding,
    Forwarding6,
    Passage,
    staleFlow,
    tableScript,
)
from tests.unit.test_services import Runner

LEASE = ipaddress.ip_address("100.64.0.2")
LEASE6 = ipaddress.ip_address("fd64:a::2")


class ScriptTests(SynchronousTestCase):
    def test_idleTableHoldsTheSharedPrefixesOnly(self):
        script = tableScript("mnigs_client", [ipaddress.ip_network("192.168.7.0/24"),
                                              ipaddress.ip_network("fd00::/64")])
        self.assertTrue(script.startswith("table inet mnigs_client {}\n"
                                          "delete table inet mnigs_client\n"))
        self.assertIn("\tset shared4 {\n\t\ttype ipv4_addr\n\t\tflags interval\n"
                      "\t\telements = { 192.168.7.0/24 }\n\t}\n", script)
        self.assertIn("\tset shared6 {\n\t\ttype ipv6_addr\n\t\tflags interval\n"
                      "\t\telements = { fd00::/64 }\n\t}\n", script)
        self.assertNotIn("chain", script)

    def test_sharedIPv6PrefixTranslatedToTheLeasesAddress6(self):
        script = tableScript("t", [ipaddress.ip_network("192.168.7.0/24"),
                                   ipaddress.ip_network("fd77::/64")], [],
                             Passage("wg0", LEASE, 1280, address6=LEASE6))
        self.assertIn('oifname "wg0" ip saddr @shared4 snat ip to 100.64.0.2\n', script)
        self.assertIn('oifname "wg0" ip6 saddr @shared6 snat ip6 to fd64:a::2\n', script)

    def test_noIPv6EgressNoNAT66(self):
        # Without the lease's address6 no route of mnigs's takes the LAN's
        # IPv6 into the tunnel, and there is nothing to translate it to.
        script = tableScript("t", [ipaddress.ip_network("fd77::/64")], ["br-lan"],
                             Passage("wg0", LEASE, 1280))
        self.assertNotIn("snat ip6", script)
        self.assertIn("elements = { fd77::/64 }", script)

    def test_sharedInterfaceTranslatedInBothFamilies(self):
        script = tableScript("t", [], ["br-lan"], Passage("wg0", LEASE, 1280, address6=LEASE6))
        self.assertIn(f'oifname "wg0" meta nfproto ipv4 meta mark & {SHARE_MARK:#x} == '
                      f'{SHARE_MARK:#x} snat ip to 100.64.0.2\n', script)
        self.assertIn(f'oifname "wg0" meta nfproto ipv6 meta mark & {SHARE_MARK:#x} == '
                      f'{SHARE_MARK:#x} snat ip6 to fd64:a::2\n', script)
        self.assertNotIn("@shared6 snat", script)

    def test_onlyIPv4SharedNoNAT66(self):
        script = tableScript("t", [ipaddress.ip_network("192.168.7.0/24")], [],
                             Passage("wg0", LEASE, 1280, address6=LEASE6))
        self.assertNotIn("snat ip6", script)

    def test_sharedPrefixTranslatedToTheLease(self):
        script = tableScript("t", [ipaddress.ip_network("192.168.7.0/24")], [],
                             Passage("wg0", LEASE, 1220))
        self.assertIn('oifname "wg0" ip saddr @shared4 snat ip to 100.64.0.2\n', script)
        self.assertNotIn("meta mark", script)

    def test_sharedInterfaceMarkedThenTranslated(self):
        script = tableScript("t", [], ["br-lan"], Passage("wg0", LEASE, 1220))
        self.assertIn(f'iifname {{ "br-lan" }} oifname "wg0" meta mark set meta mark | '
                      f'{SHARE_MARK:#x}\n', script)
        self.assertIn(f'oifname "wg0" meta nfproto ipv4 meta mark & {SHARE_MARK:#x} == '
                      f'{SHARE_MARK:#x} snat ip to 100.64.0.2\n', script)
        self.assertNotIn("@shared4 snat", script)

    def test_nothingSharedNoNAT(self):
        script = tableScript("t", [], [], Passage("wg0", LEASE, 1220))
        self.assertNotIn("snat", script)
        self.assertIn("maxseg", script)

    def test_clampToTheTunnelMTUBothWays(self):
        script = tableScript("t", [], [], Passage("wg0", LEASE, 1220))
        for line in ('oifname "wg0" meta nfproto ipv4 tcp flags syn tcp option maxseg size set 1180',
                     'iifname "wg0" meta nfproto ipv4 tcp flags syn tcp option maxseg size set 1180',
                     'oifname "wg0" meta nfproto ipv6 tcp flags syn tcp option maxseg size set 1160'):
            self.assertIn(line, script)
        self.assertIn("hook postrouting priority mangle", script)
        self.assertIn("hook prerouting priority mangle", script)

    def test_clampToTheRouteWithoutAnMTU(self):
        script = tableScript("t", [], [], Passage("m0", LEASE, None))
        self.assertIn('oifname "m0" tcp flags syn tcp option maxseg size set rt mtu', script)
        self.assertIn("hook forward priority mangle", script)

    def test_noClamp(self):
        self.assertNotIn("maxseg", tableScript("t", [], [], Passage("wg0", LEASE, 1220, False)))

    def test_namesAreChecked(self):
        self.assertRaises(ValueError, Passage, 'wg0" accept', LEASE)
        self.assertRaises(TypeError, Passage, "wg0", "100.64.0.2")
        self.assertRaises(ValueError, Passage, "wg0", LEASE, 100)
        self.assertRaises(ValueError, tableScript, "bad table", [])
        self.assertRaises(ValueError, tableScript, "t", [], ["br lan"], Passage("wg0", LEASE))
        self.assertRaises(ValueError, Passage, "wg0", LEASE6)
        self.assertRaises(ValueError, Passage, "wg0", LEASE, address6=LEASE)
        self.assertRaises(TypeError, Passage, "wg0", LEASE, address6="fd64:a::2")


class ForwardingTests(SynchronousTestCase):
    def sysctl(self, value):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(value + "\n")
        return path

    def read(self, path):
        with open(path) as f:
            return f.read().strip()

    def test_turnedOnAndBackOff(self):
        path = self.sysctl("0")
        forwarding = Forwarding(path)
        forwarding.enable()
        self.assertEqual(self.read(path), "1")
        forwarding.restore()
        self.assertEqual(self.read(path), "0")

    def test_aCrashedRunIsRemembered(self):
        path, marker = self.sysctl("0"), self.mktemp()
        Forwarding(path, marker).enable()  # then the client crashes
        self.assertEqual(self.read(path), "1")
        again = Forwarding(path, marker)
        again.enable()
        again.restore()
        self.assertEqual(self.read(path), "0")
        self.assertFalse(os.path.exists(marker))

    def test_ipv6SwitchIsConfAll(self):
        self.assertEqual(Forwarding6().path, IPV6_FORWARD)
        self.assertEqual(IPV6_FORWARD, "/proc/sys/net/ipv6/conf/all/forwarding")
        self.assertIn("IPv6", Forwarding6().what)

    def test_leftOnIfItWasOn(self):
        path = self.sysctl("1")
        forwarding = Forwarding(path)
        forwarding.enable()
        forwarding.restore()
        self.assertEqual(self.read(path), "1")


class DataPathTests(SynchronousTestCase):
    def build(self, prefixes=(), interfaces=(), clamp=True):
        self.runner = Runner()
        self.path, self.path6 = self.mktemp(), self.mktemp()
        for path in (self.path, self.path6):
            with open(path, "w") as f:
                f.write("0\n")
        self.forgotten = []
        flows = types.SimpleNamespace(forget=lambda addresses, prefixes, interfaces:
                                      self.forgotten.append(sorted(map(str, addresses))) or 1)
        return ClientDataPath(self.runner, "mnigs_client", prefixes, interfaces, clamp,
                              Forwarding(self.path), Forwarding6(self.path6), flows)

    def forwarding(self):
        values = []
        for path in (self.path, self.path6):
            with open(path) as f:
                values.append(f.read().strip())
        return values

    def test_ipv6ForwardingFromTheFirstSessionWithIPv6(self):
        """
        Sharing IPv6 (a prefix, or an interface): IPv6 forwarding goes on
        when a session with IPv6 egress comes up, not before (the kernel
        then ignores router advertisements), stays on across sessions,
        and goes back off on stop.
        """
        data = self.build(["192.168.7.0/24", "fd77::/64"])
        self.successResultOf(data.start())
        self.assertEqual(self.forwarding(), ["1", "0"])
        self.successResultOf(data.online(Passage("wg0", LEASE, 1280)))
        self.assertEqual(self.forwarding(), ["1", "0"])
        self.successResultOf(data.online(Passage("wg0", LEASE, 1280, address6=LEASE6)))
        self.assertEqual(self.forwarding(), ["1", "1"])
        self.assertIn("snat ip6 to fd64:a::2", self.runner.scripts[-1])
        self.successResultOf(data.offline())
        self.successResultOf(data.online(Passage("wg0", LEASE, 1280)))
        self.assertEqual(self.forwarding(), ["1", "1"])
        self.successResultOf(data.stop())
        self.assertEqual(self.forwarding(), ["0", "0"])

    def test_ipv6ForwardingForASharedInterface(self):
        data = self.build(interfaces=["br-lan"], clamp=False)
        self.successResultOf(data.start())
        self.successResultOf(data.online(Passage("wg0", LEASE, 1280, address6=LEASE6)))
        self.assertEqual(self.forwarding(), ["1", "1"])
        self.assertIn("snat ip6 to fd64:a::2", self.runner.scripts[-1])
        self.successResultOf(data.stop())
        self.assertEqual(self.forwarding(), ["0", "0"])

    def test_ipv4SharedOnlyLeavesIPv6ForwardingAlone(self):
        data = self.build(["192.168.7.0/24"])
        self.successResultOf(data.start())
        self.successResultOf(data.online(Passage("wg0", LEASE, 1280, address6=LEASE6)))
        self.assertEqual(self.forwarding(), ["1", "0"])
        self.successResultOf(data.stop())
        self.assertEqual(self.forwarding(), ["0", "0"])

    def test_nothingSharedLeavesForwardingAlone(self):
        data = self.build()
        self.successResultOf(data.start())
        self.successResultOf(data.online(Passage("wg0", LEASE, 1280, address6=LEASE6)))
        self.successResultOf(data.stop())
        self.assertEqual(self.forwarding(), ["0", "0"])

    def test_clampOffKeepsTheIPv6Address(self):
        data = self.build(["fd77::/64"], clamp=False)
        self.successResultOf(data.online(Passage("wg0", LEASE, 1280, address6=LEASE6)))
        self.assertIn("snat ip6 to fd64:a::2", self.runner.scripts[-1])
        self.assertNotIn("maxseg", self.runner.scripts[-1])

    def test_lifecycle(self):
        data = self.build(["192.168.7.0/24"])
        self.successResultOf(data.start())
        with open(self.path) as f:
            self.assertEqual(f.read().strip(), "1")
        self.successResultOf(data.online(Passage("wg0", LEASE, 1220)))
        self.successResultOf(data.offline())
        self.successResultOf(data.stop())
        with open(self.path) as f:
            self.assertEqual(f.read().strip(), "0")
        idle, online, offline, removed = self.runner.scripts
        self.assertIn("snat ip to 100.64.0.2", online)
        self.assertEqual(idle, offline)
        self.assertEqual(removed, "table inet mnigs_client {}\ndelete table inet mnigs_client\n")

    def test_aSwitchForgetsTheLANFlowsOfTheOldAddress(self):
        """
        A LAN flow keeps its translation: after a switch to a gateway that
        gave another inner address it would leave as the old one, which
        the new gateway drops (bench/router.py saw a LAN ping die so).
        The flows translated to the old addresses are forgotten once the
        new table is in, and every time a session comes online the LAN's
        flows that were not translated at all (L{staleFlow}, with no old
        address when it is the same one again).
        """
        data = self.build(["192.168.7.0/24"])
        self.successResultOf(data.start())
        self.successResultOf(data.online(Passage("wg0", LEASE, 1220)))
        self.assertEqual(self.forgotten, [[]])
        self.successResultOf(data.online(Passage("wg0", LEASE, 1220)))
        self.assertEqual(self.forgotten, [[], []])
        self.successResultOf(data.online(Passage("wg0", ipaddress.ip_address("100.64.1.2"), 1220)))
        self.assertEqual(self.forgotten, [[], [], ["100.64.0.2"]])
        self.successResultOf(data.offline())
        self.assertEqual(self.forgotten, [[], [], ["100.64.0.2"], ["100.64.1.2"]])

    def test_staleFlows(self):
        """
        A flow translated to an address the LAN no longer leaves as, and
        a flow from the shared LAN that was not translated (it left bare
        while no session was online), are stale; a flow translated to the
        current address, the client's own flows and flows it forwards for
        others are not.
        """
        a = ipaddress.ip_address
        old, shared = {a("100.64.0.2")}, [ipaddress.ip_network("192.168.7.0/24")]
        self.assertTrue(staleFlow(a("192.168.7.9"), a("100.64.0.2"), old, shared))
        self.assertTrue(staleFlow(a("192.168.7.9"), a("192.168.7.9"), old, shared))
        self.assertTrue(staleFlow(a("192.168.7.9"), a("192.168.7.9"), set(), shared))
        self.assertFalse(staleFlow(a("192.168.7.9"), a("100.64.1.2"), old, shared))
        self.assertFalse(staleFlow(a("100.64.0.2"), a("100.64.0.2"), old, shared))
        self.assertFalse(staleFlow(a("10.0.0.5"), a("10.0.0.5"), old, shared))

    def test_nothingSharedForgetsNothing(self):
        data = self.build()
        self.successResultOf(data.online(Passage("wg0", LEASE, 1220)))
        self.successResultOf(data.offline())
        self.assertEqual(self.forgotten, [])

    def test_clampOffAndNothingSharedNeedsNoTable(self):
        data = self.build(clamp=False)
        self.successResultOf(data.start())
        self.successResultOf(data.online(Passage("wg0", LEASE, 1220)))
        self.successResultOf(data.stop())
        self.assertEqual([s.count("chain") for s in self.runner.scripts], [0, 0])
        with open(self.path) as f:
            self.assertEqual(f.read().strip(), "0")  # nothing shared: forwarding untouched

    def test_sharingWithoutClamp(self):
        data = self.build(interfaces=["br-lan"], clamp=False)
        data.online(Passage("wg0", LEASE, 1220))
        [script] = self.runner.scripts
        self.assertIn("snat", script)
        self.assertNotIn("maxseg", script)

    def test_aFailedRunIsLogged(self):
        data = self.build(["192.168.7.0/24"])
        data.runner.apply = lambda script: defer.fail(RuntimeError("nft: no such file"))
        # Logged (log.error), not raised: the session goes on without it.
        self.assertIsNone(self.successResultOf(data.online(Passage("wg0", LEASE, 1220))))
