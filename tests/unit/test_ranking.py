"""
Tests for L{mnigs.client.ranking}.
"""

import dataclasses
import math
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mnigs.client.history import GatewayQuality, QualityHistory
from mnigs.client.ranking import Policy, Ranked, Seen, SwitchPolicy, deduplicate, rank, score
from mnigs.protocol import Fee, Offer, knownMethods

NOW = 100_000.0
PROPERTIES = settings(derandomize=True, max_examples=300, deadline=None)


def offer(gid, available=True, maxClients=10, clients=0, fee=None, methods=("wireguard",), issuedAt=0):
    return Offer(
        gatewayId=gid, name=gid, available=available, maxClients=maxClients, clients=clients,
        leaseSeconds=600, fee=fee, bandwidthDown=None, bandwidthUp=None,
        methods=tuple({"type": m} for m in methods), issuedAt=issuedAt, raw={},
    )


def seen(gid, distance=100.0, rtt=0.05, host=None, port=8150, **kw):
    return Seen(offer(gid, **kw), host or f"10.0.0.{sum(map(ord, gid)) % 250}", port, distance, rtt)


def fee(amount="2.50", currency="EUR", period="month"):
    return Fee(Decimal(amount), currency, period, "iban:XX")


class History(dict):
    """
    The least a ranking needs: C{get(gid)}, here without side effects.
    """

    def get(self, gid):
        return super().get(gid) or GatewayQuality()


POLICY = Policy(methods=("wireguard", "openvpn", "forward"))


def ids(ranked):
    return [r.gatewayId for r in ranked]


def why(ranked, gid):
    [entry] = [r for r in ranked if r.gatewayId == gid]
    return entry.whyNot


class ScoreTests(SynchronousTestCase):
    def test_formulaAsDocumented(self):
        quality = GatewayQuality(sessions=3, failures=1, loss=0.25, lastFailure=NOW - 600)
        item = seen("g", distance=256, rtt=0.1, clients=5, maxClients=10, fee=fee())
        expected = 10 * 1 + 1 * 0.5 + 0.5 * 0.5 + 0.5 * 0.5 + 1 * (1 / 5 * math.exp(-1) + 0.25)
        self.assertAlmostEqual(score(item, POLICY, quality, NOW), expected)

    def test_missingRttCountsAsR0(self):
        self.assertEqual(
            score(seen("g", rtt=None), POLICY, GatewayQuality(), NOW),
            score(seen("g", rtt=POLICY.rttScale), POLICY, GatewayQuality(), NOW),
        )

    def test_unboundedInputsStayFinite(self):
        for distance, rtt in ((math.inf, math.inf), (math.nan, math.nan), (-5, -1)):
            value = score(seen("g", distance=distance, rtt=rtt), POLICY, GatewayQuality(), NOW)
            self.assertTrue(math.isfinite(value))
        self.assertEqual(score(seen("g", distance=math.inf, rtt=None), POLICY, GatewayQuality(), NOW), 1.25)

    def test_failuresFade(self):
        item = seen("g")
        fresh = score(item, POLICY, GatewayQuality(failures=4, lastFailure=NOW - 60), NOW)
        old = score(item, POLICY, GatewayQuality(failures=4, lastFailure=NOW - 6000), NOW)
        never = score(item, POLICY, GatewayQuality(), NOW)
        self.assertGreater(fresh, old)
        self.assertAlmostEqual(old, never, places=3)


