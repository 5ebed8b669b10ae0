"""
L{mnigs.server.hoproutes}'s pure parts: which interfaces, which routes
(the netlink I/O: tests.mesh.test_reply_by_arrival).
"""

import ipaddress
import socket

from twisted.trial.unittest import SynchronousTestCase

from mnigs.server.hoproutes import HopRoute, chooseInterfaces, hopRoutes, hopTable
from mnigs.server.prevhops import Hop

A = bytes.fromhex("020000000001")


def ip(text):
    return ipaddress.ip_address(text)


class ChooseInterfacesTests(SynchronousTestCase):
    LINKS = {"lo": False, "eth0": True, "m0": True, "br0": True, "tun0": False, "wg0": False}

    def test_configuredOnesThatExist(self):
        self.assertEqual(chooseInterfaces(["m0", "tun0", "gone"], self.LINKS, ["eth0"]),
                         {"m0": True, "tun0": False})

    def test_noneConfiguredEveryEthernetLinkButTheExcluded(self):
        self.assertEqual(chooseInterfaces([], self.LINKS, ["eth0", "wg0"]),
                         {"m0": True, "br0": True})


class HopRoutesTests(SynchronousTestCase):
    def test_tablesFollowTheIds(self):
        self.assertEqual([hopTable(8160, 1), hopTable(8160, 255)], [8160, 8414])

    def test_ipv4AndIpv6Neighbour(self):
        hop = Hop(3, "m0", A, ip("10.0.0.2"), ip("fe80::2"))
        self.assertEqual(hopRoutes(8160, hop), [
            HopRoute(socket.AF_INET, 8162, "m0", ip("10.0.0.2")),
            HopRoute(socket.AF_INET6, 8162, "m0", ip("fe80::2"))])

    def test_ipv4OnlyNeighbourHasNoIpv6Route(self):
        hop = Hop(1, "m0", A, ip("10.0.0.2"), None)
        self.assertEqual([r.family for r in hopRoutes(8160, hop)], [socket.AF_INET])

    def test_interfaceWithoutLinkAddresses(self):
        self.assertEqual(hopRoutes(8160, Hop(1, "tun0", None, None, None)), [
            HopRoute(socket.AF_INET, 8160, "tun0", None),
            HopRoute(socket.AF_INET6, 8160, "tun0", None)])

    def test_keywords(self):
        self.assertEqual(HopRoute(socket.AF_INET, 8160, "m0", ip("10.0.0.2")).keywords(7), {
            "family": socket.AF_INET, "dst": "0.0.0.0/0", "table": 8160, "oif": 7,
            "gateway": "10.0.0.2", "flags": 4})
        self.assertEqual(HopRoute(socket.AF_INET, 8160, "m0", ip("fe80::2")).keywords(7), {
            "family": socket.AF_INET, "dst": "0.0.0.0/0", "table": 8160, "oif": 7,
            "via": {"family": socket.AF_INET6, "addr": "fe80::2"}})
        self.assertEqual(HopRoute(socket.AF_INET6, 8160, "m0", ip("fe80::2")).keywords(7), {
            "family": socket.AF_INET6, "dst": "::/0", "table": 8160, "oif": 7,
            "gateway": "fe80::2"})
        self.assertEqual(HopRoute(socket.AF_INET6, 8160, "tun0", None).keywords(9), {
            "family": socket.AF_INET6, "dst": "::/0", "table": 8160, "oif": 9})
