"""
Tests for L{mnigs.cjdns.names}: pure.  The key/address pairs are real
ones printed by cjdns (doc/configure.md, and the comments of cjdns's
test/twoNodes_test.c), so the derivation is checked against cjdns itself,
not against our reading of it.
"""

import ipaddress

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mnigs.cjdns.names import (
    base32Decode,
    base32Encode,
    canonicalKey,
    formatIp,
    formatLabel,
    formatNodeAddress,
    ipForKey,
    isCjdnsAddress,
    labelHops,
    parseKey,
    parseLabel,
    parseNodeAddress,
    splice,
)

settings.register_profile("mnigs-cjdns-names", derandomize=True, max_examples=300, deadline=None)
PROFILE = settings.get_profile("mnigs-cjdns-names")

REAL = [
    ("u2jf87mgqlxfzdnywp60z3tx6tkulvgh2nyc2jk1zc69zzt2s8u0.k", "fcff:a215:1e7b:a4e9:c00d:0813:93b3:7c87"),
    ("hukfzjh5n30m10303bkhjg1wvuft90s0cqqg5jrjgg781dbly2z0.k", "fccf:4352:ac9:7d1f:b32b:ba08:f086:8432"),
    ("kmzm4w0kj9bswd5qmx74nu7kusv5pj40vcsmp781j6xxgpd59z00.k", "fc41:94b5:0925:7ba9:3959:11ab:a006:367a"),
    ("vz21tg07061s8v9mckrvgtfds7j2u5lst8cwl6nqhp81njrh5wg0.k", "fc1f:5b96:e1c5:625d:afde:2523:a7fa:383a"),
]
KEY = REAL[0][0]


class KeyTests(SynchronousTestCase):
    def test_addressOfRealKeys(self):
        for key, address in REAL:
            self.assertEqual(ipForKey(key), ipaddress.IPv6Address(address))

    def test_keyRoundTrip(self):
        for key, _ in REAL:
            self.assertEqual(canonicalKey(key), key)
            self.assertEqual(canonicalKey(key.upper()[:-2] + ".k"), key)

    def test_malformedKeysRefusedWithCjdnsWords(self):
        cases = {
            KEY[:40]: "key must be 52 characters long",
            KEY[:52] + ".x": "key must end in .k",
            KEY + "extra": "key must end in .k",
            "a" + KEY[1:]: "failed to base-32 decode key",  # 'a' is not in the alphabet
            KEY[:51] + "z.k": "failed to base-32 decode key",  # leftover bits set
            "0" * 52 + ".k": "not a valid cjdns public key",  # address outside fc00::/8
        }
        for text, words in cases.items():
            error = self.assertRaises(ValueError, parseKey, text)
            self.assertEqual(str(error), words, text)
        self.assertRaises(ValueError, parseKey, None)

    @settings(PROFILE)
    @given(st.binary(min_size=0, max_size=40))
    def test_base32RoundTrip(self, raw):
        self.assertEqual(base32Decode(base32Encode(raw)), raw)

    @settings(PROFILE)
    @given(st.text(alphabet="0123456789bcdfghjklmnpqrstuvwxyzBCDFGHJKLMNPQRSTUVWXYZa_ -+", max_size=60))
    def test_base32DecodeAsCjdnsLoops(self, text):
        """
        The decoder reads the text as one number; it agrees with a loop
        written as util/Base32.h's Base32_decode is, errors included.
        """
        self.assertEqual(_outcome(base32Decode, text), _outcome(_loopDecode, text))

    def test_base32DecodeErrors(self):
        self.assertEqual(str(self.assertRaises(ValueError, base32Decode, "0a0")),
                         "'a' is not a base32 character")
        self.assertEqual(str(self.assertRaises(ValueError, base32Decode, "z")),
                         "base32 input has leftover bits")
        self.assertEqual(base32Decode(""), b"")

    @settings(PROFILE)
    @given(st.text(max_size=60))
    def test_parseKeyNeverCrashes(self, text):
        try:
            parseKey(text)
        except ValueError:
            pass

    def test_cjdnsAddresses(self):
        self.assertTrue(isCjdnsAddress("fc00::1"))
        self.assertFalse(isCjdnsAddress("fd00::1"))
        self.assertFalse(isCjdnsAddress("10.0.0.1"))
        self.assertFalse(isCjdnsAddress("nonsense"))
        self.assertEqual(formatIp("fc00::1"), "fc00:0000:0000:0000:0000:0000:0000:0001")