class OrderTests(SynchronousTestCase):
    def test_freeBeforePaidEvenIfFar(self):
        ranked = rank([seen("paid", distance=1, fee=fee()), seen("free", distance=60000)],
                      dataclasses.replace(POLICY, acceptFees=True), History(), NOW)
        self.assertEqual(ids(ranked), ["free", "paid"])
        self.assertTrue(all(r.usable for r in ranked))

    def test_nearestFirst(self):
        self.assertEqual(ids(rank([seen("far", 500), seen("near", 50)], POLICY, History(), NOW)), ["near", "far"])

    def test_leastLoadedFirst(self):
        ranked = rank([seen("busy", clients=9), seen("idle", clients=1)], POLICY, History(), NOW)
        self.assertEqual(ids(ranked), ["idle", "busy"])

    def test_fastestFirst(self):
        ranked = rank([seen("slow", rtt=0.5), seen("quick", rtt=0.01)], POLICY, History(), NOW)
        self.assertEqual(ids(ranked), ["quick", "slow"])

    def test_historyDemotes(self):
        history = History(flaky=GatewayQuality(sessions=1, failures=5, lastFailure=NOW - 120),
                          lossy=GatewayQuality(loss=0.8))
        ranked = rank([seen("flaky"), seen("lossy"), seen("good")], POLICY, history, NOW)
        self.assertEqual(ids(ranked), ["good", "flaky", "lossy"])

    def test_tiesBrokenById(self):
        self.assertEqual(ids(rank([seen("b"), seen("c"), seen("a")], POLICY, History(), NOW)), ["a", "b", "c"])

    def test_unusableAfterUsable(self):
        ranked = rank([seen("down", distance=1, available=False), seen("up", distance=1000)], POLICY, History(), NOW)
        self.assertEqual([(r.gatewayId, r.usable) for r in ranked], [("up", True), ("down", False)])

    def test_worksWithQualityHistory(self):
        history = QualityHistory(Clock())
        history.get("bad").failed(NOW - 3600, "tunnel failed")
        ranked = rank([seen("bad"), seen("new")], POLICY, history, NOW)
        self.assertEqual(ids(ranked), ["new", "bad"])
        self.assertIn("new", history)


class MethodTests(SynchronousTestCase):
    def test_commonMethodsInClientOrder(self):
        policy = Policy(methods=("openvpn", "forward", "wireguard"))
        [ranked] = rank([seen("g", methods=("wireguard", "cjdns", "forward", "openvpn"))], policy, History(), NOW)
        self.assertEqual(ranked.methods, ("openvpn", "forward", "wireguard"))

    def test_forwardIncludedWhenOffered(self):
        [ranked] = rank([seen("g", methods=("forward",))], POLICY, History(), NOW)
        self.assertEqual((ranked.usable, ranked.methods), (True, ("forward",)))

    def test_noCommonMethod(self):
        [ranked] = rank([seen("g", methods=("cjdns", "softether"))], POLICY, History(), NOW)
        self.assertEqual((ranked.usable, ranked.whyNot, ranked.methods), (False, "no common method", ()))


