"""
Tests for L{mnigs.routing.babel}: the local-socket protocol, the route
source and its watch, against babeld's captured output played by the test.
"""

import os
from ipaddress import ip_address

from twisted.internet.defer import CancelledError, TimeoutError, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from mnigs.interfaces import IRouteSource
from mnigs.routing.babel import (
    BabelCommandRefused,
    BabelProtocolError,
    BabelRouteSource,
    BabelSocketProtocol,
    BabelWatch,
)

DATA = os.path.join(os.path.dirname(__file__), "data")
GREETING = b"BABEL 1.0\nversion babeld-1.12.1\nhost vm\nmy-id d0:59:86:0d:7c:e9:e2:bf\nok\n"
VIA_B = "fe80::fcb7:9cff:fea1:4ab5"
ROUTER_C = "bc:5c:6d:43:e4:70:a3:27"


def captured(name):
    with open(os.path.join(DATA, name), "rb") as f:
        return f.read()


def dumpBody():
    """
    The captured dump without its greeting: what babeld sends after a
    C{dump} request, final C{ok} included.
    """
    return captured("babel_dump.txt")[len(GREETING) :]


def hostRoute(number, prefix, metric, action="add"):
    return (
        f"{action} route {number} prefix {prefix} from 0.0.0.0/0 installed yes "
        f"id {ROUTER_C} metric {metric} refmetric 0 via {VIA_B} if m0\n"
    ).encode()


@implementer(IStreamClientEndpoint)
class FakeBabeld:
    """
    An endpoint where each C{connect} succeeds at once over a
    L{StringTransport}; the test then plays babeld.
    """

    def __init__(self):
        self.connections = []
        self.refusing = False

    def connect(self, factory):
        if self.refusing:
            return fail(ConnectionRefusedError())
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.connections.append((protocol, transport))
        return succeed(protocol)

    @property
    def protocol(self):
        return self.connections[-1][0]

    @property
    def transport(self):
        return self.connections[-1][1]

    def say(self, data):
        self.protocol.dataReceived(data)

    def hangUp(self):
        self.transport.disconnecting = True
        self.protocol.connectionLost(Failure(ConnectionDone()))


class BabelSocketProtocolTests(SynchronousTestCase):
    def setUp(self):
        self.events = []
        self.protocol = BabelSocketProtocol(self.events.append)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def test_greeting(self):
        greeted = self.protocol.whenGreeted()
        self.protocol.dataReceived(GREETING[:20])
        self.assertNoResult(greeted)
        self.protocol.dataReceived(GREETING[20:])
        self.assertEqual(
            self.successResultOf(greeted),
            {"BABEL": "1.0", "version": "babeld-1.12.1", "host": "vm", "my-id": "d0:59:86:0d:7c:e9:e2:bf"},
        )
        self.assertEqual(self.transport.value(), b"")

    def test_requestFiresOnOk(self):
        self.protocol.dataReceived(GREETING)
        dumped = self.protocol.request("dump")
        self.assertEqual(self.transport.value(), b"dump\n")
        self.protocol.dataReceived(dumpBody()[:-3])
        self.assertNoResult(dumped)
        self.protocol.dataReceived(b"ok\n")
        self.assertIsNone(self.successResultOf(dumped))
        self.assertEqual(len(self.events), 21)
        self.assertEqual({e.action for e in self.events}, {"add"})

    def test_answersInOrder(self):
        self.protocol.dataReceived(GREETING)
        first = self.protocol.request("interface m9")
        second = self.protocol.request("dump")
        self.protocol.dataReceived(b"bad\nok\n")
        self.assertEqual(self.failureResultOf(first, BabelCommandRefused).value.args, ("bad",))
        self.successResultOf(second)

    def test_no(self):
        self.protocol.dataReceived(GREETING)
        refused = self.protocol.request("flush interface m9")
        self.protocol.dataReceived(b"no unknown interface\n")
        self.assertEqual(self.failureResultOf(refused, BabelCommandRefused).value.args, ("no unknown interface",))

    def test_crlfAndUnknownLinesTolerated(self):
        self.protocol.dataReceived(GREETING.replace(b"\n", b"\r\n"))
        self.protocol.dataReceived(b"add teapot 1 colour blue\r\n\xff\xfe\r\nchange interface m0 up false\r\n")
        self.assertEqual(len(self.events), 1)
        self.assertEqual(self.protocol.info["host"], "vm")

    def test_otherProtocolVersion(self):
        greeted = self.protocol.whenGreeted()
        self.protocol.dataReceived(b"BABEL 2.0\n")
        self.failureResultOf(greeted, BabelProtocolError)
        self.assertTrue(self.transport.disconnecting)

    def test_connectionLostFailsWhatIsAwaited(self):
        self.protocol.dataReceived(GREETING)
        dumped = self.protocol.request("dump")
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(dumped, ConnectionDone)

    def test_cancelledAnswerStillConsumesItsOk(self):
        greeted = self.protocol.whenGreeted()
        greeted.cancel()
        self.failureResultOf(greeted, CancelledError)
        self.protocol.dataReceived(GREETING)
        dumped = self.protocol.request("dump")
        self.assertNoResult(dumped)
        self.protocol.dataReceived(b"ok\n")
        self.successResultOf(dumped)

    def test_unrequestedOkIgnored(self):
        self.protocol.dataReceived(GREETING + b"ok\n")
        dumped = self.protocol.request("dump")
        self.assertNoResult(dumped)
        self.protocol.dataReceived(b"ok\n")
        self.successResultOf(dumped)


class BabelRouteSourceTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.babeld = FakeBabeld()
        self.source = BabelRouteSource(self.clock, endpoint=self.babeld, timeout=5)

    def test_providesIRouteSource(self):
        self.assertTrue(verifyObject(IRouteSource, self.source))
        self.assertEqual(self.source.name, "babel")

    def test_candidates(self):
        found = self.source.candidates()
        self.babeld.say(GREETING)
        self.assertEqual(self.babeld.transport.value(), b"dump\n")
        self.babeld.say(dumpBody())
        candidates = self.successResultOf(found)
        self.assertEqual(
            [(str(c.address), c.distance, c.source, c.via, c.interface) for c in candidates],
            [
                ("10.251.0.2", 96.0, "babel", VIA_B, "m0"),
                ("fd00:251::2", 96.0, "babel", VIA_B, "m0"),
                ("10.251.0.3", 192.0, "babel", VIA_B, "m0"),
                ("fd00:251::3", 192.0, "babel", VIA_B, "m0"),
            ],
        )
        self.assertTrue(self.babeld.transport.disconnecting)

    def test_defaultRoutes(self):
        found = self.source.defaultRoutes()
        self.babeld.say(GREETING + dumpBody())
        [route] = self.successResultOf(found)
        self.assertEqual((str(route.prefix), route.routerId, route.metric), ("0.0.0.0/0", ROUTER_C, 192))

    def test_refused(self):
        self.babeld.refusing = True
        self.failureResultOf(self.source.candidates(), ConnectionRefusedError)

    def test_silentBabeldTimesOut(self):
        found = self.source.candidates()
        self.babeld.say(GREETING[:10])
        self.clock.advance(5)
        self.failureResultOf(found, TimeoutError)
        self.assertTrue(self.babeld.transport.disconnected)

    def test_lostMidDump(self):
        found = self.source.candidates()
        self.babeld.say(GREETING + dumpBody()[:300])
        self.babeld.hangUp()
        self.failureResultOf(found, ConnectionDone)

    def test_defaultEndpointIsTCP6(self):
        source = BabelRouteSource(self.clock, host="::1", port=33124)
        self.assertEqual((source._endpoint._host, source._endpoint._port), ("::1", 33124))


class BabelWatchTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.babeld = FakeBabeld()
        self.changes = []
        self.source = BabelRouteSource(self.clock, endpoint=self.babeld, timeout=5, debounce=0.5)

    def startWatching(self):
        watcher = self.source.watch(lambda: self.changes.append(self.clock.seconds()))
        self.assertIsInstance(watcher, BabelWatch)
        self.babeld.say(GREETING)
        self.assertEqual(self.babeld.transport.value(), b"monitor\n")
        self.babeld.say(dumpBody())
        return watcher

    def test_firstDumpIsAChange(self):
        """
        The watch starts from "no candidates": a client that started before
        babeld hears about the routes once they are there.
        """
        watcher = self.startWatching()
        self.assertEqual(self.changes, [0])
        self.assertEqual(len(watcher.candidates()), 4)

    def test_emptyFirstDumpIsNoChange(self):
        self.source.watch(lambda: self.changes.append(self.clock.seconds()))
        self.babeld.say(GREETING + b"add interface m0 up true\nok\n")
        self.clock.advance(1)
        self.assertEqual(self.changes, [])

    def test_repeatedChangeLinesAreNoChange(self):
        self.startWatching()
        monitor = captured("babel_monitor.txt").splitlines(keepends=True)
        self.babeld.say(b"".join(monitor[27:120]))
        self.clock.advance(10)
        self.assertEqual(self.changes, [0])

    def test_newHostRouteCoalesced(self):
        watcher = self.startWatching()
        self.clock.advance(3)
        self.babeld.say(hostRoute("aa01", "10.251.0.40/32", 300))
        self.clock.advance(0.25)
        self.babeld.say(hostRoute("aa02", "10.251.0.41/32", 310))
        self.assertEqual(self.changes, [0])
        self.clock.advance(0.25)
        self.assertEqual(self.changes, [0, 3.5])
        self.assertEqual([str(c.address) for c in watcher.candidates()][-2:], ["10.251.0.40", "10.251.0.41"])

    def test_retractionAndFlushAreChanges(self):
        self.startWatching()
        self.babeld.say(hostRoute("55ddb5f6f250", "10.251.0.2/32", 65535, "change"))
        self.clock.advance(0.5)
        self.babeld.say(hostRoute("55ddb5f6fc90", "10.251.0.3/32", 65535, "flush"))
        self.clock.advance(0.5)
        self.assertEqual(self.changes, [0, 0.5, 1.0])

    def test_nonHostRouteIsNoChange(self):
        self.startWatching()
        self.babeld.say(hostRoute("bb01", "10.77.0.0/24", 100))
        self.clock.advance(1)
        self.assertEqual(self.changes, [0])

    def test_reconnectsWithBackoff(self):
        watcher = self.startWatching()
        self.babeld.hangUp()
        self.babeld.refusing = True
        self.clock.advance(1)
        self.assertEqual(len(self.babeld.connections), 1)
        self.babeld.refusing = False
        self.clock.advance(60)
        self.assertEqual(len(self.babeld.connections), 2)
        self.babeld.say(GREETING)
        self.assertEqual(self.babeld.transport.value(), b"monitor\n")
        self.babeld.say(dumpBody())
        self.assertEqual(self.changes, [0], "same routes after the restart")
        self.babeld.hangUp()
        self.clock.advance(60)
        self.babeld.say(GREETING + b"ok\n")
        self.assertEqual(self.changes, [0, 121], "babeld came back with no routes")
        self.assertEqual(watcher.candidates(), [])

    def test_silentBabeldIsDroppedAndRetried(self):
        self.source.watch(lambda: self.changes.append(self.clock.seconds()))
        first = self.babeld.transport
        self.clock.advance(5)
        self.assertTrue(first.disconnected)
        self.flushLoggedErrors()
        self.clock.advance(60)
        self.assertEqual(len(self.babeld.connections), 2)

    def test_stop(self):
        watcher = self.startWatching()
        self.babeld.say(hostRoute("aa01", "10.251.0.40/32", 300))
        stopped = watcher.stop()
        self.assertTrue(self.babeld.transport.disconnecting)
        self.babeld.hangUp()
        self.successResultOf(stopped)
        self.clock.advance(120)
        self.assertEqual(self.changes, [0])
        self.assertEqual(len(self.babeld.connections), 1)

    def test_stopTwice(self):
        watcher = self.startWatching()
        stopped = watcher.stop()
        again = watcher.stop()
        self.babeld.hangUp()
        self.successResultOf(stopped)
        self.successResultOf(again)

    def test_stopFromStopCallback(self):
        watcher = self.startWatching()
        stopped = watcher.stop()
        stopped.addCallback(lambda _: watcher.stop())
        self.babeld.hangUp()
        self.successResultOf(stopped)

    def test_stopBeforeTheGreetingTellsTheServiceNothingMore(self):
        """
        Stopped while babeld has not greeted yet (the monitor is still
        being prepared): the attempt is cancelled and its connection
        aborted.  Twisted's ClientService has already counted the attempt
        as failed and has no transition for a connection lost after that:
        it logged C{NoTransition} as critical when one got through.
        """
        failures = []
        globalLogPublisher.addObserver(failures.append)
        self.addCleanup(globalLogPublisher.removeObserver, failures.append)
        watcher = self.source.watch(self.changes.append)
        stopped = watcher.stop()
        self.babeld.hangUp()
        self.successResultOf(stopped)
        self.assertEqual([e for e in failures if e.get("log_level") == LogLevel.critical], [])

    def test_aGreetingTimeoutRetriesWithoutNoTransition(self):
        failures = []
        globalLogPublisher.addObserver(failures.append)
        self.addCleanup(globalLogPublisher.removeObserver, failures.append)
        self.source.watch(self.changes.append)
        self.clock.advance(5)  # no greeting within the timeout
        self.babeld.hangUp()
        self.clock.advance(2)  # the retry
        self.assertEqual(len(self.babeld.connections), 2)
        self.assertEqual([e for e in failures if e.get("log_level") == LogLevel.critical], [])

    def test_stopWhileRetrying(self):
        self.babeld.refusing = True
        watcher = self.source.watch(self.changes.append)
        self.successResultOf(watcher.stop())
        self.clock.advance(120)
        self.assertEqual(self.babeld.connections, [])


class AddressesTests(SynchronousTestCase):
    def test_candidateAddressesAreIPAddresses(self):
        clock, babeld = Clock(), FakeBabeld()
        found = BabelRouteSource(clock, endpoint=babeld).candidates()
        babeld.say(GREETING + dumpBody())
        self.assertEqual(self.successResultOf(found)[0].address, ip_address("10.251.0.2"))
