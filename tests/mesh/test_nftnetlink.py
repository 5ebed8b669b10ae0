"""
L{mnigs.system.nftnetlink} against the kernel's nf_tables in a network namespace
of its own: the same outcomes as C{nft -f} scripts, in one transaction,
concatenated elements (address . interface . MAC) included.
"""

import ipaddress

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from mnigs.system.admission import Admission
from mnigs.system.nft import NftAccess, NftError, NftRunner
from mnigs.system.nftnetlink import NftSetElements
from tests.mesh._netns import makeNamespace, requireRoot
from tests.mesh.test_nft import MAC, link, members, tunnel

ip = ipaddress.ip_address


def address(text):
    return (f"clients{ip(text).version}", (ip(text),))


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
        return members(listing)

    @defer.inlineCallbacks
    def test_changesAsTheScriptWouldMakeThem(self):
        yield self.access.install([tunnel("10.0.0.1"), tunnel("2001:db8::1")])
        self.elements.apply("mnigs", {address("10.0.0.2"): True, address("2001:db8::2"): True,
                                      address("10.0.0.1"): False, address("10.0.0.99"): False,
                                      address("2001:db8::1"): False,
                                      ("tunnel4", tunnel("10.0.0.2", "a" * 15).key()): True,
                                      ("tunnel4", tunnel("10.0.0.1").key()): False,
                                      ("link4", link("10.99.0.2").key()): True,
                                      ("link6", link("2001:db8::7", "m1").key()): True})
        self.assertEqual((yield self.members("clients4")), {("10.0.0.2",)})
        self.assertEqual((yield self.members("clients6")), {("2001:db8::2",)})
        self.assertEqual((yield self.members("tunnel4")), {("10.0.0.2", "a" * 15)})
        self.assertEqual((yield self.members("link4")), {("10.99.0.2", "m0", MAC)})
        self.assertEqual((yield self.members("link6")), {("2001:db8::7", "m1", MAC)})
        self.elements.apply("mnigs", {address("10.0.0.2"): True})  # again: no error
        self.assertEqual((yield self.members("clients4")), {("10.0.0.2",)})

    @defer.inlineCallbacks
    def test_accessListGoesOverNetlink(self):
        yield self.access.install([tunnel("10.0.0.1")])
        calls = [self.access.allow(tunnel("10.0.0.2")), self.access.allow(link("2001:db8::2")),
                 self.access.deny(tunnel("10.0.0.1")), self.access.deny(tunnel("10.0.0.99"))]
        yield defer.gatherResults(calls)
        self.assertIsNotNone(self.elements._socket, "the changes did not use netlink")
        self.assertEqual((yield self.members("clients4")), {("10.0.0.2",)})
        self.assertEqual((yield self.members("tunnel4")), {("10.0.0.2", "wg0")})
        self.assertEqual((yield self.members("clients6")), {("2001:db8::2",)})
        self.assertEqual((yield self.members("link6")), {("2001:db8::2", "m0", MAC)})
        yield self.access.remove()

    @defer.inlineCallbacks
    def test_thousandsOfElementsInOneTransaction(self):
        yield self.access.install([])
        many = [Admission(ip("100.64.0.0") + n, "wg0") for n in range(2500)]
        yield defer.gatherResults([self.access.allow(a) for a in many])
        self.assertEqual(len((yield self.members("tunnel4"))), 2500)
        yield defer.gatherResults([self.access.deny(a) for a in many[:2400]])
        self.assertEqual((yield self.members("clients4")),
                         {(str(a.address),) for a in many[2400:]})

    @defer.inlineCallbacks
    def test_refusedTransactionChangesNothing(self):
        # A table with no clients6 set: the IPv6 half of the batch fails, and
        # with it the IPv4 half.
        yield self.runner.apply("table inet partial {\n\tset clients4 {\n\t\ttype ipv4_addr\n\t}\n}\n")
        error = self.assertRaises(NftError, self.elements.apply, "partial",
                                  {address("10.0.0.5"): True, address("2001:db8::5"): True})
        self.assertIn("ENOENT", error.stderr)
        self.assertEqual((yield self.members("clients4", table="partial")), set())
        # The socket is still good.
        self.elements.apply("partial", {address("10.0.0.6"): True})
        self.assertEqual((yield self.members("clients4", table="partial")), {("10.0.0.6",)})

    def test_missingTableFails(self):
        error = self.assertRaises(NftError, self.elements.apply, "nosuch",
                                  {address("10.0.0.1"): True})
        self.assertIn("ENOENT", error.stderr)