class ExclusionTests(SynchronousTestCase):
    def check(self, item, policy=POLICY, expected=""):
        [ranked] = rank([item], policy, History(), NOW)
        self.assertEqual((ranked.usable, ranked.whyNot), (not expected, expected))

    def test_blocked(self):
        self.check(seen("g"), dataclasses.replace(POLICY, blocked=frozenset({"g"})), "blocked")

    def test_notPinned(self):
        self.check(seen("g"), dataclasses.replace(POLICY, pinned=frozenset({"other"})), "not pinned")
        self.check(seen("g"), dataclasses.replace(POLICY, pinned=frozenset({"g"})))

    def test_notAvailable(self):
        self.check(seen("g", available=False), expected="not available")

    def test_full(self):
        self.check(seen("g", clients=10, maxClients=10), expected="full (10/10 clients)")
        self.check(seen("g", clients=12, maxClients=10), expected="full (12/10 clients)")
        self.check(seen("g", clients=0, maxClients=0), expected="full (0/0 clients)")
        self.check(seen("g", clients=9, maxClients=10))

    def test_firstReasonWins(self):
        policy = dataclasses.replace(POLICY, blocked=frozenset({"g"}))
        self.check(seen("g", available=False, clients=10, methods=()), policy, "blocked")
        self.check(seen("g", available=False, clients=10, methods=()), expected="not available")

    def test_feesNotAccepted(self):
        self.check(seen("g", fee=fee("0.01")), expected="fee 0.01 EUR/month: fees not accepted")
        self.check(seen("g", fee=fee("0")), expected="fee 0 EUR/month: fees not accepted")

    def test_anyFeeWhenAcceptedWithoutMaximum(self):
        self.check(seen("g", fee=fee("99999")), dataclasses.replace(POLICY, acceptFees=True))

    def test_maxFeeCapsAmount(self):
        policy = dataclasses.replace(POLICY, acceptFees=True, maxFee=Decimal("2.50"))
        self.check(seen("g", fee=fee("2.50")), policy)
        self.check(seen("g", fee=fee("2.51")), policy, "fee 2.51 EUR/month: above 2.50")

    def test_maxFeeIgnoredWhenFeesRefused(self):
        policy = dataclasses.replace(POLICY, maxFee=Decimal("5"))
        self.check(seen("g", fee=fee("1")), policy, "fee 1 EUR/month: fees not accepted")

    def test_currencyMismatchRefused(self):
        policy = dataclasses.replace(POLICY, acceptFees=True, currency="EUR")
        self.check(seen("g", fee=fee(currency="USD")), policy, "fee 2.50 USD/month: not in EUR")
        self.check(seen("g", fee=fee(currency="eur")), policy)
        self.check(seen("g"), policy)

    def test_periodMismatchRefused(self):
        policy = dataclasses.replace(POLICY, acceptFees=True, period="month")
        self.check(seen("g", fee=fee(period="day")), policy, "fee 2.50 EUR/day: not per month")
        self.check(seen("g", fee=fee(period="Month")), policy)


class CooldownTests(SynchronousTestCase):
    def test_recentFailureRankedAfterTheOthersButUsable(self):
        history = History(a=GatewayQuality(failures=1, lastFailure=NOW - 10, lastFailureReason="registration refused"))
        ranked = rank([seen("a", distance=1), seen("b", distance=1000)], POLICY, history, NOW)
        self.assertEqual([(r.gatewayId, r.usable) for r in ranked], [("b", True), ("a", True)])
        self.assertEqual(ranked[1].cooling, "registration refused 10s ago; cooling down")
        self.assertEqual(why(ranked, "a"), "")

    def test_coolingStillBeforeTheUnusable(self):
        history = History(a=GatewayQuality(failures=1, lastFailure=NOW - 10))
        ranked = rank([seen("a"), seen("b", distance=1, available=False)], POLICY, history, NOW)
        self.assertEqual([(r.gatewayId, r.usable) for r in ranked], [("a", True), ("b", False)])

    def test_recentFailureUsableWhenNothingElse(self):
        history = History(a=GatewayQuality(failures=1, lastFailure=NOW - 10))
        ranked = rank([seen("a"), seen("b", available=False)], POLICY, history, NOW)
        self.assertEqual([(r.gatewayId, r.usable, r.whyNot, bool(r.cooling)) for r in ranked],
                         [("a", True, "", True), ("b", False, "not available", False)])

    def test_allCoolingAreUsableByScore(self):
        history = History(a=GatewayQuality(failures=1, lastFailure=NOW - 10),
                          b=GatewayQuality(failures=1, lastFailure=NOW - 20))
        ranked = rank([seen("a"), seen("b")], POLICY, history, NOW)
        self.assertEqual([(r.gatewayId, r.usable) for r in ranked], [("b", True), ("a", True)])

    def test_cooldownEnds(self):
        history = History(a=GatewayQuality(failures=1, lastFailure=NOW - 30))
        ranked = rank([seen("a"), seen("b", distance=1000)], POLICY, history, NOW)
        self.assertTrue(all(r.usable for r in ranked))

    def test_failureFarInTheFutureIgnored(self):
        history = History(a=GatewayQuality(failures=1, lastFailure=NOW + 86400))
        ranked = rank([seen("a"), seen("b")], POLICY, history, NOW)
        self.assertTrue(all(r.usable for r in ranked))

    def test_cooldownOfZeroNeverExcludes(self):
        history = History(a=GatewayQuality(failures=1, lastFailure=NOW))
        ranked = rank([seen("a"), seen("b")], dataclasses.replace(POLICY, failureCooldown=0), history, NOW)
        self.assertTrue(all(r.usable for r in ranked))


