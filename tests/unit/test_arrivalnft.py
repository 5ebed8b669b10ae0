"""
L{mnigs.system.arrivalnft}: the marking's nftables script (checked by the
real nft in tests.mesh.test_reply_by_arrival).
"""

import ipaddress

from twisted.trial.unittest import SynchronousTestCase

from mnigs.server.prevhops import Hop
from mnigs.system.arrivalnft import HOP_MASK, arrivalScript, hopMark, removeArrivalScript
from mnigs.system.nft import REROUTE_MARK

A = bytes.fromhex("020000000001")
HOPS = [Hop(2, "tun0", None, None, None),
        Hop(1, "m0", A, ipaddress.ip_address("10.0.0.2"), None)]


class ArrivalScriptTests(SynchronousTestCase):
    def test_hopBitsAreApartFromTheRerouteFlip(self):
        self.assertEqual(HOP_MASK & REROUTE_MARK, 0)
        self.assertEqual([hopMark(1), hopMark(255)], [0x10000, 0xFF0000])
        for bad in (0, 256, True, "1"):
            self.assertRaises(ValueError, hopMark, bad)

    def test_replacesTheTableInOneTransaction(self):
        script = arrivalScript("mnigs_hops", HOPS)
        self.assertTrue(script.startswith(
            "table inet mnigs_hops {}\ndelete table inet mnigs_hops\ntable inet mnigs_hops {\n"))

    def test_eachHopSetsItsBitsKeepingTheOthers(self):
        script = arrivalScript("mnigs_hops", HOPS)
        self.assertIn("\tchain from1 {\n\t\tct mark set ct mark and 0xff00ffff or 0x00010000\n\t}\n",
                      script)
        self.assertIn("\tchain to2 {\n\t\tmeta mark set meta mark and 0xff00ffff or 0x00020000\n\t}\n",
                      script)

    def test_originalPacketsStampTheirHopRepliesGetItsMark(self):
        script = arrivalScript("mnigs_hops", HOPS)
        arrival, replies = script.split("\tchain arrival {\n")[1].split("\tchain replies {\n")
        reply = ("ct direction reply ct mark and 0x00ff0000 "
                 "vmap { 0x00010000 : goto to1, 0x00020000 : goto to2 }")
        self.assertEqual(arrival.splitlines()[:6], [
            "\t\ttype filter hook prerouting priority mangle; policy accept;",
            "\t\tct direction original ct mark and 0x00ff0000 != 0 ct mark set ct mark and 0xff00ffff",
            '\t\tct direction original iifname . ether saddr vmap { "m0" . 02:00:00:00:00:01 : goto from1 }',
            '\t\tct direction original iifname vmap { "tun0" : goto from2 }',
            "\t\t" + reply,
            "\t}"])
        self.assertEqual(replies.splitlines()[:3], [
            "\t\ttype route hook output priority mangle; policy accept;", "\t\t" + reply, "\t}"])

    def test_noHopsStillClearsStaleMarks(self):
        script = arrivalScript("mnigs_hops", [])
        self.assertNotIn("vmap", script)
        self.assertIn("ct direction original ct mark and 0x00ff0000 != 0", script)

    def test_namesAreChecked(self):
        self.assertRaises(ValueError, arrivalScript, "bad name", [])
        self.assertRaises(ValueError, removeArrivalScript, "x;flush ruleset")
        self.assertRaises(ValueError, arrivalScript, "t", [Hop(1, "bad if", A, None, None)])
        self.assertEqual(removeArrivalScript("mnigs_hops"),
                         "table inet mnigs_hops {}\ndelete table inet mnigs_hops\n")
