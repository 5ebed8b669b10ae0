"""
L{mnigs.system.netlink} against a real network namespace of its own.
"""

import ipaddress

from twisted.trial.unittest import SynchronousTestCase

from mnigs.system.netlink import Netlink, Route
from tests.mesh._netns import deleteNamespace, makeNamespace, nsrun, requireRoot, veth

ip = ipaddress.ip_address
net = ipaddress.ip_network


class NetlinkTests(SynchronousTestCase):
    def setUp(self):
        requireRoot(self)
        self.ns = makeNamespace(self)
        self.other = makeNamespace(self)
        veth(self.ns, "va", "10.9.0.1/24", self.other, "vb", "10.9.0.2/24")
        nsrun(self.ns, ["ip", "-6", "addr", "add", "2001:db8:9::1/64", "dev", "va"])
        self.nl = Netlink(self.ns)
        self.addCleanup(self.nl.close)

    def test_links(self):
        self.assertIsInstance(self.nl.linkIndex("va"), int)
        self.assertIsNone(self.nl.linkIndex("nope"))
        self.assertEqual(self.nl.linkKind("va"), "veth")
        self.assertEqual(self.nl.linkKind("lo"), "")
        self.assertIsNone(self.nl.linkKind("nope"))

    def test_linkIsUpForVethLoopbackAndTun(self):
        self.assertTrue(self.nl.linkIsUp("va"))  # operstate UP
        self.assertTrue(self.nl.linkIsUp("lo"))  # operstate UNKNOWN, up
        self.assertFalse(self.nl.linkIsUp("nope"))
        nsrun(self.ns, ["ip", "link", "set", "va", "down"])
        self.assertFalse(self.nl.linkIsUp("va"))
        # A tun device nobody holds open has no carrier: down although "up".
        nsrun(self.ns, ["ip", "tuntap", "add", "dev", "tn0", "mode", "tun"])
        self.nl.setLinkUp("tn0")
        self.assertFalse(self.nl.linkIsUp("tn0"))

    def test_addressesAndConnectedInterface(self):
        self.nl.addAddress("va", "10.9.5.1/24")
        self.nl.addAddress("va", ipaddress.ip_interface("10.9.5.1/24"))  # again: fine
        nsrun(self.ns, ["ip", "addr", "add", "10.8.0.1", "peer", "10.8.0.2/32", "dev", "va"])
        addrs = self.nl.addresses("va")
        for expected in ("10.9.0.1/24", "10.9.5.1/24", "2001:db8:9::1/64", "10.8.0.1/32"):
            self.assertIn(ipaddress.ip_interface(expected), addrs)
        self.assertEqual(self.nl.connectedInterface("10.9.0.77"), "va")
        self.assertEqual(self.nl.connectedInterface(ip("2001:db8:9::5")), "va")
        self.assertIsNone(self.nl.connectedInterface("10.8.0.2"))  # /32: not a prefix
        self.assertIsNone(self.nl.connectedInterface("192.0.2.1"))
        self.assertIn(ip("127.0.0.1"), self.nl.localAddresses())
        self.assertIn(ip("10.9.5.1"), self.nl.localAddresses())
        self.assertIn(ip("2001:db8:9::1"), self.nl.localAddresses())

    def test_routes(self):
        self.assertFalse(self.nl.hasDefaultRoute())
        self.assertIsNone(self.nl.defaultRouteVia())
        nsrun(self.ns, ["ip", "route", "add", "default", "via", "10.9.0.2", "proto", "static",
                        "metric", "20"])
        nsrun(self.ns, ["ip", "route", "add", "default", "via", "10.9.0.3", "metric", "10",
                        "proto", "static", "table", "main"])
        nsrun(self.ns, ["ip", "route", "add", "10.50.0.0/16", "via", "10.9.0.2", "proto",
                        "42", "metric", "7", "table", "1000"])
        nsrun(self.ns, ["ip", "-6", "route", "add", "default", "via", "2001:db8:9::2",
                        "table", "300"])
        self.assertTrue(self.nl.hasDefaultRoute())
        self.assertEqual(self.nl.defaultRouteVia(),
                         Route(net("0.0.0.0/0"), 10, 4, "va", ip("10.9.0.3"), 254))
        self.assertFalse(self.nl.hasDefaultRoute(family=6))
        self.assertTrue(self.nl.hasDefaultRoute(family=6, table=300))
        self.assertEqual(self.nl.routes(table=1000),
                         [Route(net("10.50.0.0/16"), 7, 42, "va", ip("10.9.0.2"), 1000)])
        babel = self.nl.routes(proto=42)
        self.assertEqual([r.dst for r in babel], [net("10.50.0.0/16")])
        main = self.nl.routes(table=254)
        self.assertIn(Route(net("10.9.0.0/24"), 0, 2, "va", None, 254), main)
        both = self.nl.routes(family=None)
        self.assertIn(net("::/0"), [r.dst for r in both])
        self.assertIn(net("10.50.0.0/16"), [r.dst for r in both])
        # local and broadcast routes are not unicast routes
        self.assertNotIn(net("10.9.0.1/32"), [r.dst for r in self.nl.routes()])

    def test_deleteLinkIgnoresMissing(self):
        self.nl.deleteLink("va")
        self.assertIsNone(self.nl.linkIndex("va"))
        self.nl.deleteLink("va")

    def test_missingNamespaceIsNotCreated(self):
        self.addCleanup(deleteNamespace, "mnigs-surely-missing")
        self.assertRaises(OSError, Netlink, "mnigs-surely-missing")