class DeduplicateTests(SynchronousTestCase):
    def test_keepsLowestDistance(self):
        near, far = seen("g", 10, host="10.0.0.1"), seen("g", 20, host="10.0.0.2")
        self.assertEqual(deduplicate([far, near]), [near])
        self.assertEqual(deduplicate([near, far]), [near])

    def test_thenLowestRtt(self):
        quick, slow, silent = (seen("g", 10, rtt, host=f"10.0.0.{n}") for n, rtt in enumerate((0.01, 0.2, None)))
        self.assertEqual(deduplicate([silent, slow, quick]), [quick])
        self.assertEqual(deduplicate([silent, slow]), [slow])

    def test_rankShowsEachGatewayOnce(self):
        ranked = rank([seen("g", 10, host="10.0.0.1"), seen("g", 5, host="fd00::1"), seen("h")], POLICY, History(), NOW)
        self.assertEqual(sorted(ids(ranked)), ["g", "h"])
        self.assertEqual(ranked[0].seen.host, "fd00::1")


class PolicyTests(SynchronousTestCase):
    def test_refusesNonsense(self):
        for bad in (dict(feeWeight=math.nan), dict(distanceWeight=-1), dict(rttScale=0),
                    dict(failureMemory=math.inf), dict(failureCooldown=-1), dict(maxFee=Decimal("-1")),
                    dict(maxFee=Decimal("NaN")), dict(methods=("wireguard", 3))):
            self.assertRaises(ValueError, dataclasses.replace, POLICY, **bad)

    def test_frozen(self):
        self.assertRaises(dataclasses.FrozenInstanceError, setattr, POLICY, "acceptFees", True)


# -- properties ---------------------------------------------------------

GIDS = [f"ed25519:g{n}" for n in range(6)]
fees = st.one_of(st.none(), st.builds(
    Fee, st.decimals(0, 20, places=2), st.sampled_from(["EUR", "USD"]), st.sampled_from(["month", "day"]), st.just("")))
distances = st.one_of(st.integers(0, 65535).map(float), st.just(math.inf))


@st.composite
def seens(draw, gids=st.sampled_from(GIDS), minSize=0):
    # Skewed towards usable offers, so that orderings among usable
    # gateways (free before paid, say) are exercised often.
    count = draw(st.integers(minSize, 10))
    items = []
    for n in range(count):
        maxClients = draw(st.integers(0, 8))
        items.append(Seen(
            offer(
                draw(gids), available=draw(st.sampled_from([True, True, True, False])), maxClients=maxClients,
                clients=draw(st.integers(0, maxClients + 1)), fee=draw(fees),
                methods=tuple(draw(st.lists(st.sampled_from(knownMethods()), unique=True, min_size=1, max_size=4))),
                issuedAt=draw(st.integers(0, 3)),
            ),
            f"10.0.0.{n}", 8150, draw(distances), draw(st.one_of(st.none(), st.floats(0, 5))),
        ))
    return items


policies = st.builds(
    Policy,
    methods=st.lists(st.sampled_from(knownMethods()), unique=True, min_size=2, max_size=5).map(tuple),
    acceptFees=st.sampled_from([True, True, False]),
    maxFee=st.one_of(st.none(), st.decimals(0, 20, places=2)),
    currency=st.sampled_from([None, "EUR"]),
    pinned=st.one_of(st.just(frozenset()), st.frozensets(st.sampled_from(GIDS))),
    blocked=st.frozensets(st.sampled_from(GIDS), max_size=1),
    failureCooldown=st.sampled_from([0.0, 30.0, 300.0]),
)

qualities = st.builds(
    GatewayQuality,
    sessions=st.integers(0, 50), failures=st.integers(0, 50), loss=st.floats(0, 1),
    lastFailure=st.one_of(st.none(), st.floats(NOW - 3000, NOW)),
)
histories = st.dictionaries(st.sampled_from(GIDS), qualities).map(History)


