"""
L{mnigs.server.poolroutes.PoolRouting} against a real network namespace of
its own: a pool's address is reached through the pool's interface even
when the main table has a more specific route elsewhere (what a mesh with
babeld's default redistribution gives a gateway).
"""

import ipaddress

from twisted.trial.unittest import SynchronousTestCase

from mnigs.system.pyroute import IPRoute
from mnigs.server.poolroutes import PoolRouting
from tests.mesh._netns import makeNamespace, nsrun, requireRoot, veth


class PoolRoutingTests(SynchronousTestCase):
    def setUp(self):
        requireRoot(self)
        self.ns = makeNamespace(self)
        other = makeNamespace(self)
        veth(self.ns, "mesh0", "10.9.0.1/24", other, "vb", "10.9.0.2/24")
        veth(self.ns, "tun0", "100.64.0.1/24", other, "vc", "100.64.9.9/32")
        # The mesh's /32 for a client's inner address.
        nsrun(self.ns, ["ip", "route", "add", "100.64.0.2/32", "via", "10.9.0.2"])
        self.routing = PoolRouting(8152, 8148, netns=self.ns)

    def leavesBy(self, address):
        with IPRoute(netns=self.ns) as ipr:
            [route] = ipr.route("get", dst=address)
            [link] = ipr.get_links(route.get_attr("RTA_OIF"))
            return link.get_attr("IFLA_IFNAME")

    def test_poolPinnedThenCleared(self):
        self.assertEqual(self.leavesBy("100.64.0.2"), "mesh0")
        self.routing.install([(ipaddress.ip_network("100.64.0.0/24"), "tun0"),
                              (ipaddress.ip_network("100.65.0.0/24"), "missing0")])
        self.assertEqual(self.leavesBy("100.64.0.2"), "tun0")
        self.assertEqual(self.leavesBy("10.9.0.2"), "mesh0")  # the mesh stays the mesh
        self.assertEqual(self.routing.describe(), [{"pool": "100.64.0.0/24", "table": 8152}])
        # Installing again replaces, it does not add.
        self.routing.install([(ipaddress.ip_network("100.64.0.0/24"), "tun0")])
        self.assertEqual(len(self.routing.describe()), 1)
        self.routing.clear()
        self.assertEqual(self.routing.describe(), [])
        self.assertEqual(self.leavesBy("100.64.0.2"), "mesh0")
        self.routing.clear()  # nothing there: fine
