"""
Tests for L{mnigs.routing.babeltable}, from babeld 1.12.1 output captured
by C{tests/mesh/capture_babel.py} (a triangle a - b - c with a costly direct
link a - c and an uplink on c; seen from a).
"""

import os
from ipaddress import ip_address, ip_network

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mnigs.routing.candidates import Candidate
from mnigs.routing.babeltable import (
    INFINITY,
    BabelEvent,
    BabelInterface,
    BabelNeighbour,
    BabelRoute,
    BabelTable,
    BabelXroute,
    defaultRoutes,
    hostCandidates,
    parseBabelLine,
    selectedRoutes,
)

DATA = os.path.join(os.path.dirname(__file__), "data")
ROUTER_B = "14:85:e0:e6:bd:53:5e:e9"
ROUTER_C = "bc:5c:6d:43:e4:70:a3:27"
VIA_B = "fe80::fcb7:9cff:fea1:4ab5"
VIA_C = "fe80::10dc:aff:fef7:1917"
GREETING = {"BABEL", "version", "host", "my-id", "ok"}

settings.register_profile("mnigs-babel", derandomize=True, max_examples=500, deadline=None)


def captured(name):
    with open(os.path.join(DATA, name), encoding="utf-8") as f:
        return f.read().splitlines()


def tableFrom(lines):
    table = BabelTable()
    for line in lines:
        event = parseBabelLine(line)
        if event is not None:
            table.apply(event)
    return table


def summary(candidates):
    return [(str(x.address), x.distance, x.interface) for x in candidates]