def position(ranked, gid):
    return ids(ranked).index(gid)


class RankPropertyTests(SynchronousTestCase):
    @PROPERTIES
    @given(seens(), policies, histories, st.randoms(use_true_random=False))
    def test_permutationOfDeduplicatedInputAndDeterministic(self, items, policy, history, random):
        ranked = rank(items, policy, history, NOW)
        self.assertEqual(sorted(ids(ranked)), sorted({i.offer.gatewayId for i in items}))
        for entry in ranked:
            self.assertTrue(any(entry.seen is item for item in items))
            self.assertEqual(entry.usable, entry.whyNot == "")
            self.assertIsInstance(entry, Ranked)
        shuffled = list(items)
        random.shuffle(shuffled)
        self.assertEqual(rank(shuffled, policy, history, NOW), ranked)

    @PROPERTIES
    @given(seens(), policies, histories)
    def test_unusableNeverBeforeUsable(self, items, policy, history):
        usable = [r.usable for r in rank(items, policy, history, NOW)]
        self.assertEqual(usable, sorted(usable, reverse=True))

    @PROPERTIES
    @given(seens(), policies, histories)
    def test_freeUsableBeforePaid(self, items, policy, history):
        ranked = [r for r in rank(items, policy, history, NOW) if r.usable]
        paid = [r.seen.offer.fee is not None for r in ranked]
        self.assertEqual(paid, sorted(paid))

    @PROPERTIES
    @given(seens(), policies, histories)
    def test_fullIsUnusable(self, items, policy, history):
        for r in rank(items, policy, history, NOW):
            if r.seen.offer.clients >= r.seen.offer.maxClients:
                self.assertFalse(r.usable)
                self.assertTrue(r.whyNot)

    @PROPERTIES
    @given(seens(), seens(gids=st.just("ed25519:me"), minSize=1).map(lambda s: s[:1]),
           policies, histories, st.floats(0, 1))
    def test_nearerNeverWorse(self, others, mine, policy, history, fraction):
        [me] = mine
        nearer = dataclasses.replace(me, distance=math.floor(me.distance * fraction) if me.distance < math.inf else 7.0)
        before = position(rank(others + [me], policy, history, NOW), "ed25519:me")
        after = position(rank(others + [nearer], policy, history, NOW), "ed25519:me")
        self.assertLessEqual(after, before)

    @PROPERTIES
    @given(seens(minSize=1), policies, histories, st.integers(1, 20))
    def test_moreFailuresNeverBetter(self, items, policy, history, more):
        gid = items[0].offer.gatewayId
        before = position(rank(items, policy, history, NOW), gid)
        worse = History(history)
        worse[gid] = dataclasses.replace(history.get(gid), failures=history.get(gid).failures + more)
        after = position(rank(items, policy, worse, NOW), gid)
        self.assertGreaterEqual(after, before)


# -- switching ----------------------------------------------------------

def ranked(gid, value, usable=True):
    return Ranked(seen(gid), value, usable, "" if usable else "full", ("wireguard",))


