"""
Tests for L{mnigs.nft}: script generation, batching and ordering with a fake
runner and a clock.
"""

import ipaddress

from hypothesis import given, settings, strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mnigs.interfaces import IAccessList
from mnigs.nft import (
    NftAccess,
    NftError,
    NftRunner,
    changesScript,
    removeScript,
    tableScript,
)
from tests.unit.fakeprocess import FakeSpawner

ip = ipaddress.ip_address


class FakeRunner:
    def __init__(self):
        self.scripts = []
        self.pending = []

    def apply(self, script):
        self.scripts.append(script)
        d = Deferred()
        self.pending.append(d)
        return d

    def finish(self, error=None):
        d = self.pending.pop(0)
        if error is not None:
            d.errback(error)
        else:
            d.callback(None)


class ScriptTests(SynchronousTestCase):
    def test_tableReplacesAnyOldTableInOneTransaction(self):
        script = tableScript("mnigs", "eth0", [ip("10.0.0.2"), ip("2001:db8::1"), ip("10.0.0.1")])
        lines = script.splitlines()
        self.assertEqual(lines[:3], ["table inet mnigs {}", "delete table inet mnigs",
                                     "table inet mnigs {"])
        self.assertIn("\t\telements = { 10.0.0.1, 10.0.0.2 }", lines)
        self.assertIn("\t\telements = { 2001:db8::1 }", lines)
        forward = [l.strip() for l in lines[lines.index("\tchain forward {") + 2:][:6]]
        self.assertEqual(forward, [
            'oifname "eth0" ip saddr @clients4 accept',
            'oifname "eth0" ip6 saddr @clients6 accept',
            'oifname "eth0" drop',
            'iifname "eth0" ct state established,related ip daddr @clients4 accept',
            'iifname "eth0" ct state established,related ip6 daddr @clients6 accept',
            'iifname "eth0" drop',
        ])
        self.assertIn("\t\ttype filter hook forward priority filter; policy accept;", lines)
        self.assertIn("\t\ttype nat hook postrouting priority srcnat; policy accept;", lines)
        self.assertIn('\t\toifname "eth0" ip saddr @clients4 masquerade', lines)
        self.assertIn('\t\toifname "eth0" ip6 saddr @clients6 masquerade', lines)

    def test_noReplyPortsNoRerouteChains(self):
        self.assertNotIn("reroute", tableScript("mnigs", "eth0", []))
        self.assertNotIn("mark", tableScript("mnigs", "eth0", []))

    def test_replyPortsAreRoutedAgainAndUnmarked(self):
        """
        Answers from the tunnel daemons' UDP ports get a mark bit flipped in
        a route chain (the kernel routes them again, by the tables) and
        flipped back after routing; tests/mesh/test_reply_route.py shows it
        on real wireguard-go.
        """
        lines = tableScript("mnigs", "eth0", [], [51820, 1194, 51820]).splitlines()
        flip = "\t\tudp sport { 1194, 51820 } meta mark set meta mark ^ 0x4d000000"
        reroute = lines.index("\tchain reroute {")
        self.assertEqual(lines[reroute + 1:reroute + 3], [
            "\t\ttype route hook output priority mangle; policy accept;", flip])
        unmark = lines.index("\tchain unmark {")
        self.assertEqual(lines[unmark + 1:unmark + 3], [
            "\t\ttype filter hook postrouting priority mangle; policy accept;", flip])

    def test_badReplyPortsAreRefused(self):
        for port in (0, 65536, "51820", 1.5, True):
            self.assertRaises(ValueError, tableScript, "mnigs", "eth0", [], [port])

    def test_emptySetsHaveNoElementsLine(self):
        self.assertNotIn("elements", tableScript("mnigs", "eth0", []))

    def test_onlyAddressObjectsAreAccepted(self):
        self.assertRaises(TypeError, tableScript, "mnigs", "eth0", ["10.0.0.1"])
        self.assertRaises(TypeError, tableScript, "mnigs", "eth0",
                          [ipaddress.ip_network("10.0.0.0/24")])
        self.assertRaises(ValueError, tableScript, "mnigs", "eth0", [ip("fe80::1%eth0")])

    def test_denyIsAddThenDelete(self):
        script = changesScript("t", {ip("10.0.0.2"): True, ip("10.0.0.3"): False,
                                     ip("2001:db8::9"): False})
        self.assertEqual(script.splitlines(), [
            "add element inet t clients4 { 10.0.0.2, 10.0.0.3 }",
            "delete element inet t clients4 { 10.0.0.3 }",
            "add element inet t clients6 { 2001:db8::9 }",
            "delete element inet t clients6 { 2001:db8::9 }",
        ])

    def test_removeNeverFailsOnAMissingTable(self):
        self.assertEqual(removeScript("mnigs"),
                         "table inet mnigs {}\ndelete table inet mnigs\n")

    @settings(derandomize=True, max_examples=200, deadline=None)
    @given(st.lists(st.tuples(st.ip_addresses(), st.booleans()), max_size=20))
    def test_changesEndInTheLastWish(self, calls):
        """Whatever the calls, each touched address is added, and deleted iff
        its last call was a deny."""
        changes = {}
        for address, admit in calls:
            changes.pop(address, None)
            changes[address] = admit
        script = changesScript("t", changes)
        added, deleted = set(), set()
        for line in script.splitlines():
            verb, _, _, _, setName, rest = line.split(" ", 5)
            names = {ip(x.strip()) for x in rest.strip("{} ").split(",")}
            self.assertTrue(all(a.version == (4 if setName == "clients4" else 6) for a in names))
            (added if verb == "add" else deleted).update(names)
        self.assertEqual(added, set(changes))
        self.assertEqual(deleted, {a for a, admit in changes.items() if not admit})


class NftAccessTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.runner = FakeRunner()
        self.access = NftAccess(self.clock, self.runner, "eth0")

    def test_providesIAccessList(self):
        verifyObject(IAccessList, self.access)

    def test_badNamesAreRefused(self):
        self.assertRaises(ValueError, NftAccess, self.clock, self.runner, 'eth0" drop')
        self.assertRaises(ValueError, NftAccess, self.clock, self.runner, "x" * 16)
        self.assertRaises(ValueError, NftAccess, self.clock, self.runner, "eth0", table="a b")

    def test_callsInOneTurnMakeOneRun(self):
        d1 = self.access.allow(ip("10.0.0.1"))
        d2 = self.access.deny(ip("10.0.0.2"))
        d3 = self.access.allow(ip("2001:db8::1"))
        self.assertEqual(self.runner.scripts, [])
        self.clock.advance(0)
        self.assertEqual(self.runner.scripts, [
            "add element inet mnigs clients4 { 10.0.0.1, 10.0.0.2 }\n"
            "delete element inet mnigs clients4 { 10.0.0.2 }\n"
            "add element inet mnigs clients6 { 2001:db8::1 }\n"])
        for d in (d1, d2, d3):
            self.assertNoResult(d)
        self.runner.finish()
        for d in (d1, d2, d3):
            self.assertIsNone(self.successResultOf(d))

    def test_lastCallForAnAddressWins(self):
        self.access.allow(ip("10.0.0.1"))
        self.access.deny(ip("10.0.0.1"))
        self.clock.advance(0)
        self.assertEqual(self.runner.scripts, [
            "add element inet mnigs clients4 { 10.0.0.1 }\n"
            "delete element inet mnigs clients4 { 10.0.0.1 }\n"])

    def test_runsAreSerialised(self):
        first = self.access.allow(ip("10.0.0.1"))
        self.clock.advance(0)
        second = self.access.allow(ip("10.0.0.2"))
        self.clock.advance(0)
        self.assertEqual(len(self.runner.scripts), 1)  # waits for the first run
        self.runner.finish()
        self.successResultOf(first)
        self.assertEqual(len(self.runner.scripts), 2)
        self.runner.finish()
        self.successResultOf(second)

    def test_callsDuringARunGoTogetherInTheNextRun(self):
        first = self.access.allow(ip("10.0.0.1"))
        self.clock.advance(0)
        later = [self.access.allow(ip("10.0.0.2"))]
        self.clock.advance(0)
        later.append(self.access.deny(ip("10.0.0.3")))
        self.clock.advance(0)
        self.assertEqual(len(self.runner.scripts), 1)
        self.runner.finish()
        self.successResultOf(first)
        self.assertEqual(self.runner.scripts[1],
                         "add element inet mnigs clients4 { 10.0.0.2, 10.0.0.3 }\n"
                         "delete element inet mnigs clients4 { 10.0.0.3 }\n")
        for d in later:
            self.assertNoResult(d)
        self.runner.finish()
        for d in later:
            self.successResultOf(d)
        self.clock.advance(0)
        self.assertEqual(len(self.runner.scripts), 2)

    def test_installWhileARunGoesStillComesAfterEarlierCalls(self):
        self.access.allow(ip("10.0.0.1"))
        self.clock.advance(0)
        denied = self.access.deny(ip("10.0.0.2"))
        installed = self.access.install([ip("10.0.0.9")])
        allowed = self.access.allow(ip("10.0.0.3"))
        self.runner.finish()
        self.assertEqual(self.runner.scripts[1],
                         "add element inet mnigs clients4 { 10.0.0.2 }\n"
                         "delete element inet mnigs clients4 { 10.0.0.2 }\n")
        self.runner.finish()
        self.successResultOf(denied)
        self.assertTrue(self.runner.scripts[2].startswith("table inet mnigs {}"))
        self.runner.finish()
        self.successResultOf(installed)
        self.assertEqual(self.runner.scripts[3], "add element inet mnigs clients4 { 10.0.0.3 }\n")
        self.runner.finish()
        self.successResultOf(allowed)

    def test_failureReachesEveryCallerOfTheBatch(self):
        d1 = self.access.allow(ip("10.0.0.1"))
        d2 = self.access.deny(ip("10.0.0.2"))
        self.clock.advance(0)
        self.runner.finish(NftError(["nft"], 1, "No such file or directory"))
        self.failureResultOf(d1, NftError)
        self.failureResultOf(d2, NftError)
        d3 = self.access.allow(ip("10.0.0.3"))  # the next batch is unaffected
        self.clock.advance(0)
        self.runner.finish()
        self.successResultOf(d3)

    def test_installGoesAfterChangesAskedBeforeIt(self):
        denied = self.access.deny(ip("10.0.0.1"))
        installed = self.access.install([ip("10.0.0.1")])
        self.assertEqual(len(self.runner.scripts), 1)
        self.assertTrue(self.runner.scripts[0].startswith("add element"))
        self.runner.finish()
        self.successResultOf(denied)
        self.assertTrue(self.runner.scripts[1].startswith("table inet mnigs {}"))
        self.runner.finish()
        self.successResultOf(installed)
        self.clock.advance(0)
        self.assertEqual(len(self.runner.scripts), 2)

    def test_remove(self):
        d = self.access.remove()
        self.assertEqual(self.runner.scripts, [removeScript("mnigs")])
        self.runner.finish()
        self.successResultOf(d)

    def test_rejectsStrings(self):
        self.assertRaises(TypeError, self.access.allow, "10.0.0.1")
        self.assertRaises(TypeError, self.access.deny, "10.0.0.1; flush ruleset")


class NftRunnerTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.spawner = FakeSpawner()

    def test_applyFeedsTheScriptOnStdin(self):
        runner = NftRunner(self.clock, netns="mnigs-x", spawn=self.spawner)
        d = runner.apply("flush ruleset\n")
        call = self.spawner.spawned[0]
        self.assertEqual(call["args"], ["ip", "netns", "exec", "mnigs-x", "nft", "-f", "-"])
        self.assertEqual(call["process"].written, [b"flush ruleset\n"])
        call["process"].end()
        self.assertIsNone(self.successResultOf(d))

    def test_applyFailureCarriesStderr(self):
        runner = NftRunner(self.clock, spawn=self.spawner)
        d = runner.apply("bogus\n")
        self.spawner.last.output(b"Error: syntax error\n", fd=2)
        self.spawner.last.end(code=1)
        error = self.failureResultOf(d, NftError).value
        self.assertEqual(error.stderr, "Error: syntax error\n")
        self.assertEqual(error.exitCode, 1)
        self.assertIn("syntax error", str(error))

    def test_listJSON(self):
        runner = NftRunner(self.clock, nft="/usr/sbin/nft", spawn=self.spawner)
        d = runner.listJSON(["set", "inet", "mnigs", "clients4"])
        self.assertEqual(self.spawner.spawned[0]["args"],
                         ["/usr/sbin/nft", "-j", "list", "set", "inet", "mnigs", "clients4"])
        self.spawner.last.output(b'{"nftables": []}')
        self.spawner.last.end()
        self.assertEqual(self.successResultOf(d), {"nftables": []})
