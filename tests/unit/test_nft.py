"""
Tests for L{mnigs.system.nft} and L{mnigs.system.admission}: script generation, batching
and ordering with a fake runner and a clock.
"""

import ipaddress

from hypothesis import given, settings, strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mnigs.system.admission import Admission
from mnigs.interfaces import IAccessList
from mnigs.system.nft import (
    SET_TYPES,
    NftAccess,
    NftError,
    NftRunner,
    changesScript,
    elementText,
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


def tunnel(address, interface="wg0"):
    return Admission(ip(address), interface)


def link(address, interface="m0", mac="02:00:00:00:00:01"):
    return Admission(ip(address), interface, mac)


class ScriptTests(SynchronousTestCase):
    def test_tableReplacesAnyOldTableInOneTransaction(self):
        script = tableScript("mnigs", "eth0", [tunnel("10.0.0.2"), tunnel("2001:db8::1", "mo1"),
                                               tunnel("10.0.0.1"), link("10.99.0.2")])
        lines = script.splitlines()
        self.assertEqual(lines[:3], ["table inet mnigs {}", "delete table inet mnigs",
                                     "table inet mnigs {"])
        sets = {}
        for name in SET_TYPES:
            start = lines.index(f"\tset {name} {{")
            sets[name] = lines[start + 1:lines.index("\t}", start)]
        self.assertEqual(sets, {
            "clients4": ["\t\ttype ipv4_addr", "\t\tcounter",
                         "\t\telements = { 10.0.0.1, 10.0.0.2, 10.99.0.2 }"],
            "clients6": ["\t\ttype ipv6_addr", "\t\tcounter", "\t\telements = { 2001:db8::1 }"],
            "tunnel4": ["\t\ttype ipv4_addr . ifname",
                        '\t\telements = { 10.0.0.1 . "wg0", 10.0.0.2 . "wg0" }'],
            "tunnel6": ["\t\ttype ipv6_addr . ifname", '\t\telements = { 2001:db8::1 . "mo1" }'],
            "link4": ["\t\ttype ipv4_addr . ifname . ether_addr", "\t\tcounter",
                      '\t\telements = { 10.99.0.2 . "m0" . 02:00:00:00:00:01 }'],
            "link6": ["\t\ttype ipv6_addr . ifname . ether_addr", "\t\tcounter"],
        })
        forward = [l.strip() for l in lines[lines.index("\tchain forward {") + 2:][:9]]
        self.assertEqual(forward, [
            'oifname "eth0" ip saddr . iifname @tunnel4 accept',
            'oifname "eth0" ip6 saddr . iifname @tunnel6 accept',
            'oifname "eth0" ip saddr . iifname . ether saddr @link4 accept',
            'oifname "eth0" ip6 saddr . iifname . ether saddr @link6 accept',
            'oifname "eth0" drop',
            'iifname "eth0" ct state established,related ip daddr @clients4 accept',
            'iifname "eth0" ct state established,related ip6 daddr @clients6 accept',
            'iifname "eth0" drop',
            '}',
        ])
        self.assertIn("\t\ttype filter hook forward priority filter; policy accept;", lines)
        self.assertIn("\t\ttype nat hook postrouting priority srcnat; policy accept;", lines)
        self.assertIn('\t\toifname "eth0" ip saddr @clients4 masquerade', lines)
        self.assertIn('\t\toifname "eth0" ip6 saddr @clients6 masquerade', lines)
        self.assertNotIn("prerouting", script)

    def test_strictReversePathFilteringOnTheTunnels(self):
        lines = tableScript("mnigs", "eth0", [], strictInterfaces=["wg0", "tap_x", "wg0"]
                            ).splitlines()
        chain = lines.index("\tchain prerouting {")
        self.assertEqual(lines[chain + 1:chain + 4], [
            "\t\ttype filter hook prerouting priority raw; policy accept;",
            '\t\tiifname { "tap_x", "wg0" } fib saddr . iif oif missing drop',
            "\t}"])

    def test_badInterfaceNamesAreRefused(self):
        for name in ('wg0" drop', "x" * 16, "", "a b", "wg0\n"):
            self.assertRaises(ValueError, tableScript, "mnigs", "eth0", [], strictInterfaces=[name])
            self.assertRaises(ValueError, tableScript, "mnigs", name, [])
            self.assertRaises(ValueError, Admission, ip("10.0.0.1"), name)

    def test_tcpMSSClampedOnTheUplinkBothWays(self):
        # Issue 15: an Internet host's MSS fits the tunnel or mesh link the
        # route to the client takes; the kernel only ever lowers it.
        lines = [line.strip() for line in tableScript("mnigs", "eth0", []).splitlines()]
        start = lines.index("chain clamp {")
        self.assertEqual(lines[start + 1:start + 4], [
            "type filter hook forward priority mangle; policy accept;",
            'iifname "eth0" tcp flags syn tcp option maxseg size set rt mtu',
            'oifname "eth0" tcp flags syn tcp option maxseg size set rt mtu'])

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

    def test_onlyAdmissionsAreAccepted(self):
        self.assertRaises(TypeError, tableScript, "mnigs", "eth0", [ip("10.0.0.1")])
        self.assertRaises(TypeError, tableScript, "mnigs", "eth0", ["10.0.0.1"])
        self.assertRaises(TypeError, Admission, "10.0.0.1", "wg0")
        self.assertRaises(TypeError, Admission, ipaddress.ip_network("10.0.0.0/24"), "wg0")
        self.assertRaises(ValueError, Admission, ip("fe80::1%eth0"), "wg0")

    def test_linkAddressesAreCheckedAndCanonical(self):
        self.assertEqual(link("10.0.0.1", mac="02:AB:cd:00:00:01").linkAddress,
                         "02:ab:cd:00:00:01")
        for bad in ("02:00:00:00:00", "02-00-00-00-00-01", "02:00:00:00:00:01 ", "ff:ff:ff:ff:ff:ff",
                    "01:00:5e:00:00:01", "00:00:00:00:00:00", '02:00:00:00:00:01" }', "zz:00:00:00:00:01"):
            self.assertRaises(ValueError, link, "10.0.0.1", mac=bad)
        self.assertRaises(TypeError, link, "10.0.0.1", mac=b"\x02\0\0\0\0\1")

    def test_denyIsAddThenDelete(self):
        script = changesScript("t", {("tunnel4", (ip("10.0.0.2"), "wg0")): True,
                                     ("tunnel4", (ip("10.0.0.3"), "wg0")): False,
                                     ("clients4", (ip("10.0.0.3"),)): False,
                                     ("link6", link("2001:db8::9").key()): False})
        self.assertEqual(script.splitlines(), [
            "add element inet t clients4 { 10.0.0.3 }",
            "delete element inet t clients4 { 10.0.0.3 }",
            'add element inet t tunnel4 { 10.0.0.2 . "wg0", 10.0.0.3 . "wg0" }',
            'delete element inet t tunnel4 { 10.0.0.3 . "wg0" }',
            'add element inet t link6 { 2001:db8::9 . "m0" . 02:00:00:00:00:01 }',
            'delete element inet t link6 { 2001:db8::9 . "m0" . 02:00:00:00:00:01 }',
        ])

    def test_changesOnlyForTheGatesSets(self):
        self.assertRaises(ValueError, changesScript, "t", {("other", (ip("10.0.0.1"),)): True})
        self.assertRaises(TypeError, changesScript, "t", {("clients4", ("10.0.0.1",)): True})

    def test_removeNeverFailsOnAMissingTable(self):
        self.assertEqual(removeScript("mnigs"),
                         "table inet mnigs {}\ndelete table inet mnigs\n")


admissions = st.builds(
    Admission, st.ip_addresses(),
    st.sampled_from(["wg0", "m0", "m1"]),
    st.none() | st.sampled_from(["02:00:00:00:00:01", "02:00:00:00:00:02"]))


def parseChanges(script):
    """(set name -> added keys, set name -> deleted keys) of a changes script."""
    added, deleted = {}, {}
    for line in script.splitlines():
        verb, _, _, _, setName, rest = line.split(" ", 5)
        keys = {tuple(part.strip().strip('"') for part in element.split(" . "))
                for element in rest.strip("{} ").split(", ")}
        (added if verb == "add" else deleted).setdefault(setName, set()).update(keys)
    return added, deleted


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
        d1 = self.access.allow(tunnel("10.0.0.1"))
        d2 = self.access.deny(tunnel("10.0.0.2"))
        d3 = self.access.allow(link("2001:db8::1"))
        self.assertEqual(self.runner.scripts, [])
        self.clock.advance(0)
        self.assertEqual(self.runner.scripts, [
            "add element inet mnigs clients4 { 10.0.0.1, 10.0.0.2 }\n"
            "delete element inet mnigs clients4 { 10.0.0.2 }\n"
            "add element inet mnigs clients6 { 2001:db8::1 }\n"
            'add element inet mnigs tunnel4 { 10.0.0.1 . "wg0", 10.0.0.2 . "wg0" }\n'
            'delete element inet mnigs tunnel4 { 10.0.0.2 . "wg0" }\n'
            'add element inet mnigs link6 { 2001:db8::1 . "m0" . 02:00:00:00:00:01 }\n'])
        for d in (d1, d2, d3):
            self.assertNoResult(d)
        self.runner.finish()
        for d in (d1, d2, d3):
            self.assertIsNone(self.successResultOf(d))

    def test_lastCallForAnAdmissionWins(self):
        self.access.allow(tunnel("10.0.0.1"))
        self.access.deny(tunnel("10.0.0.1"))
        self.clock.advance(0)
        self.assertEqual(self.runner.scripts, [
            "add element inet mnigs clients4 { 10.0.0.1 }\n"
            "delete element inet mnigs clients4 { 10.0.0.1 }\n"
            'add element inet mnigs tunnel4 { 10.0.0.1 . "wg0" }\n'
            'delete element inet mnigs tunnel4 { 10.0.0.1 . "wg0" }\n'])

    def test_anAddressStaysWhileAnyOfItsAdmissionsDoes(self):
        """
        A forward lease that moves to another MAC (its new admission
        allowed before the old one is denied) keeps its address in
        C{clients4}: replies and NAT do not stop for it.
        """
        old, new = link("10.0.0.1"), link("10.0.0.1", mac="02:00:00:00:00:02")
        self.access.allow(old)
        self.clock.advance(0)
        self.runner.finish()
        self.access.allow(new)
        self.access.deny(old)
        self.clock.advance(0)
        self.assertEqual(self.runner.scripts[1], (
            "add element inet mnigs clients4 { 10.0.0.1 }\n"
            'add element inet mnigs link4 { 10.0.0.1 . "m0" . 02:00:00:00:00:02, '
            '10.0.0.1 . "m0" . 02:00:00:00:00:01 }\n'
            'delete element inet mnigs link4 { 10.0.0.1 . "m0" . 02:00:00:00:00:01 }\n'))
        self.runner.finish()
        self.access.deny(new)
        self.clock.advance(0)
        self.assertIn("delete element inet mnigs clients4 { 10.0.0.1 }", self.runner.scripts[2])

    @settings(derandomize=True, max_examples=200, deadline=None)
    @given(st.lists(st.tuples(admissions, st.booleans()), max_size=20))
    def test_changesEndInTheLastWish(self, calls):
        """
        Whatever the calls in one turn, each touched admission's element is
        added, and deleted iff its last call was a deny; an address is
        deleted from C{clients} iff no admission of it was left allowed.
        """
        runner = FakeRunner()
        access = NftAccess(self.clock, runner, "eth0")
        wished = {}
        for admission, admit in calls:
            (access.allow if admit else access.deny)(admission)
            wished[admission] = admit
        self.clock.advance(0)
        if not calls:
            self.assertEqual(runner.scripts, [])
            return
        added, deleted = parseChanges(runner.scripts[0])
        for admission, admit in wished.items():
            name = ("tunnel" if admission.linkAddress is None else "link") + str(admission.family)
            key = tuple(elementText(admission.key()).replace('"', "").split(" . "))
            self.assertIn(key, added[name])
            self.assertEqual(key in deleted.get(name, set()), not admit)
        left = {a.address for a, admit in wished.items() if admit}
        for admission in wished:
            name = f"clients{admission.family}"
            self.assertIn((str(admission.address),), added[name])
            self.assertEqual((str(admission.address),) in deleted.get(name, set()),
                             admission.address not in left)

    def test_runsAreSerialised(self):
        first = self.access.allow(tunnel("10.0.0.1"))
        self.clock.advance(0)
        second = self.access.allow(tunnel("10.0.0.2"))
        self.clock.advance(0)
        self.assertEqual(len(self.runner.scripts), 1)  # waits for the first run
        self.runner.finish()
        self.successResultOf(first)
        self.assertEqual(len(self.runner.scripts), 2)
        self.runner.finish()
        self.successResultOf(second)

    def test_callsDuringARunGoTogetherInTheNextRun(self):
        first = self.access.allow(tunnel("10.0.0.1"))
        self.clock.advance(0)
        later = [self.access.allow(tunnel("10.0.0.2"))]
        self.clock.advance(0)
        later.append(self.access.deny(tunnel("10.0.0.3")))
        self.clock.advance(0)
        self.assertEqual(len(self.runner.scripts), 1)
        self.runner.finish()
        self.successResultOf(first)
        self.assertEqual(self.runner.scripts[1],
                         "add element inet mnigs clients4 { 10.0.0.2, 10.0.0.3 }\n"
                         "delete element inet mnigs clients4 { 10.0.0.3 }\n"
                         'add element inet mnigs tunnel4 { 10.0.0.2 . "wg0", 10.0.0.3 . "wg0" }\n'
                         'delete element inet mnigs tunnel4 { 10.0.0.3 . "wg0" }\n')
        for d in later:
            self.assertNoResult(d)
        self.runner.finish()
        for d in later:
            self.successResultOf(d)
        self.clock.advance(0)
        self.assertEqual(len(self.runner.scripts), 2)

    def test_installWhileARunGoesStillComesAfterEarlierCalls(self):
        self.access.allow(tunnel("10.0.0.1"))
        self.clock.advance(0)
        denied = self.access.deny(tunnel("10.0.0.2"))
        installed = self.access.install([tunnel("10.0.0.9")])
        allowed = self.access.allow(tunnel("10.0.0.3"))
        self.runner.finish()
        self.assertEqual(self.runner.scripts[1],
                         "add element inet mnigs clients4 { 10.0.0.2 }\n"
                         "delete element inet mnigs clients4 { 10.0.0.2 }\n"
                         'add element inet mnigs tunnel4 { 10.0.0.2 . "wg0" }\n'
                         'delete element inet mnigs tunnel4 { 10.0.0.2 . "wg0" }\n')
        self.runner.finish()
        self.successResultOf(denied)
        self.assertTrue(self.runner.scripts[2].startswith("table inet mnigs {}"))
        self.runner.finish()
        self.successResultOf(installed)
        self.assertEqual(self.runner.scripts[3],
                         "add element inet mnigs clients4 { 10.0.0.3 }\n"
                         'add element inet mnigs tunnel4 { 10.0.0.3 . "wg0" }\n')
        self.runner.finish()
        self.successResultOf(allowed)

    def test_installReplacesWhatWasAdmitted(self):
        """
        After an install, an address is in C{clients} as the installed
        admissions say, not as earlier calls did.
        """
        self.access.allow(tunnel("10.0.0.1"))
        self.access.install([tunnel("10.0.0.1", "mo0")])
        self.runner.finish()
        self.runner.finish()
        self.access.deny(tunnel("10.0.0.1", "mo0"))
        self.clock.advance(0)
        self.assertIn("delete element inet mnigs clients4 { 10.0.0.1 }", self.runner.scripts[2])

    def test_failureReachesEveryCallerOfTheBatch(self):
        d1 = self.access.allow(tunnel("10.0.0.1"))
        d2 = self.access.deny(tunnel("10.0.0.2"))
        self.clock.advance(0)
        self.runner.finish(NftError(["nft"], 1, "No such file or directory"))
        self.failureResultOf(d1, NftError)
        self.failureResultOf(d2, NftError)
        d3 = self.access.allow(tunnel("10.0.0.3"))  # the next batch is unaffected
        self.clock.advance(0)
        self.runner.finish()
        self.successResultOf(d3)

    def test_installGoesAfterChangesAskedBeforeIt(self):
        denied = self.access.deny(tunnel("10.0.0.1"))
        installed = self.access.install([tunnel("10.0.0.1")], [51820], ["wg0"])
        self.assertEqual(len(self.runner.scripts), 1)
        self.assertTrue(self.runner.scripts[0].startswith("add element"))
        self.runner.finish()
        self.successResultOf(denied)
        self.assertEqual(self.runner.scripts[1],
                         tableScript("mnigs", "eth0", [tunnel("10.0.0.1")], [51820], ["wg0"]))
        self.runner.finish()
        self.successResultOf(installed)
        self.clock.advance(0)
        self.assertEqual(len(self.runner.scripts), 2)

    def test_remove(self):
        d = self.access.remove()
        self.assertEqual(self.runner.scripts, [removeScript("mnigs")])
        self.runner.finish()
        self.successResultOf(d)

    def test_rejectsAnythingButAdmissions(self):
        self.assertRaises(TypeError, self.access.allow, "10.0.0.1")
        self.assertRaises(TypeError, self.access.allow, ip("10.0.0.1"))
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
