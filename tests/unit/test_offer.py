"""
Tests for L{mnigs.server.offer.OfferMaker}'s offers on a Clock: what they
carry, and the per-second cache that keeps signing off the hot path.
Nonces and proofs are in tests.unit.test_proofs, probe targets in
tests.unit.test_gateway.
"""

from types import SimpleNamespace

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mnigs import __version__, protocol
from mnigs.server.offer import NONCE_PERIOD, termsFromConfig
from tests.unit.test_proofs import GATEWAY_KEY, WG_KEY, Method, makeOffers


class Hidden:
    """A method with nothing to offer on this address (no listener there)."""

    name = "forward"

    def offerEntry(self, localHost):
        return None


class CountingMethod(Method):
    def __init__(self):
        self.asked = 0

    def offerEntry(self, localHost):
        self.asked += 1
        return super().offerEntry(localHost)


class OfferMakerTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000.25)
        self.offers = makeOffers(self.clock)
        self.method = CountingMethod()
        self.offers.methods = [self.method, Hidden()]

    def test_theOfferSaysWhoWhatAndWhen(self):
        offer = self.offers.offer("10.99.0.5", False, 3)
        verified = protocol.verifyOffer(offer)
        self.assertEqual(offer["gateway"], {"id": self.offers.gatewayId, "name": "gw",
                                            "software": f"mnigs {__version__}"})
        self.assertEqual(offer["gateway"]["id"], protocol.gatewayId(GATEWAY_KEY.verify_key))
        self.assertIs(offer["available"], False)
        self.assertEqual(offer["terms"]["clients"], 3)
        self.assertEqual(offer["terms"]["max_clients"], 8)
        self.assertEqual(offer["issued_at"], 1000)
        self.assertEqual(offer["methods"], [{"type": "wireguard", "endpoint": "10.99.0.5:51820",
                                             "public_key": WG_KEY}])
        self.assertEqual(verified.nonce, offer["nonce"])

    def test_sameSecondSameOffer(self):
        first = self.offers.offer("10.99.0.5", True, 0)
        self.clock.advance(0.5)
        self.assertIs(self.offers.offer("10.99.0.5", True, 0), first)
        self.assertEqual(self.method.asked, 1)

    def test_anythingThatChangesTheOfferMakesANewOne(self):
        first = self.offers.offer("10.99.0.5", True, 0)
        others = [self.offers.offer("10.99.1.5", True, 0),
                  self.offers.offer("10.99.0.5", False, 0),
                  self.offers.offer("10.99.0.5", True, 1)]
        self.clock.advance(1)
        others.append(self.offers.offer("10.99.0.5", True, 0))
        for other in others:
            self.assertIsNot(other, first)
            protocol.verifyOffer(other)
        self.assertEqual(others[-1]["issued_at"], first["issued_at"] + 1)

    def test_aNewNonceIsANewOffer(self):
        first = self.offers.offer("10.99.0.5", True, 0)
        self.clock.advance(NONCE_PERIOD)
        fresh = self.offers.offer("10.99.0.5", True, 0)
        self.assertNotEqual(fresh["nonce"], first["nonce"])

    def test_newTermsShowAtOnce(self):
        first = self.offers.offer("10.99.0.5", True, 0)
        self.offers.setTerms(dict(first["terms"], max_clients=2))
        again = self.offers.offer("10.99.0.5", True, 0)
        self.assertEqual(again["terms"]["max_clients"], 2)

    def test_theCacheStaysSmall(self):
        for n in range(600):
            self.offers.offer(f"10.99.{n // 250}.{n % 250}", True, 0)
            self.assertLessEqual(len(self.offers._cache), 257)


class TermsFromConfigTests(SynchronousTestCase):
    def terms(self, amount="", down=0, up=0):
        return SimpleNamespace(
            max_clients=4, lease_seconds=60, contact="ops@example.net", notes="",
            fee=SimpleNamespace(amount=amount, currency="EUR", period="month", pay_to="x"),
            bandwidth_kbps=SimpleNamespace(down=down, up=up))

    def test_noFeeNoBandwidthAreNull(self):
        terms = termsFromConfig(self.terms())
        self.assertEqual(terms, {"max_clients": 4, "lease_seconds": 60, "fee": None,
                                 "bandwidth_kbps": None, "contact": "ops@example.net",
                                 "notes": ""})

    def test_feeAndBandwidth(self):
        terms = termsFromConfig(self.terms(amount="5", up=1000))
        self.assertEqual(terms["fee"], {"amount": "5", "currency": "EUR", "period": "month",
                                        "pay_to": "x"})
        self.assertEqual(terms["bandwidth_kbps"], {"down": 0, "up": 1000})

    def test_theTermsVerifyInAnOffer(self):
        offers = makeOffers(Clock())
        offers.setTerms(termsFromConfig(self.terms(amount="5.50", down=10)))
        protocol.verifyOffer(offers.offer("10.99.0.5", True, 0))
