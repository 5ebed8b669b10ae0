"""
L{mnigs.server.prevhops}: the previous hops' ids, with a Clock.
"""

import ipaddress

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mnigs.server.prevhops import Hop, Neighbour, PreviousHops

A = bytes.fromhex("020000000001")
B = bytes.fromhex("020000000002")
C = bytes.fromhex("020000000003")


def ip(text):
    return ipaddress.ip_address(text)


def n(ifname, mac, address):
    return Neighbour(ifname, mac, None if address is None else ip(address))


class PreviousHopsTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.hops = PreviousHops(self.clock, maxHops=3, forgetAfter=100)

    def ids(self):
        return {(hop.ifname, hop.mac): hop.id for hop in self.hops.hops()}

    def test_eachLinkAddressGetsTheSmallestFreeId(self):
        self.assertTrue(self.hops.update([n("m1", B, "10.0.1.2"), n("m0", A, "10.0.0.2")]))
        self.assertEqual(self.ids(), {("m0", A): 1, ("m1", B): 2})
        self.assertEqual(self.hops.hops()[0], Hop(1, "m0", A, ip("10.0.0.2"), None))

    def test_sameMacOnTwoInterfacesIsTwoHops(self):
        self.hops.update([n("m0", A, "10.0.0.2"), n("m1", A, "10.0.1.2")])
        self.assertEqual(self.ids(), {("m0", A): 1, ("m1", A): 2})

    def test_unchangedTablesAreNoChange(self):
        self.hops.update([n("m0", A, "10.0.0.2")])
        self.clock.advance(10)
        self.assertFalse(self.hops.update([n("m0", A, "10.0.0.2")]))

    def test_aNewAddressIsAChangeKeepingTheId(self):
        self.hops.update([n("m0", A, "10.0.0.2")])
        self.assertTrue(self.hops.update([n("m0", A, "10.0.0.7")]))
        self.assertEqual(self.hops.hops(), (Hop(1, "m0", A, ip("10.0.0.7"), None),))

    def test_ipv4ViaIpv6WhenTheHopHasNoIpv4Address(self):
        self.hops.update([n("m0", A, "fe80::1"), n("m0", A, "2001:db8::1")])
        self.assertEqual(self.hops.hops(), (Hop(1, "m0", A, ip("fe80::1"), ip("fe80::1")),))

    def test_ipv4PreferredForIpv4LinkLocalForIpv6(self):
        self.hops.update([n("m0", A, "2001:db8::1"), n("m0", A, "10.0.0.9"),
                          n("m0", A, "fe80::9"), n("m0", A, "10.0.0.3")])
        self.assertEqual(self.hops.hops(), (Hop(1, "m0", A, ip("10.0.0.3"), ip("fe80::9")),))

    def test_interfaceWithoutLinkAddresses(self):
        self.hops.update([Neighbour("tun0", None, None)])
        self.assertEqual(self.hops.hops(), (Hop(1, "tun0", None, None, None),))

    def test_aHopOutOfTheTablesStaysUntilForgotten(self):
        self.hops.update([n("m0", A, "10.0.0.2"), n("m0", B, "10.0.0.3")])
        self.clock.advance(99)
        self.assertFalse(self.hops.update([n("m0", B, "10.0.0.3")]))
        self.assertEqual(self.ids(), {("m0", A): 1, ("m0", B): 2})
        self.clock.advance(1)
        self.assertTrue(self.hops.update([n("m0", B, "10.0.0.3")]))
        self.assertEqual(self.ids(), {("m0", B): 2})

    def test_aForgottenIdIsReusedLast(self):
        self.hops.update([n("m0", A, "10.0.0.2")])
        self.clock.advance(100)
        self.hops.update([n("m0", B, "10.0.0.3")])  # A forgotten: 1 goes to the back
        self.assertEqual(self.ids(), {("m0", B): 2})
        self.hops.update([n("m0", B, "10.0.0.3"), n("m0", C, "10.0.0.4")])
        self.assertEqual(self.ids(), {("m0", B): 2, ("m0", C): 3})
        self.hops.update([n("m0", B, "10.0.0.3"), n("m0", C, "10.0.0.4"), n("m0", A, "10.0.0.2")])
        self.assertEqual(self.ids(), {("m0", B): 2, ("m0", C): 3, ("m0", A): 1})

    def test_hopsBeyondTheIdSpaceAreLeftOut(self):
        self.hops.update([n("m0", mac, "10.0.0.2") for mac in (A, B, C)]
                         + [n("m1", A, "10.0.1.2")])
        self.assertEqual(sorted(self.ids().values()), [1, 2, 3])
        self.assertNotIn(("m1", A), self.ids())
        self.assertEqual(self.hops.leftOut, 1)

    def test_adoptKeepsAPreviousRunsId(self):
        self.hops.adopt(n("m0", B, "10.0.0.3"), 3)
        self.hops.adopt(n("m0", A, "10.0.0.2"), 3)  # taken: left to update
        self.hops.update([n("m0", A, "10.0.0.2"), n("m0", B, "10.0.0.3")])
        self.assertEqual(self.ids(), {("m0", A): 1, ("m0", B): 3})

    def test_maxHopsFitsTheMarkBits(self):
        self.assertRaises(ValueError, PreviousHops, self.clock, maxHops=256)
        self.assertRaises(ValueError, PreviousHops, self.clock, maxHops=0)