class ParseCapturedDumpTests(SynchronousTestCase):
    def test_everyStateLineParses(self):
        """
        Every line of a real dump but the greeting and the final C{ok} is an
        event, with the action it starts with.
        """
        for line in captured("babel_dump.txt"):
            event = parseBabelLine(line)
            if line.split()[0] in GREETING:
                self.assertIsNone(event, line)
            else:
                self.assertIsInstance(event, BabelEvent, line)
                self.assertEqual(event.action, "add")

    def test_everyMonitorLineParses(self):
        actions = set()
        for line in captured("babel_monitor.txt"):
            event = parseBabelLine(line)
            if line.split()[0] not in GREETING:
                self.assertIsNotNone(event, line)
                actions.add((event.action, type(event.entry)))
        self.assertIn(("flush", BabelRoute), actions)
        self.assertIn(("flush", BabelNeighbour), actions)
        self.assertIn(("flush", BabelXroute), actions)
        self.assertIn(("change", BabelInterface), actions)

    def test_route(self):
        event = parseBabelLine(
            "add route 55ddb5f6fc90 prefix 10.251.0.3/32 from 0.0.0.0/0 installed yes "
            f"id {ROUTER_C} metric 192 refmetric 96 via {VIA_B} if m0"
        )
        self.assertEqual(
            event,
            BabelEvent(
                "add",
                BabelRoute(
                    id="55ddb5f6fc90",
                    prefix=ip_network("10.251.0.3/32"),
                    fromPrefix=ip_network("0.0.0.0/0"),
                    installed=True,
                    routerId=ROUTER_C,
                    metric=192,
                    refmetric=96,
                    via=ip_address(VIA_B),
                    interface="m0",
                ),
            ),
        )

    def test_notInstalledRetraction(self):
        event = parseBabelLine(
            "flush route 55ddb5f6fd50 prefix 0.0.0.0/0 from 0.0.0.0/0 installed no "
            f"id {ROUTER_C} metric 65535 refmetric 65535 via {VIA_B} if m0"
        )
        self.assertEqual(event.action, "flush")
        self.assertFalse(event.entry.installed)
        self.assertEqual(event.entry.metric, INFINITY)
        self.assertFalse(event.entry.reachable)

    def test_interface(self):
        self.assertEqual(
            parseBabelLine("add interface m0 up true ipv6 fe80::a0b4:9dff:fe30:34f3 ipv4 10.99.1.1"),
            BabelEvent("add", BabelInterface("m0", True, ip_address("fe80::a0b4:9dff:fe30:34f3"), ip_address("10.99.1.1"))),
        )
        self.assertEqual(
            parseBabelLine("change interface m0 up false"), BabelEvent("change", BabelInterface("m0", False))
        )

    def test_neighbour(self):
        self.assertEqual(
            parseBabelLine(
                f"add neighbour 55ddb5f6c220 address {VIA_B} if m0 reach e000 ureach 0000 rxcost 96 txcost 96 cost 96"
            ),
            BabelEvent("add", BabelNeighbour("55ddb5f6c220", ip_address(VIA_B), "m0", 0xE000, 0, 96, 96, 96)),
        )

    def test_neighbourWithRtt(self):
        """
        babeld adds C{rtt} and C{rttcost} when it measures round-trip times
        (C{enable-timestamps}); they are ignored.
        """
        event = parseBabelLine(
            f"change neighbour 1a2b address {VIA_B} if m0 reach ffff ureach 0000 rxcost 96 txcost 96 "
            "rtt 1.234 rttcost 12 cost 108"
        )
        self.assertEqual(event.entry.cost, 108)

    def test_xroute(self):
        self.assertEqual(
            parseBabelLine("add xroute fd00:251::1/128-::/0 prefix fd00:251::1/128 from ::/0 metric 0"),
            BabelEvent(
                "add",
                BabelXroute("fd00:251::1/128-::/0", ip_network("fd00:251::1/128"), ip_network("::/0"), 0),
            ),
        )

    def test_bytes(self):
        line = b"add interface m0 up false"
        self.assertEqual(parseBabelLine(line), parseBabelLine(line.decode()))

    def test_notEvents(self):
        for line in [
            "",
            "   ",
            "ok",
            "BABEL 1.0",
            "my-id d0:59:86:0d:7c:e9:e2:bf",
            "add",
            "add route",
            "remove route 1 prefix 10.0.0.1/32",
            "add teapot 1 colour blue",
            # an odd number of words after the key
            "add interface m0 up",
            # a field missing, malformed or out of range
            f"add route 1 prefix 10.0.0.1/32 from 0.0.0.0/0 installed yes id x metric 5 via {VIA_B} if m0",
            f"add route 1 prefix 10.0.0.1/33 from 0.0.0.0/0 installed yes id x metric 5 refmetric 0 via {VIA_B} if m0",
            f"add route 1 prefix 10.0.0.1/32 from 0.0.0.0/0 installed maybe id x metric 5 refmetric 0 via {VIA_B} if m0",
            f"add route 1 prefix 10.0.0.1/32 from 0.0.0.0/0 installed yes id x metric -5 refmetric 0 via {VIA_B} if m0",
            f"add route 1 prefix 10.0.0.1/32 from 0.0.0.0/0 installed yes id x metric ٣ refmetric 0 via {VIA_B} if m0",
            "add route 1 prefix 10.0.0.1/32 from 0.0.0.0/0 installed yes id x metric 5 refmetric 0 via nowhere if m0",
            "add interface m0 up yes",
            "add neighbour 1 address fe80::1 if m0 reach zzzz ureach 0 rxcost 1 txcost 1 cost 1",
        ]:
            self.assertIsNone(parseBabelLine(line), line)

    def test_notText(self):
        self.assertIsNone(parseBabelLine(None))
        self.assertIsNone(parseBabelLine(42))

    @settings(settings.get_profile("mnigs-babel"))
    @given(st.text())
    def test_neverRaisesOnText(self, line):
        result = parseBabelLine(line)
        self.assertTrue(result is None or isinstance(result, BabelEvent))

    @settings(settings.get_profile("mnigs-babel"))
    @given(st.binary())
    def test_neverRaisesOnBytes(self, line):
        parseBabelLine(line)

    @settings(settings.get_profile("mnigs-babel"))
    @given(st.data())
    def test_neverRaisesOnMangledRealLines(self, data):
        """
        Real lines with words dropped, duplicated, swapped or replaced reach
        deep into the field parsers.
        """
        lines = [x for x in captured("babel_dump.txt") if x.split()[0] in ("add", "change", "flush")]
        words = data.draw(st.sampled_from(lines)).split()
        vocabulary = sorted({word for line in lines for word in line.split()})
        for _ in range(data.draw(st.integers(0, 4))):
            where = data.draw(st.integers(0, len(words)))
            what = data.draw(st.one_of(st.sampled_from(vocabulary), st.text(max_size=8)))
            operation = data.draw(st.sampled_from(["insert", "delete", "replace"]))
            if operation == "insert":
                words.insert(where, what)
            elif words and where < len(words):
                if operation == "delete":
                    del words[where]
                else:
                    words[where] = what
        result = parseBabelLine(" ".join(words))
        self.assertTrue(result is None or isinstance(result, BabelEvent))


class BabelTableTests(SynchronousTestCase):
    def test_dumpState(self):
        table = tableFrom(captured("babel_dump.txt"))
        self.assertEqual(len(table.routes()), 13)
        self.assertEqual(len(table.xroutes()), 4)
        self.assertEqual(sorted(n.interface for n in table.neighbours()), ["m0", "m1"])
        self.assertEqual(sorted(i.name for i in table.interfaces()), ["m0", "m1"])

    def test_applyReportsChange(self):
        table = BabelTable()
        line = "add interface m0 up false"
        self.assertTrue(table.apply(parseBabelLine(line)))
        self.assertFalse(table.apply(parseBabelLine(line.replace("add", "change"))))
        self.assertTrue(table.apply(parseBabelLine("change interface m0 up true")))
        self.assertTrue(table.apply(parseBabelLine("flush interface m0 up false")))
        self.assertFalse(table.apply(parseBabelLine("flush interface m0 up false")))
        self.assertEqual(table.interfaces(), [])

    def test_flushByIdWhateverTheDescription(self):
        table = tableFrom(captured("babel_dump.txt"))
        table.apply(
            parseBabelLine(
                "flush route 55ddb5f6f250 prefix 10.251.0.2/32 from 0.0.0.0/0 installed no "
                f"id {ROUTER_B} metric 65535 refmetric 65535 via {VIA_B} if m0"
            )
        )
        self.assertNotIn("55ddb5f6f250", [r.id for r in table.routes()])

    def test_clear(self):
        table = tableFrom(captured("babel_dump.txt"))
        table.clear()
        self.assertEqual((table.routes(), table.neighbours(), table.xroutes(), table.interfaces()), ([], [], [], []))


