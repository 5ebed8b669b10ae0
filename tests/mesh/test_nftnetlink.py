"""
L{mnigs.nftnetlink} against the kernel's nf_tables in a network namespace
of its own: the same outcomes as C{nft -f} scripts, in one transaction.
"""

import ipaddress

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from mnigs.nft import NftAccess, NftError, NftRunner
from mnigs.nftnetlink import NftSetElements
from tests.mesh._netns import makeNamespace, requireRoot

ip = ipaddress.ip_address


class NftSetElementsRealTests(TestCase):
    timeout = 60

    def setUp(self):
        requireRoot(self, "nft")
        from twisted.internet import reactor
        self.ns = makeNamespace(self)
        self.runner = NftRunner(reactor, netns=self.ns)
        self.elements = NftSetElements(netns=self.ns)
        self.addCleanup(self.elements.close)
        self.access = NftAccess(reactor, self.runner, "uplink0", elements=self.elements)

    @defer.inlineCallbacks
    def members(self, setName, table="mnigs"):
        listing = yield self.runner.listJSON(["set", "inet", table, setName])
        [found] = [item["set"] for item in listing["nftables"] if "set" in item]
        return {ip(e) for e in found.get("elem", [])}

    @defer.inlineCallbacks
    def test_changesAsTheScriptWouldMakeThem(self):
        yield self.access.install([ip("10.0.0.1"), ip("2001:db8::1")])
        self.elements.apply("mnigs", {ip("10.0.0.2"): True, ip("2001:db8::2"): True,
                                      ip("10.0.0.1"): False, ip("10.0.0.99"): False,
                                      ip("2001:db8::1"): False})
        self.assertEqual((yield self.members("clients4")), {ip("10.0.0.2")})
        self.assertEqual((yield self.members("clients6")), {ip("2001:db8::2")})
        self.elements.apply("mnigs", {ip("10.0.0.2"): True})  # again: no error
        self.assertEqual((yield self.members("clients4")), {ip("10.0.0.2")})

    @defer.inlineCallbacks
    def test_accessListGoesOverNetlink(self):
        yield self.access.install([ip("10.0.0.1")])
        calls = [self.access.allow(ip("10.0.0.2")), self.access.allow(ip("2001:db8::2")),
                 self.access.deny(ip("10.0.0.1")), self.access.deny(ip("10.0.0.99"))]
        yield defer.gatherResults(calls)
        self.assertIsNotNone(self.elements._socket, "the changes did not use netlink")
        self.assertEqual((yield self.members("clients4")), {ip("10.0.0.2")})
        self.assertEqual((yield self.members("clients6")), {ip("2001:db8::2")})
        yield self.access.remove()

    @defer.inlineCallbacks
    def test_thousandsOfElementsInOneTransaction(self):
        yield self.access.install([])
        many = [ip("100.64.0.0") + n for n in range(2500)]
        self.elements.apply("mnigs", {a: True for a in many})
        self.assertEqual(len((yield self.members("clients4"))), 2500)
        self.elements.apply("mnigs", {a: False for a in many[:2400]})
        self.assertEqual((yield self.members("clients4")), set(many[2400:]))

    @defer.inlineCallbacks
    def test_refusedTransactionChangesNothing(self):
        # A table with no clients6 set: the IPv6 half of the batch fails, and
        # with it the IPv4 half.
        yield self.runner.apply("table inet partial {\n\tset clients4 {\n\t\ttype ipv4_addr\n\t}\n}\n")
        error = self.assertRaises(NftError, self.elements.apply, "partial",
                                  {ip("10.0.0.5"): True, ip("2001:db8::5"): True})
        self.assertIn("ENOENT", error.stderr)
        self.assertEqual((yield self.members("clients4", table="partial")), set())
        # The socket is still good.
        self.elements.apply("partial", {ip("10.0.0.6"): True})
        self.assertEqual((yield self.members("clients4", table="partial")), {ip("10.0.0.6")})

    def test_missingTableFails(self):
        error = self.assertRaises(NftError, self.elements.apply, "nosuch", {ip("10.0.0.1"): True})
        self.assertIn("ENOENT", error.stderr)
