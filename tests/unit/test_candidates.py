"""
Tests for L{mnigs.routing.candidates}.
"""

import dataclasses
from ipaddress import ip_address

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mnigs.routing.candidates import (
    Candidate,
    mergeCandidates,
    sortCandidates,
    usableAddress,
)

settings.register_profile("mnigs-candidates", derandomize=True, max_examples=200, deadline=None)


def c(address, distance, source="babel", **kw):
    return Candidate(ip_address(address), distance, source, **kw)


class CandidateTests(SynchronousTestCase):
    def test_frozen(self):
        candidate = c("10.0.0.1", 1)
        self.assertRaises(dataclasses.FrozenInstanceError, setattr, candidate, "distance", 2)

    def test_viaAndInterfaceDefaultToNone(self):
        candidate = c("10.0.0.1", 1)
        self.assertEqual((candidate.via, candidate.interface), (None, None))

    def test_usableAddress(self):
        for text in ("10.0.0.1", "fd00::1", "200:1234::1", "198.51.100.1"):
            self.assertTrue(usableAddress(ip_address(text)), text)
        for text in ("fe80::1", "169.254.1.1", "ff02::1", "224.0.0.1", "127.0.0.1", "::1", "0.0.0.0", "::"):
            self.assertFalse(usableAddress(ip_address(text)), text)


class MergeCandidatesTests(SynchronousTestCase):
    def test_nearestFirst(self):
        merged = mergeCandidates([[c("10.0.0.3", 300), c("10.0.0.1", 100)], [c("10.0.0.2", 200, "kernel")]])
        self.assertEqual([str(x.address) for x in merged], ["10.0.0.1", "10.0.0.2", "10.0.0.3"])

    def test_duplicateKeepsSmallestDistance(self):
        near = c("10.0.0.1", 96, "babel", via="fe80::1", interface="m0")
        far = c("10.0.0.1", 1024, "kernel")
        self.assertEqual(mergeCandidates([[far], [near]]), [near])
        self.assertEqual(mergeCandidates([[near], [far]]), [near])

    def test_tiesBrokenByAddressThenSource(self):
        merged = mergeCandidates(
            [[c("fd00::1", 5), c("10.0.0.9", 5), c("10.0.0.2", 5, "kernel")], [c("10.0.0.2", 5, "babel")]]
        )
        self.assertEqual(
            [(str(x.address), x.source) for x in merged],
            [("10.0.0.2", "babel"), ("10.0.0.9", "babel"), ("fd00::1", "babel")],
        )

    def test_empty(self):
        self.assertEqual(mergeCandidates([]), [])
        self.assertEqual(mergeCandidates([[], []]), [])

    def test_acceptsIterators(self):
        merged = mergeCandidates(iter([iter([c("10.0.0.1", 1)])]))
        self.assertEqual(merged, [c("10.0.0.1", 1)])

    @settings(settings.get_profile("mnigs-candidates"))
    @given(
        st.lists(
            st.lists(
                st.builds(
                    Candidate,
                    st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).filter(lambda a: int(a) % 7 < 3),
                    st.floats(min_value=0, max_value=70000, allow_nan=False),
                    st.sampled_from(["babel", "kernel", "yggdrasil"]),
                ),
                max_size=20,
            ),
            max_size=4,
        )
    )
    def test_mergeProperties(self, lists):
        merged = mergeCandidates(lists)
        everything = [x for candidates in lists for x in candidates]
        self.assertEqual({x.address for x in merged}, {x.address for x in everything})
        self.assertEqual(len(merged), len({x.address for x in merged}))
        for candidate in merged:
            self.assertEqual(candidate.distance, min(x.distance for x in everything if x.address == candidate.address))
        self.assertEqual(merged, sortCandidates(merged))
        self.assertEqual(merged, mergeCandidates(reversed(lists)))


class HopScaledTests(SynchronousTestCase):
    def test_hopsBecomeMetric(self):
        from twisted.internet import defer

        from mnigs.routing.candidates import HOP_METRIC, HopScaled

        class Source:
            name = "overlay"

            def candidates(self):
                return defer.succeed([Candidate(ip_address("200::1"), 2.0, "overlay")])

            def watch(self, onChange):
                return "watch"

        scaled = HopScaled(Source())
        self.assertEqual(scaled.name, "overlay")
        self.assertEqual([c.distance for c in self.successResultOf(scaled.candidates())], [2 * HOP_METRIC])
        self.assertEqual(scaled.watch(None), "watch")