class SelectionTests(SynchronousTestCase):
    def test_hostCandidatesFromDump(self):
        """
        The host routes of the other two nodes, each by its installed
        route; not the mesh subnets, the default route or a's own xroutes.
        """
        candidates = hostCandidates(tableFrom(captured("babel_dump.txt")).routes())
        self.assertEqual(
            candidates,
            [
                Candidate(ip_address("10.251.0.2"), 96.0, "babel", VIA_B, "m0"),
                Candidate(ip_address("fd00:251::2"), 96.0, "babel", VIA_B, "m0"),
                Candidate(ip_address("10.251.0.3"), 192.0, "babel", VIA_B, "m0"),
                Candidate(ip_address("fd00:251::3"), 192.0, "babel", VIA_B, "m0"),
            ],
        )

    def test_sourceName(self):
        candidates = hostCandidates(tableFrom(captured("babel_dump.txt")).routes(), source="babel-mesh2")
        self.assertEqual({x.source for x in candidates}, {"babel-mesh2"})

    def test_installedRouteWinsOverLowerMetric(self):
        """
        babeld's choice (installed) stands even when another route has a
        lower metric (babeld smooths metrics and has hysteresis): the
        captured dump has such a pair for 10.99.2.0/24.
        """
        routes = tableFrom(captured("babel_dump.txt")).routes()
        [chosen] = [r for r in selectedRoutes(routes) if r.prefix == ip_network("10.99.2.0/24")]
        self.assertEqual((chosen.installed, chosen.metric, chosen.interface), (True, 400, "m1"))

    def test_lowestMetricAmongNotInstalled(self):
        routes = [
            r for r in tableFrom(captured("babel_dump.txt")).routes() if r.prefix == ip_network("10.99.3.0/24")
        ]
        self.assertEqual([r.metric for r in selectedRoutes(routes)], [192])

    def test_retractionsAreNotCandidates(self):
        route = parseBabelLine(
            "change route 55ddb5f6e3b0 prefix 10.251.0.33/32 from 0.0.0.0/0 installed yes "
            f"id {ROUTER_C} metric 65535 refmetric 65535 via {VIA_C} if m1"
        ).entry
        self.assertEqual(hostCandidates([route]), [])

    def test_sourceSpecificAndUnusable(self):
        lines = [
            f"add route 1 prefix 10.7.0.1/32 from 10.0.0.0/8 installed yes id {ROUTER_B} metric 5 refmetric 0 via {VIA_B} if m0",
            f"add route 2 prefix 127.0.0.1/32 from 0.0.0.0/0 installed yes id {ROUTER_B} metric 5 refmetric 0 via {VIA_B} if m0",
            f"add route 3 prefix ff02::1/128 from ::/0 installed yes id {ROUTER_B} metric 5 refmetric 0 via {VIA_B} if m0",
            f"add route 4 prefix fe80::1/128 from ::/0 installed yes id {ROUTER_B} metric 5 refmetric 0 via {VIA_B} if m0",
        ]
        self.assertEqual(hostCandidates(tableFrom(lines).routes()), [])

    def test_defaultRoutes(self):
        [default] = defaultRoutes(tableFrom(captured("babel_dump.txt")).routes())
        self.assertEqual(
            (str(default.prefix), default.routerId, default.metric, default.installed),
            ("0.0.0.0/0", ROUTER_C, 192, True),
        )

    def test_monitorHistory(self):
        """
        Replaying the monitor stream: the dump, 10.251.0.33 appearing on c
        and being retracted, b's babeld stopping (b's addresses briefly
        reachable through c, c's addresses moving to the direct link, b
        gone), a's link to b going down.
        """
        table = BabelTable()
        history = []
        for line in captured("babel_monitor.txt"):
            event = parseBabelLine(line)
            if event is None:
                continue
            table.apply(event)
            addresses = [(str(x.address), x.distance) for x in hostCandidates(table.routes())]
            if not history or history[-1] != addresses:
                history.append(addresses)
        full = [("10.251.0.2", 96), ("fd00:251::2", 96), ("10.251.0.3", 192), ("fd00:251::3", 192)]
        self.assertIn(full, history)
        self.assertIn(full + [("10.251.0.33", 400)], history)
        after = history.index(full + [("10.251.0.33", 400)])
        self.assertEqual(history[after + 1], full)
        self.assertEqual(history[-1], [("10.251.0.3", 400), ("fd00:251::3", 400)])
        self.assertEqual([str(r.prefix) for r in defaultRoutes(table.routes())], ["0.0.0.0/0"])
        self.assertEqual(summary(hostCandidates(table.routes()))[0][2], "m1")
        self.assertEqual({i.name: i.up for i in table.interfaces()}, {"m0": False, "m1": True})
