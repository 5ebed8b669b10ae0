"""
The gateway's mesh addresses as its offer lists them
(L{mnigs.server.meshaddresses}): pure selection, and its refresher with a
Clock.
"""

import ipaddress

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mnigs.server.meshaddresses import MeshAddresses, offerAddresses
from mnigs.system.pyroute import NetlinkError

LINKS = [
    ("lo", "127.0.0.1/8"), ("lo", "::1/128"), ("lo", "10.251.0.3/32"),
    ("m1", "10.99.2.2/24"), ("m1", "fe80::1/64"), ("m2", "10.99.3.1/24"),
    ("up0", "192.0.2.2/24"), ("wg-mnigs", "100.64.0.1/24"), ("m2", "fd00::3/64"),
]


def links(pairs=LINKS):
    return [(name, ipaddress.ip_interface(text)) for name, text in pairs]


class OfferAddressesTests(SynchronousTestCase):
    def test_nodeAddressesFirstThenLinksWithoutUplinkTunnelsLoopbackOrLinkLocal(self):
        self.assertEqual(offerAddresses(links(), {"up0", "wg-mnigs"}),
                         ["10.251.0.3", "10.99.2.2", "10.99.3.1", "fd00::3"])

    def test_aChosenListenAddressIsAllThatIsListed(self):
        self.assertEqual(offerAddresses(links(), {"up0"}, listen=["10.99.2.2"]), ["10.99.2.2"])
        self.assertEqual(offerAddresses(links(), {"up0", "wg-mnigs"}, listen=["::"])[:1],
                         ["10.251.0.3"])

    def test_bounded(self):
        many = [("m1", f"10.99.{i}.1/24") for i in range(40)]
        self.assertEqual(len(offerAddresses(links(many), set())), 16)


class MeshAddressesTests(SynchronousTestCase):
    def test_readAtMostEveryRefreshAndKeptOverAFailedRead(self):
        clock = Clock()
        reads = []

        def read():
            reads.append(clock.seconds())
            if len(reads) == 2:
                raise NetlinkError(16, "netlink busy")
            return links()

        addresses = MeshAddresses(clock, read, lambda: ["up0", "wg-mnigs"], refresh=5)
        first = addresses()
        clock.advance(4)
        self.assertEqual(addresses(), first)
        self.assertEqual(len(reads), 1)
        clock.advance(1)
        self.assertEqual(addresses(), first)  # the failed read keeps the last list
        self.assertEqual(len(reads), 2)
