"""
L{mnigs.methods.pool.AddressPool} against a plain scan, and the WireGuard
method's allocation indexes (lowest free address, keys in use, leftovers of
registrations that never reached the book).
"""

import ipaddress

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mnigs import protocol
from mnigs.methods.pool import AddressPool
from mnigs.methods.wireguard import WireGuardGateway
from mnigs.server.leases import LeaseBook
from mnigs.wireguard.uapi import generatePrivateKey, publicKey

net = ipaddress.ip_network


def lowestFree(network, used):
    hosts = network.hosts()
    next(hosts)  # the gateway's
    for address in hosts:
        if address not in used:
            return address
    return None


class AddressPoolTests(SynchronousTestCase):
    def test_gatewayTakesTheFirstHost(self):
        pool = AddressPool(net("100.64.0.0/30"))
        self.assertEqual(pool.gateway, ipaddress.ip_address("100.64.0.1"))
        self.assertEqual(pool.take("a"), ipaddress.ip_address("100.64.0.2"))
        e = self.assertRaises(protocol.RPCError, pool.take, "b")
        self.assertEqual(e.code, protocol.GATEWAY_FULL)

    def test_reservedBeyondTheMarkLeavesTheGapFree(self):
        pool = AddressPool(net("100.64.0.0/24"))
        pool.reserve(ipaddress.ip_address("100.64.0.5"), "old")
        pool.reserve(ipaddress.ip_address("10.9.9.9"), "outside")  # pool changed since
        self.assertEqual([str(pool.take(n)) for n in "abcd"],
                         ["100.64.0.2", "100.64.0.3", "100.64.0.4", "100.64.0.6"])

    def test_releaseOnlyByTheOwner(self):
        pool = AddressPool(net("100.64.0.0/24"))
        a = pool.take("a")
        pool.release(a, "b")
        self.assertEqual(pool.owner(a), "a")
        pool.release(a, "a")
        self.assertIsNone(pool.owner(a))
        self.assertEqual(pool.take("c"), a)

    @settings(derandomize=True, max_examples=200, deadline=None)
    @given(st.lists(st.tuples(st.sampled_from(["take", "release", "reserve"]),
                              st.integers(0, 40)), max_size=120))
    def test_alwaysTheLowestFree(self, operations):
        network = net("100.64.0.0/26")
        pool = AddressPool(network)
        used = {}
        for op, n in operations:
            if op == "take":
                expected = lowestFree(network, used)
                if expected is None:
                    self.assertRaises(protocol.RPCError, pool.take, n)
                else:
                    self.assertEqual(pool.take(n), expected)
                    used[expected] = n
            elif op == "release" and used:
                address = sorted(used)[n % len(used)]
                pool.release(address, used.pop(address))
            elif op == "reserve":
                address = network.network_address + 2 + n
                if address not in used:
                    pool.reserve(address, n)
                    used[address] = n
        self.assertEqual(len(pool), len(used))


class WireGuardAllocationTests(SynchronousTestCase):
    def setUp(self):
        self.method = WireGuardGateway(None, None, publicKey(generatePrivateKey()),
                                       net("100.64.0.0/29"), 51820)
        self.book = LeaseBook(100, 600)

    def register(self, clientId, key=None):
        lease = self.book.draft(clientId, "", "wireguard", "10.0.0.9",
                                {"public_key": key or publicKey(generatePrivateKey())}, 0)
        lease.config = self.method.allocate(lease, self.book.live("wireguard"), "10.0.0.1")
        self.book.add(lease)
        return lease

    def test_addressesAndKeys(self):
        a, b = self.register("a"), self.register("b")
        self.assertEqual((a.config["address"], b.config["address"]),
                         ("100.64.0.2/32", "100.64.0.3/32"))
        e = self.assertRaises(protocol.RPCError, self.register, "c", a.params["public_key"])
        self.assertEqual(e.code, protocol.METHOD_UNAVAILABLE)
        e = self.assertRaises(protocol.RPCError, self.register, "c", self.method.publicKey)
        self.assertEqual(e.code, protocol.METHOD_UNAVAILABLE)
        self.book.remove(a)
        self.method._release(a)
        again = self.register("c", a.params["public_key"])
        self.assertEqual(again.config["address"], "100.64.0.2/32")

    def test_leftoversOfFailedRegistrationsHeal(self):
        """
        An allocation whose lease never reached the book (or was dropped
        without a revoke) neither blocks its key nor fills the pool.
        """
        key = publicKey(generatePrivateKey())
        ghost = self.book.draft("ghost", "", "wireguard", "10.0.0.9", {"public_key": key}, 0)
        self.method.allocate(ghost, [], "10.0.0.1")  # never added to the book
        self.assertEqual(self.register("a", key).config["address"], "100.64.0.3/32")
        # A /29 has 5 client addresses; one is the ghost's.
        for n in range(4):
            self.register(f"c{n}")
        self.assertEqual(len(self.book), 5)
        e = self.assertRaises(protocol.RPCError, self.register, "full")
        self.assertEqual(e.code, protocol.GATEWAY_FULL)

    def test_restoredLeasesAreIndexed(self):
        a = self.register("a")
        method = WireGuardGateway(None, None, self.method.publicKey, net("100.64.0.0/29"), 51820)
        method._rebuild(self.book.live("wireguard"))  # what start() does
        self.method = method
        e = self.assertRaises(protocol.RPCError, self.register, "b", a.params["public_key"])
        self.assertEqual(e.code, protocol.METHOD_UNAVAILABLE)
        self.assertEqual(self.register("b").config["address"], "100.64.0.3/32")


class TakeOrRecountTests(SynchronousTestCase):
    def test_recountsOnceWhenFull(self):
        pool = AddressPool(ipaddress.ip_network("10.0.0.0/29"))  # 5 client addresses
        for n in range(5):
            pool.take(f"leftover{n}")
        recounts = []

        def recount():
            recounts.append(True)
            pool.reset()
            pool.reserve(ipaddress.ip_address("10.0.0.2"), "live")

        self.assertEqual(str(pool.takeOrRecount("new", recount, "Test")), "10.0.0.3")
        self.assertEqual(len(recounts), 1)
        for n in range(3):
            pool.take(f"more{n}")
        e = self.assertRaises(protocol.RPCError, pool.takeOrRecount, "late", lambda: None, "Test")
        self.assertEqual((e.code, e.message), (protocol.GATEWAY_FULL, "Test address pool exhausted"))
