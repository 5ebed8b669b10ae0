"""
Fair shares on a mesh of strangers: address groups (an IPv6 /64 is one
address), the rate limiter's least-recently-used table, the per-address
lease cap, WireGuard leases that never shake hands ending early, and
hooks run with a concurrency bound.
"""

import base64

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mnigs import protocol
from mnigs.daemon.hooks import Hooks
from mnigs.methods.wireguard import WireGuardGateway
from mnigs.server.leases import LeaseBook
from mnigs.server.leasestore import GroupCommit
from mnigs.server.ratelimit import RateLimiter, addressGroup
from mnigs.server.registry import Registry
from tests.unit.fakeprocess import FakeSpawner
from tests.unit.test_gatemethods import FakeDevice as StartableDevice
from tests.unit.test_gateway import Hooks as RecordingHooks
from tests.unit.test_gateway import MemoryStore, RecordingMethod, request

KEY_A = base64.b64encode(bytes([1]) * 32).decode()
KEY_B = base64.b64encode(bytes([2]) * 32).decode()
GATEWAY_KEY = base64.b64encode(bytes([3]) * 32).decode()


class AddressGroupTests(SynchronousTestCase):
    def test_ipv4IsItself(self):
        self.assertEqual(addressGroup("10.0.0.1"), "10.0.0.1")

    def test_ipv6IsItsSlashSixtyFour(self):
        self.assertEqual(addressGroup("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64")
        self.assertEqual(addressGroup("2001:db8:1:2::9"), addressGroup("2001:db8:1:2:ffff::1"))
        self.assertNotEqual(addressGroup("2001:db8:1:2::9"), addressGroup("2001:db8:1:3::9"))
        self.assertEqual(addressGroup("fe80::1%m0"), "fe80::/64")

    def test_mappedIPv4IsTheIPv4Address(self):
        self.assertEqual(addressGroup("::ffff:10.0.0.1"), "10.0.0.1")

    def test_unparsableIsItself(self):
        self.assertEqual(addressGroup("unix"), "unix")


class RateLimiterTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()

    def assertLimited(self, limiter, host):
        e = self.assertRaises(protocol.RPCError, limiter.check, host)
        self.assertEqual(e.code, protocol.RATE_LIMITED)

    def test_burstThenRate(self):
        limiter = RateLimiter(self.clock, rate=1.0, burst=2)
        limiter.check("10.0.0.1")
        limiter.check("10.0.0.1")
        self.assertLimited(limiter, "10.0.0.1")
        limiter.check("10.0.0.2")
        self.clock.advance(1)
        limiter.check("10.0.0.1")

    def test_ipv6AddressesOfASlashSixtyFourShareABucket(self):
        limiter = RateLimiter(self.clock, rate=1.0, burst=2)
        limiter.check("2001:db8::1")
        limiter.check("2001:db8::2")
        self.assertLimited(limiter, "2001:db8::ffff:3")
        limiter.check("2001:db8:0:1::1")

    def test_leastRecentlyUsedIsForgottenFirst(self):
        """
        A full table forgets the group it heard from longest ago, not all
        of them: a busy group keeps its (empty) bucket however many other
        addresses call.
        """
        limiter = RateLimiter(self.clock, rate=0.001, burst=2, maxHosts=3)
        limiter.check("10.0.0.1")
        limiter.check("10.0.0.1")
        for n in range(2, 100):
            limiter.check(f"10.0.1.{n}")
            self.assertLimited(limiter, "10.0.0.1")  # also keeps it recent
            self.assertLessEqual(len(limiter.buckets), 3)
        self.assertEqual(list(limiter.buckets), ["10.0.1.98", "10.0.1.99", "10.0.0.1"])

    def test_defaultBurstIsTwoSecondsOfRateAndAtLeastOne(self):
        self.assertEqual(RateLimiter(self.clock, rate=5.0).burst, 10.0)
        self.assertEqual(RateLimiter(self.clock, rate=0.1).burst, 1.0)

    def test_aLongPauseRefillsOnlyToTheBurst(self):
        limiter = RateLimiter(self.clock, rate=1.0, burst=3)
        for _ in range(3):
            limiter.check("10.0.0.1")
        self.clock.advance(3600)
        for _ in range(3):
            limiter.check("10.0.0.1")
        self.assertLimited(limiter, "10.0.0.1")

    def test_aRefusedCallSpendsNothing(self):
        """Hammering while limited does not push the next token further away."""
        limiter = RateLimiter(self.clock, rate=1.0, burst=1)
        limiter.check("10.0.0.1")
        for _ in range(3):
            self.clock.advance(0.25)
            self.assertLimited(limiter, "10.0.0.1")
        self.clock.advance(0.25)  # a second since the token was spent
        limiter.check("10.0.0.1")

    def test_zeroRateIsNoLimit(self):
        limiter = RateLimiter(self.clock, rate=0)
        for n in range(100):
            limiter.check("10.0.0.1")
        self.assertEqual(len(limiter.buckets), 0)


class LeaseCapTests(SynchronousTestCase):
    """
    The lease book's per-address cap: 1006 beyond it, the lease a new one
    replaces does not count, and a released lease frees its share.
    """

    def setUp(self):
        self.book = LeaseBook(maxClients=100, leaseSeconds=60, maxPerAddress=2)

    def add(self, clientId, host, method="fake"):
        lease = self.book.draft(clientId, "", method, host, {}, 0)
        self.book.add(lease)
        return lease

    def assertCapped(self, clientId, host, method="fake"):
        e = self.assertRaises(protocol.RPCError, self.book.draft, clientId, "", method, host, {}, 0)
        self.assertEqual(e.code, protocol.RATE_LIMITED)
        self.assertIn("at most 2 per address", e.message)

    def test_capPerAddress(self):
        first = self.add("a", "10.0.0.1")
        self.add("b", "10.0.0.1")
        self.assertCapped("c", "10.0.0.1")
        self.add("c", "10.0.0.2")
        self.book.remove(first)
        self.add("d", "10.0.0.1")
        self.assertCapped("e", "10.0.0.1")

    def test_sameClientAndMethodReplacesAndDoesNotCount(self):
        self.add("a", "10.0.0.1")
        self.add("b", "10.0.0.1")
        self.book.draft("a", "", "fake", "10.0.0.1", {}, 0)  # a's new grant, not a third
        self.assertCapped("a", "10.0.0.1", method="other")

    def test_ipv6SlashSixtyFourIsOneAddress(self):
        self.add("a", "2001:db8::1")
        self.add("b", "2001:db8::2")
        self.assertCapped("c", "2001:db8::ffff")
        self.add("c", "2001:db8:0:1::1")

    def test_zeroIsNoCap(self):
        self.book.maxPerAddress = 0
        for n in range(10):
            self.add(f"c{n}", "10.0.0.1")
        self.assertEqual(len(self.book), 10)

    def test_restoredLeasesCount(self):
        self.add("a", "10.0.0.1")
        self.add("b", "10.0.0.1")
        again = LeaseBook(maxClients=100, leaseSeconds=60, maxPerAddress=2)
        again.restore(self.book.records(), 0, {"fake"})
        self.assertRaises(protocol.RPCError, again.draft, "c", "", "fake", "10.0.0.1", {}, 0)


class RegistryFairnessTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.events = []
        self.method = RecordingMethod(self.events)
        self.store = MemoryStore(self.events)
        self.book = LeaseBook(maxClients=3, leaseSeconds=60, maxPerAddress=2)
        self.registry = Registry(self.clock, self.book, {"fake": self.method},
                                 GroupCommit(self.clock, self.store, self.book.records),
                                 RecordingHooks(self.events))

    def register(self, clientId, host):
        d = self.registry.register(request(clientId), host, "10.0.0.254")
        self.clock.advance(0)
        return d

    def test_oneAddressCannotFillTheGateway(self):
        """
        One address registering under ever new client ids gets its share
        and then 1006, and the gateway still has room for others.
        """
        for n in range(2):
            self.successResultOf(self.register(f"flood{n}", "10.0.0.66"))
        for n in range(2, 10):
            f = self.failureResultOf(self.register(f"flood{n}", "10.0.0.66"), protocol.RPCError)
            self.assertEqual(f.value.code, protocol.RATE_LIMITED)
        self.assertEqual(len(self.book), 2)
        self.successResultOf(self.register("legit", "10.0.0.1"))

    def test_sweepEndsLeasesWhoseTunnelNeverCameUp(self):
        answer = self.successResultOf(self.register("c1", "10.0.0.1"))
        self.successResultOf(self.register("c2", "10.0.0.2"))
        lease = self.book.byId[answer["lease"]["id"]]
        self.method.neverConnected = [lease]
        del self.events[:]
        d = self.registry.sweep()
        self.clock.advance(0)  # the group commit
        self.assertEqual(self.successResultOf(d), [lease])
        self.assertEqual([e[1] for e in self.events if e[0] == "revoke"], ["c1"])
        self.assertIn(("hook", "release", "fake", "10.0.0.1"), self.events)
        self.assertEqual([l.clientId for l in self.book.live()], ["c2"])

    def test_sweepLeavesAReplacedLeaseAlone(self):
        answer = self.successResultOf(self.register("c1", "10.0.0.1"))
        stale = self.book.byId[answer["lease"]["id"]]
        self.book.remove(stale)
        self.method.neverConnected = [stale]
        self.assertEqual(self.successResultOf(self.registry.sweep()), [])


class FakeDevice(StartableDevice):
    ifname = "wg-test"

    def __init__(self):
        self.handshakes = {}
        self.gets = 0
        self.failing = False

    def setPeers(self, add=(), remove=()):
        return defer.succeed(None)

    def get(self):
        self.gets += 1
        if self.failing:
            return defer.fail(OSError("no such device"))
        return defer.succeed({"peers": [{"public_key": key, "last_handshake_time_sec": t}
                                        for key, t in self.handshakes.items()]})


class FakeAccess:
    def allow(self, address):
        return defer.succeed(None)

    def deny(self, address):
        return defer.succeed(None)


class WireGuardHandshakeTimeoutTests(SynchronousTestCase):
    """
    A WireGuard lease whose peer has not shaken hands within
    C{handshakeTimeout} of its grant is what C{unconfirmed} answers; one
    handshake confirms it for good.
    """

    def setUp(self):
        import ipaddress

        self.clock = Clock()
        self.device = FakeDevice()
        self.method = WireGuardGateway(self.device, FakeAccess(), GATEWAY_KEY,
                                       ipaddress.ip_network("100.64.0.0/24"), 51820,
                                       clock=self.clock, handshakeTimeout=60)
        self.book = LeaseBook(maxClients=10, leaseSeconds=600)

    def grant(self, clientId, key):
        lease = self.book.draft(clientId, "", "wireguard", "10.0.0.1", {"public_key": key}, 0)
        lease.config = self.method.allocate(lease, self.book.others("wireguard"), "10.0.0.254")
        self.book.add(lease)
        self.successResultOf(self.method.grant(lease))
        return lease

    def test_noHandshakeWithinTheTimeout(self):
        silent = self.grant("silent", KEY_A)
        talking = self.grant("talking", KEY_B)
        self.clock.advance(59)
        self.assertEqual(self.successResultOf(self.method.unconfirmed()), [])
        self.assertEqual(self.device.gets, 0)  # nothing due: the device is not asked
        self.device.handshakes[KEY_B] = 1234
        self.clock.advance(1)
        self.assertEqual(self.successResultOf(self.method.unconfirmed()), [silent])
        self.device.handshakes.clear()  # a later rekey gap does not matter
        self.assertEqual(self.successResultOf(self.method.unconfirmed()), [silent])
        self.assertNotIn(talking.id, self.method._unshaken)

    def test_revokedLeaseIsForgotten(self):
        lease = self.grant("silent", KEY_A)
        self.successResultOf(self.method.revoke(lease))
        self.clock.advance(100)
        self.assertEqual(self.successResultOf(self.method.unconfirmed()), [])

    def test_restoredLeasesAreNotJudged(self):
        lease = self.book.draft("old", "", "wireguard", "10.0.0.1", {"public_key": KEY_A}, 0)
        lease.config = {"address": "100.64.0.9/32"}
        self.successResultOf(self.method.start([lease]))
        self.clock.advance(100)
        self.assertEqual(self.successResultOf(self.method.unconfirmed()), [])

    def test_zeroTimeoutNeverEndsALease(self):
        self.method.handshakeTimeout = 0
        self.grant("silent", KEY_A)
        self.clock.advance(10_000)
        self.assertEqual(self.successResultOf(self.method.unconfirmed()), [])

    def test_unreadableDeviceEndsNothing(self):
        self.grant("silent", KEY_A)
        self.clock.advance(100)
        self.device.failing = True
        self.assertEqual(self.successResultOf(self.method.unconfirmed()), [])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)


