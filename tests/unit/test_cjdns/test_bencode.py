"""
Tests for L{mnigs.cjdns.bencode}: pure, no cjdns involved.  The fixed
cases are those of cjdns's own decoder tests
(contrib/python3/cjdnsadmin/bencode.py, C{test_bdecode}), plus the bounds
a datagram decoder needs.
"""

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mnigs.cjdns.bencode import INT64_MAX, INT64_MIN, BencodeError, decode, encode

settings.register_profile("mnigs-bencode", derandomize=True, max_examples=400, deadline=None)
PROFILE = settings.get_profile("mnigs-bencode")

scalars = st.one_of(st.binary(max_size=40), st.integers(INT64_MIN, INT64_MAX))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=6),
                            st.dictionaries(st.binary(max_size=12), inner, max_size=6)),
    max_leaves=40,
)


class EncodeTests(SynchronousTestCase):
    def test_cjdnsRequestShape(self):
        """
        Keys come out sorted by their bytes, text is UTF-8: the cookie
        request of contrib/python/cjdnsadmin/cjdnsadmin.py, byte for byte.
        """
        self.assertEqual(encode({"txid": "ABCDEFGHIJ", "q": "cookie"}),
                         b"d1:q6:cookie4:txid10:ABCDEFGHIJe")
        self.assertEqual(encode({"b": [1, -2, b"x"], "a": {}}), b"d1:ade1:bli1ei-2e1:xee")

    def test_refusesWhatBencodeCannotSay(self):
        for value in (True, 1.5, None, {1: 2}, 2**63, -(2**63) - 1, {"a": 1, b"a": 2}):
            self.assertRaises(BencodeError, encode, value)

    def test_depthBound(self):
        deep = []
        for _ in range(40):
            deep = [deep]
        self.assertRaises(BencodeError, encode, deep)


class DecodeTests(SynchronousTestCase):
    def test_cjdnsGoodCases(self):
        cases = {
            b"i4e": 4, b"i0e": 0, b"i123456789e": 123456789, b"i-10e": -10,
            b"0:": b"", b"3:abc": b"abc", b"10:1234567890": b"1234567890",
            b"le": [], b"l0:0:0:e": [b"", b"", b""], b"li1ei2ei3ee": [1, 2, 3],
            b"ll5:Alice3:Bobeli2ei3eee": [[b"Alice", b"Bob"], [2, 3]], b"de": {},
            b"d3:agei25e4:eyes4:bluee": {b"age": 25, b"eyes": b"blue"},
            b"d0:i3ee": {b"": 3},
        }
        for data, value in cases.items():
            self.assertEqual(decode(data), value, data)

    def test_cjdnsBadCases(self):
        for data in (b"0:0:", b"ie", b"i341foo382e", b"i-0e", b"i123", b"", b"i6easd",
                     b"35208734823ljdahflajhdf", b"2:abfdjslhfld", b"02:xy", b"l", b"leanfdldjfh",
                     b"relwjhrlewjh", b"d", b"defoobar", b"d3:fooe", b"di1e0:e", b"d1:b0:1:a0:e",
                     b"d1:a0:1:a0:e", b"i03e", b"l01:ae", b"9999:x", b"l0:", b"d0:0:", b"d0:",
                     b"00:", b"l-3:e", b"i-03e"):
            self.assertRaises(BencodeError, decode, data)

    def test_int64Bounds(self):
        self.assertEqual(decode(b"i9223372036854775807e"), INT64_MAX)
        self.assertEqual(decode(b"i-9223372036854775808e"), INT64_MIN)
        self.assertRaises(BencodeError, decode, b"i9223372036854775808e")
        self.assertRaises(BencodeError, decode, b"i" + b"9" * 5000 + b"e")

    def test_depthAndSizeBounds(self):
        self.assertEqual(decode(b"l" * 32 + b"e" * 32, maxDepth=32), decode(b"l" * 32 + b"e" * 32))
        error = self.assertRaises(BencodeError, decode, b"l" * 33 + b"e" * 33, maxDepth=32)
        self.assertIn("nesting", str(error))
        self.assertRaises(BencodeError, decode, b"l" * 100000 + b"e" * 100000)
        error = self.assertRaises(BencodeError, decode, b"3:abc", maxSize=4)
        self.assertIn("more than 4", str(error))

    def test_refusesNonBytes(self):
        self.assertRaises(BencodeError, decode, "i1e")

    @settings(PROFILE)
    @given(values)
    def test_roundTrip(self, value):
        self.assertEqual(decode(encode(value)), value)

    @settings(PROFILE)
    @given(st.binary(max_size=300))
    def test_neverCrashes(self, data):
        try:
            decode(data)
        except BencodeError:
            pass

    @settings(PROFILE)
    @given(values, st.integers(0, 10**6), st.binary(min_size=1, max_size=3))
    def test_damagedEncodingsOnlyRaiseBencodeError(self, value, where, junk):
        data = encode(value)
        at = where % (len(data) + 1)
        for damaged in (data[:at] + junk + data[at:], data[:at] + data[at + 1:], data[:at]):
            try:
                decoded = decode(damaged)
            except BencodeError:
                continue
            self.assertEqual(encode(decoded), damaged)  # whatever passes is canonical