class SwitchPolicyTests(SynchronousTestCase):
    def test_switchesAfterHold(self):
        clock, switch, best = Clock(), SwitchPolicy(), ranked("b", 1.0)
        for _ in range(29):
            self.assertIsNone(switch.consider("a", 2.0, best, clock.seconds()))
            clock.advance(1)
        self.assertIsNone(switch.consider("a", 2.0, best, clock.seconds()))
        clock.advance(1)
        self.assertIs(switch.consider("a", 2.0, best, clock.seconds()), best)
        self.assertIsNone(switch.candidate)

    def test_holdOfZeroSwitchesAtOnce(self):
        best = ranked("b", 1.0)
        self.assertIs(SwitchPolicy(hold=0).consider("a", 2.0, best, 5.0), best)

    def test_marginMustBeExceeded(self):
        switch = SwitchPolicy(margin=0.5, hold=0)
        self.assertIsNone(switch.consider("a", 1.5, ranked("b", 1.0), 0))
        self.assertIsNotNone(switch.consider("a", 1.5, ranked("b", 0.99), 0))

    def test_marginLapseRestartsClock(self):
        switch = SwitchPolicy()
        switch.consider("a", 2.0, ranked("b", 1.0), 0)
        switch.consider("a", 1.1, ranked("b", 1.0), 20)
        self.assertIsNone(switch.consider("a", 2.0, ranked("b", 1.0), 40))
        self.assertEqual(switch.since, 40)
        self.assertIsNotNone(switch.consider("a", 2.0, ranked("b", 1.0), 70))

    def test_differentBestRestartsClock(self):
        switch = SwitchPolicy()
        switch.consider("a", 2.0, ranked("b", 1.0), 0)
        self.assertIsNone(switch.consider("a", 2.0, ranked("c", 1.0), 20))
        self.assertIsNone(switch.consider("a", 2.0, ranked("c", 1.0), 40))
        self.assertEqual(switch.consider("a", 2.0, ranked("c", 1.0), 50).gatewayId, "c")

    def test_nothingToSwitchTo(self):
        switch = SwitchPolicy(hold=0)
        for best in (None, ranked("a", 0.0), ranked("b", 0.0, usable=False)):
            self.assertIsNone(switch.consider("a", 2.0, best, 0))
            self.assertIsNone(switch.candidate)

    def test_resetForgetsCandidate(self):
        switch = SwitchPolicy()
        switch.consider("a", 2.0, ranked("b", 1.0), 0)
        switch.reset()
        self.assertIsNone(switch.consider("a", 2.0, ranked("b", 1.0), 30))

    def test_clockSteppedBackRestarts(self):
        switch = SwitchPolicy()
        switch.consider("a", 2.0, ranked("b", 1.0), 1000)
        self.assertIsNone(switch.consider("a", 2.0, ranked("b", 1.0), 10))
        self.assertIsNone(switch.consider("a", 2.0, ranked("b", 1.0), 39))
        self.assertIsNotNone(switch.consider("a", 2.0, ranked("b", 1.0), 40))

    def test_refusesNegativeSettings(self):
        self.assertRaises(ValueError, SwitchPolicy, margin=-0.1)
        self.assertRaises(ValueError, SwitchPolicy, hold=math.nan)

    @PROPERTIES
    @given(
        st.sampled_from([0.0, 0.1, 0.2, 0.5]), st.sampled_from([0.0, 1.0, 2.0, 5.0, 30.0]),
        # Coarse values, so that runs of one candidate and gaps right at
        # the margin are common.
        st.lists(st.tuples(st.sampled_from([0.0, 1.0, 5.0, 10.0]), st.sampled_from(["a", "b", "b", "c", None]),
                           st.sampled_from([0.0, 0.5, 0.9, 1.0]), st.sampled_from([1.0, 1.1, 1.2, 1.5])),
                 max_size=40),
    )
    def test_neverEarlyNeverWithinMargin(self, margin, hold, steps):
        """
        A switch happens only after the same gateway beat the current one
        by more than C{margin} at every call for C{hold} seconds, and then
        it does happen.
        """
        switch, now, runStart, runId = SwitchPolicy(margin, hold), 0.0, None, None
        for dt, gid, bestScore, currentScore in steps:
            now += dt
            best = None if gid is None else ranked(gid, bestScore)
            beats = best is not None and gid != "a" and bestScore < currentScore - margin
            if not beats:
                runStart = runId = None
            elif gid != runId:
                runStart, runId = now, gid
            result = switch.consider("a", currentScore, best, now)
            if result is None:
                self.assertFalse(beats and now - runStart >= hold)
            else:
                self.assertIs(result, best)
                self.assertTrue(beats)
                self.assertLess(result.score, currentScore - margin)
                self.assertGreaterEqual(now - runStart, hold)
                runStart = runId = None
