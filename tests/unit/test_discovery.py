"""
Discovery: nearest first, never more calls in flight than the bound, the
node's own addresses skipped, one result per gateway, hostile offers
dropped.  The RPC client is a fake that hands out Deferreds the test fires.
"""

import ipaddress

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mnigs.routing.candidates import Candidate
from mnigs.client.discovery import Discovery
from mnigs.rpc.client import RPCTimeout
from tests.unit.test_protocol import makeOffer


class FakeRPC:
    def __init__(self):
        self.calls = []
        self.inFlight = 0
        self.maxInFlight = 0

    def call(self, host, port, method, params, timeout=None):
        d = defer.Deferred()
        self.inFlight += 1
        self.maxInFlight = max(self.maxInFlight, self.inFlight)

        def done(result):
            self.inFlight -= 1
            return result

        d.addBoth(done)
        self.calls.append((host, d))
        return d


def candidates(n, start=1):
    return [Candidate(ipaddress.ip_address(f"10.0.{i // 250}.{i % 250 + 1}"), float(i), "test")
            for i in range(start, start + n)]


class DiscoveryTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.rpc = FakeRPC()
        self.discovery = Discovery(self.clock, self.rpc, concurrency=4, timeout=1.0,
                                   ownAddresses=lambda: {"10.0.0.3"})

    def test_nearestFirstWithinTheBound(self):
        cands = list(reversed(candidates(10)))
        d = self.discovery.scan(cands)
        self.assertEqual([h for h, _ in self.rpc.calls], ["10.0.0.2", "10.0.0.4", "10.0.0.5", "10.0.0.6"])
        while any(not call.called for _, call in self.rpc.calls):
            for host, call in list(self.rpc.calls):
                if not call.called:
                    call.errback(RPCTimeout("silent"))
                    break
        self.assertEqual(self.rpc.maxInFlight, 4)
        self.assertEqual([h for h, _ in self.rpc.calls],
                         [f"10.0.0.{i}" for i in (2, 4, 5, 6, 7, 8, 9, 10, 11)])
        self.assertEqual(self.successResultOf(d), [])

    def test_oneResultPerGatewayNearestAddress(self):
        offer, key = makeOffer()
        other, _ = makeOffer()
        found = []
        d = self.discovery.scan(candidates(4), onFound=found.append)
        calls = dict(self.rpc.calls)
        calls["10.0.0.4"].callback(offer)   # farther address of gateway 1
        calls["10.0.0.2"].callback(offer)   # nearer address of gateway 1
        for host, call in self.rpc.calls:
            if not call.called:
                call.callback(other)
        result = self.successResultOf(d)
        self.assertEqual([(s.host, s.offer.gatewayId) for s in result],
                         [("10.0.0.2", offer["gateway"]["id"]), ("10.0.0.5", other["gateway"]["id"])])
        self.assertEqual(len(found), 3)

    def test_hostileOfferDropped(self):
        offer, _ = makeOffer()
        offer["terms"]["clients"] = -5  # and the signature no longer matches
        d = self.discovery.scan(candidates(1))
        self.rpc.calls[0][1].callback(offer)
        self.assertEqual(self.successResultOf(d), [])
        self.assertIn("10.0.0.2", self.discovery.rejected)

    def test_junkAnswersNeverFail(self):
        d = self.discovery.scan(candidates(4))
        for (host, call), junk in zip(self.rpc.calls, [None, "x", [1, 2], {"protocol": 1}]):
            call.callback(junk)
        self.assertEqual(self.successResultOf(d), [])

    def test_cancelStopsEverything(self):
        d = self.discovery.scan(candidates(10))
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertEqual(self.rpc.inFlight, 0)

    def test_maxCandidates(self):
        self.discovery.maxCandidates = 2
        self.assertEqual([str(c.address) for c in self.discovery.order(candidates(10))],
                         ["10.0.0.2", "10.0.0.4"])