class FakeProcessReactor:
    def __init__(self):
        self.spawnProcess = FakeSpawner()


class HookConcurrencyTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = FakeProcessReactor()
        self.hooks = Hooks(self.reactor, {"register": "/bin/true"}, maxRunning=2)

    def spawnedArgs(self):
        return [s["args"][2] for s in self.reactor.spawnProcess.spawned]

    def test_excessWaitsItsTurnInOrder(self):
        for n in range(5):
            self.hooks.run("register", f"lease{n}")
        self.assertEqual(self.spawnedArgs(), ["lease0", "lease1"])
        self.reactor.spawnProcess.spawned[0]["process"].end(0)
        self.assertEqual(self.spawnedArgs(), ["lease0", "lease1", "lease2"])
        self.reactor.spawnProcess.spawned[1]["process"].end(1)  # a failing hook ends too
        self.assertEqual(self.spawnedArgs(), ["lease0", "lease1", "lease2", "lease3"])
        for n in (2, 3):
            self.reactor.spawnProcess.spawned[n]["process"].end(0)
        self.assertEqual(self.spawnedArgs(), [f"lease{n}" for n in range(5)])
        self.reactor.spawnProcess.spawned[4]["process"].end(0)
        self.assertEqual(self.hooks.running, 0)
        self.assertEqual(len(self.hooks.waiting), 0)

    def test_aHookThatCannotStartFreesItsTurn(self):
        self.reactor.spawnProcess.fail = OSError("exec format error")
        for n in range(3):
            self.hooks.run("register", f"lease{n}")
        self.assertEqual(self.hooks.running, 0)
        self.reactor.spawnProcess.fail = None
        self.hooks.run("register", "lease3")
        self.assertEqual(self.spawnedArgs(), ["lease3"])

    def test_eventsWithoutAHookAreNotQueued(self):
        self.hooks.run("release", "x")
        self.assertEqual(len(self.hooks.waiting), 0)
