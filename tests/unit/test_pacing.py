"""
L{mnigs.client.pacing}: the round-trip estimator, the pace and dead time
it gives, and the quality window.
"""

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mnigs.client.pacing import Pacing, QualityWindow, RttEstimator, lossBounds

settings.register_profile("mnigs-pacing", derandomize=True, max_examples=200, deadline=None)


class RttEstimatorTests(SynchronousTestCase):

    def test_firstSampleSetsTheMeanAndHalfTheVariation(self):
        rtt = RttEstimator()
        rtt.sample(0.008)
        self.assertEqual((rtt.srtt, rtt.rttvar), (0.008, 0.004))

    def test_laterSamplesFollowRFC6298(self):
        rtt = RttEstimator()
        rtt.sample(0.008)
        rtt.sample(0.016)
        self.assertAlmostEqual(rtt.rttvar, 0.75 * 0.004 + 0.25 * 0.008)
        self.assertAlmostEqual(rtt.srtt, 0.875 * 0.008 + 0.125 * 0.016)

    def test_negativeSamplesIgnored(self):
        rtt = RttEstimator()
        rtt.sample(-1.0)
        self.assertIsNone(rtt.srtt)


class PacingTests(SynchronousTestCase):

    def test_ceilingsBeforeTheFirstAnswer(self):
        pacing = Pacing()
        rtt = RttEstimator()
        self.assertEqual((pacing.interval(rtt), pacing.timeout(rtt)), (0.25, 0.75))
        self.assertEqual(pacing.deadTime(rtt), 16 * 0.25 + 0.75)

    def test_aFastMeshGetsTheFloors(self):
        """A 2 ms mesh: a probe every 0.02 s, dead after 0.37 s."""
        pacing = Pacing()
        rtt = RttEstimator()
        for _ in range(20):
            rtt.sample(0.002)
        self.assertEqual(pacing.interval(rtt), 0.02)
        self.assertEqual(pacing.timeout(rtt), 0.05)
        self.assertAlmostEqual(pacing.deadTime(rtt), 0.37)

    def test_aWifiHopIsPacedByItsRoundTrip(self):
        pacing = Pacing()
        rtt = RttEstimator(srtt=0.05, rttvar=0.01)
        self.assertEqual(pacing.interval(rtt), 0.05)
        self.assertAlmostEqual(pacing.timeout(rtt), 0.09)
        self.assertAlmostEqual(pacing.deadTime(rtt), 16 * 0.05 + 0.09)

    def test_aSlowPathGetsTheCeilings(self):
        pacing = Pacing()
        rtt = RttEstimator(srtt=0.4, rttvar=0.2)
        self.assertEqual((pacing.interval(rtt), pacing.timeout(rtt)), (0.25, 0.75))

    def test_badBoundsRefused(self):
        self.assertRaises(ValueError, Pacing, minInterval=0.5, maxInterval=0.25)
        self.assertRaises(ValueError, Pacing, minTimeout=1.0, maxTimeout=0.75)
        self.assertRaises(ValueError, Pacing, deadProbes=0)

    @settings(settings.get_profile("mnigs-pacing"))
    @given(st.lists(st.floats(0, 5), min_size=1, max_size=50))
    def test_alwaysWithinBounds(self, samples):
        pacing = Pacing()
        rtt = RttEstimator()
        for sample in samples:
            rtt.sample(sample)
            self.assertTrue(0.02 <= pacing.interval(rtt) <= 0.25)
            self.assertTrue(0.05 <= pacing.timeout(rtt) <= 0.75)
            self.assertTrue(16 * 0.02 + 0.05 <= pacing.deadTime(rtt) <= 16 * 0.25 + 0.75)


class QualityWindowTests(SynchronousTestCase):

    def test_lossIsTheWorseKind(self):
        window = QualityWindow(5.0)
        for i in range(10):
            window.add(i * 0.1, "gateway", None if i < 2 else 0.002)
        for i in range(4):
            window.add(i * 0.25, "internet", None if i < 2 else 0.01)
        quality = window.quality(1.0)
        self.assertEqual(quality.loss, 0.5)
        self.assertEqual(quality.samples, 14)
        self.assertEqual(quality.minRtt, 0.002)
        self.assertEqual(quality.rtt, 0.002)
        self.assertEqual(quality.span, 1.0)

    def test_oldSamplesForgottenTheFloorKept(self):
        window = QualityWindow(5.0)
        window.add(0.0, "gateway", 0.001)
        window.add(6.0, "gateway", 0.05)
        window.add(7.0, "gateway", None)
        quality = window.quality(7.0)
        self.assertEqual((quality.samples, quality.loss, quality.rtt), (2, 0.5, 0.05))
        self.assertEqual(quality.minRtt, 0.001, "the session's floor")
        self.assertEqual(quality.span, 5.0)

    def test_emptyWindow(self):
        quality = QualityWindow().quality(3.0)
        self.assertEqual((quality.loss, quality.rtt, quality.samples, quality.span),
                         (0.0, None, 0, 0.0))
        self.assertEqual(quality.toDict(), {"loss": 0.0, "loss_bounds": [0.0, 1.0], "rtt_ms": None,
                                            "min_rtt_ms": None, "samples": 0, "span_s": 0.0})

    def test_lossBoundsNarrowWithMoreProbes(self):
        self.assertEqual([round(b, 2) for b in lossBounds(11, 20)], [0.34, 0.74])
        self.assertEqual([round(b, 2) for b in lossBounds(86, 250)], [0.29, 0.40])
        self.assertEqual(lossBounds(0, 0), (0.0, 1.0))