class SettleTests(SynchronousTestCase):
    """
    An offline client's scan ends C{settle} seconds after the first usable
    offer instead of waiting out silent candidates.
    """

    def setUp(self):
        self.clock = Clock()
        self.rpc = FakeRPC()
        self.discovery = Discovery(self.clock, self.rpc, concurrency=16, timeout=2.0)

    def test_endsSettleAfterTheFirstUsableAnswer(self):
        offer, _ = makeOffer()
        other, _ = makeOffer()
        d = self.discovery.scan(candidates(4), settle=0.25)
        calls = dict(self.rpc.calls)
        self.clock.advance(0.01)
        calls["10.0.0.3"].callback(offer)
        self.clock.advance(0.1)
        calls["10.0.0.4"].callback(other)  # within the settle time: kept
        self.assertNoResult(d)
        self.clock.advance(0.15)
        result = self.successResultOf(d)
        self.assertEqual([s.host for s in result], ["10.0.0.3", "10.0.0.4"])
        # The silent candidates were let go, not waited for.
        self.assertTrue(all(call.called for call in calls.values()))
        self.assertEqual(self.rpc.inFlight, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_unusableOffersDoNotStartTheClock(self):
        offer, _ = makeOffer()
        usableOne, _ = makeOffer()
        d = self.discovery.scan(candidates(3), settle=0.25,
                                usable=lambda seen: seen.offer.raw is usableOne)
        calls = dict(self.rpc.calls)
        calls["10.0.0.2"].callback(offer)
        self.clock.advance(1)
        self.assertNoResult(d)
        calls["10.0.0.3"].callback(usableOne)
        self.clock.advance(0.25)
        self.assertEqual(len(self.successResultOf(d)), 2)

    def test_allAnsweredBeforeTheSettleTime(self):
        offer, _ = makeOffer()
        d = self.discovery.scan(candidates(2), settle=0.25)
        for host, call in self.rpc.calls:
            call.callback(offer)
        self.assertEqual(len(self.successResultOf(d)), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancelWhileSettling(self):
        offer, _ = makeOffer()
        d = self.discovery.scan(candidates(2), settle=0.25)
        self.rpc.calls[0][1].callback(offer)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class RecentGatewayTests(SynchronousTestCase):
    """
    Gateways met lately are asked again every C{retry} seconds during an
    offline scan, listed by a route source or not.
    """

    def setUp(self):
        self.clock = Clock()
        self.rpc = FakeRPC()
        self.discovery = Discovery(self.clock, self.rpc, concurrency=16, timeout=2.0,
                                   ownAddresses=lambda: {"10.0.0.9"})

    def hotCalls(self, host):
        return [call for h, call in self.rpc.calls if h == host]

    def test_askedAgainUntilItAnswers(self):
        offer, _ = makeOffer()
        d = self.discovery.scan([], settle=0.25, hot=[("10.9.9.9", 8150)], retry=0.5)
        [first] = self.hotCalls("10.9.9.9")
        first.errback(ConnectionRefusedError())  # no route yet: fails at once
        self.assertNoResult(d)
        self.clock.advance(0.5)
        second = self.hotCalls("10.9.9.9")[1]
        self.clock.advance(0.5)
        third = self.hotCalls("10.9.9.9")[2]
        self.assertFalse(second.called)  # still out: a second try does not wait for it
        third.callback(offer)
        self.assertTrue(second.called)  # cancelled once one answered
        self.clock.advance(0.25)
        [seen] = self.successResultOf(d)
        self.assertEqual((seen.host, seen.distance), ("10.9.9.9", float("inf")))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_aListedCandidateKeepsItsDistanceAndOwnAddressesAreSkipped(self):
        offer, _ = makeOffer()
        d = self.discovery.scan(candidates(1, start=9),
                                hot=[("10.0.0.9", 8150), ("10.0.0.10", 8150)])
        self.assertEqual(self.hotCalls("10.0.0.9"), [])  # our own address: never asked
        listed, hot = self.hotCalls("10.0.0.10")  # once as a candidate, once as recent
        listed.errback(RPCTimeout("silent"))
        hot.callback(offer)
        [seen] = self.successResultOf(d)
        self.assertEqual(seen.distance, 9.0)

    def test_givesUpAtTheTimeout(self):
        d = self.discovery.scan([], hot=[("10.9.9.9", 8150)], retry=0.5)
        for _ in range(4):
            self.clock.advance(0.5)
        calls = self.hotCalls("10.9.9.9")
        self.assertEqual(len(calls), 4)  # at 0, 0.5, 1.0 and 1.5 s
        self.assertNoResult(d)
        for call in calls:
            if not call.called:
                call.errback(RPCTimeout("silent"))
        self.assertEqual(self.successResultOf(d), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancelledScanCancelsTheRetries(self):
        d = self.discovery.scan([], hot=[("10.9.9.9", 8150)], retry=0.5)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertTrue(all(call.called for call in self.hotCalls("10.9.9.9")))
        self.assertEqual(self.clock.getDelayedCalls(), [])


class WatchTests(SynchronousTestCase):
    """
    A waiting client's watch of the gateways met lately: asked every
    C{every} seconds for as long as it takes, the first usable answer
    ends it.
    """

    def setUp(self):
        self.clock = Clock()
        self.rpc = FakeRPC()
        self.discovery = Discovery(self.clock, self.rpc, timeout=2.0)

    def test_askedUntilAUsableAnswer(self):
        unusable, _ = makeOffer()
        usable, _ = makeOffer()
        d = self.discovery.watch([("10.9.9.1", 8150), ("10.9.9.2", 8150)],
                                 usable=lambda seen: seen.offer.raw is usable, every=0.5)
        for _ in range(10):  # 5 s: far past any single call's timeout
            for host, call in self.rpc.calls:
                if not call.called:
                    call.errback(ConnectionRefusedError())
            self.clock.advance(0.5)
        self.assertNoResult(d)
        self.assertEqual(len(self.rpc.calls), 22)  # both, at 0, 0.5, ... 5.0 s
        calls = [call for host, call in self.rpc.calls if not call.called]
        calls[0].callback(unusable)  # 10.9.9.1 answers, but nothing usable: go on
        self.assertNoResult(d)
        calls[1].callback(usable)
        self.assertIs(self.successResultOf(d).offer.raw, usable)
        self.assertTrue(all(call.called for host, call in self.rpc.calls))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancelStopsAsking(self):
        d = self.discovery.watch([("10.9.9.1", 8150)], usable=lambda seen: True)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertTrue(all(call.called for host, call in self.rpc.calls))

    def test_nothingToWatchNeverFires(self):
        d = self.discovery.watch([], usable=lambda seen: True)
        self.clock.advance(60)
        self.assertNoResult(d)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)


class OtherAddressesTests(SynchronousTestCase):
    def test_theGatewaysOtherAddressesAreKept(self):
        """
        One result per gateway, the nearest address, and its other
        addresses nearest first: a refused lease at the nearest (a node
        replaying the offer) moves the client to the next of them.
        """
        clock, rpc = Clock(), FakeRPC()
        discovery = Discovery(clock, rpc, concurrency=8, timeout=1.0)
        offer, _ = makeOffer()
        d = discovery.scan(candidates(3))
        for host, call in rpc.calls:
            call.callback(offer)
        [seen] = self.successResultOf(d)
        self.assertEqual((seen.host, [o.host for o in seen.others]),
                         ("10.0.0.2", ["10.0.0.3", "10.0.0.4"]))