def _loopDecode(text):
    from mnigs.cjdns.names import _BASE32_VALUE

    out, work, bits = bytearray(), 0, 0
    for char in text:
        value = _BASE32_VALUE.get(char)
        if value is None:
            raise ValueError(f"{char!r} is not a base32 character")
        work |= value << bits
        bits += 5
        if bits >= 8:
            out.append(work & 0xFF)
            work >>= 8
            bits -= 8
    if bits >= 5 or work:
        raise ValueError("base32 input has leftover bits")
    return bytes(out)


def _outcome(function, *args):
    try:
        return function(*args)
    except ValueError as e:
        return str(e)


class LabelTests(SynchronousTestCase):
    def test_format(self):
        self.assertEqual(formatLabel(0x13), "0000.0000.0000.0013")
        self.assertEqual(parseLabel("0000.0000.0000.0013"), 0x13)
        self.assertEqual(parseLabel("ffff.0000.0000.0001"), 0xFFFF000000000001)
        for bad in ("0000.0000.0000.013", "0000-0000-0000-0013", "000g.0000.0000.0013", 19, None):
            self.assertRaises(ValueError, parseLabel, bad)

    def test_splice(self):
        """
        switch/LabelSplicer.h: the hop from the node at C{viaHere} goes
        above C{viaHere}'s directors; too long to splice is C{None}.
        """
        self.assertEqual(splice(0x15, 0x13), 0x153)
        self.assertEqual(splice(0x13, 1), 0x13)
        self.assertEqual(splice(1, 0x13), 0x13)
        self.assertIsNone(splice(1 << 30, 1 << 30))
        self.assertIsNone(splice(0, 0x13))

    def test_labelHops(self):
        self.assertEqual([labelHops(x) for x in (1, 0x13, 0x153, 0x1153)], [0, 1, 2, 3])

    def test_nodeAddress(self):
        text = formatNodeAddress(20, 0x13, KEY)
        self.assertEqual(text, f"v20.0000.0000.0000.0013.{KEY}")
        address = parseNodeAddress(text)
        self.assertEqual((address.version, address.label, address.key), (20, 0x13, KEY))
        self.assertEqual(address.ip, ipaddress.IPv6Address(REAL[0][1]))
        self.assertEqual(str(address), text)
        upper = parseNodeAddress(f"v20.0000.0000.0000.0013.{KEY[:52].upper()}.k")
        self.assertEqual(upper, address)
        for bad in (text[1:], "v." + text[4:], text[:-1], text + "k", "vx" + text[3:], None, 5):
            self.assertRaises(ValueError, parseNodeAddress, bad)

    def test_nodeAddressKeyMemo(self):
        """
        With a memo, a key is checked once and remembered; the answers are
        the same; a bad key is refused and not remembered.
        """
        keys = {}
        first = parseNodeAddress(formatNodeAddress(20, 0x13, KEY), keys)
        self.assertEqual(keys, {KEY: ipaddress.IPv6Address(REAL[0][1])})
        again = parseNodeAddress(formatNodeAddress(21, 0x153, KEY), keys)
        self.assertEqual((again.version, again.label, again.key, again.ip), (21, 0x153, KEY, first.ip))
        self.assertRaises(ValueError, parseNodeAddress, formatNodeAddress(20, 0x13, "0" * 52 + ".k"), keys)
        self.assertEqual(list(keys), [KEY])
