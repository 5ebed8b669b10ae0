"""
Tests for L{mnigs.server.uplink}: the checks (a fake netlink, a fake
pinger) and L{UplinkMonitor} on a Clock.
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from mnigs.interfaces import IPinger, IUplinkCheck
from mnigs.server.uplink import DefaultRouteCheck, LinkCheck, PingCheck, UplinkMonitor


class FakeNetlink:
    def __init__(self, up=True, defaults=(4,)):
        self.up = up
        self.defaults = set(defaults)

    def linkIsUp(self, ifname):
        if self.up is None:
            raise LookupError(f"no interface {ifname}")
        return self.up

    def hasDefaultRoute(self, family):
        return family in self.defaults


@implementer(IPinger)
class FakePinger:
    """Probes stay out until the test answers them (or the timeout passes)."""

    def __init__(self, clock, unreachable=()):
        self.clock = clock
        self.unreachable = set(unreachable)
        self.probes = {}
        self.closed = False

    def ping(self, address, timeout):
        if address in self.unreachable:
            raise OSError(101, "Network is unreachable")
        d = defer.Deferred()
        self.probes[address] = (d, timeout)
        call = self.clock.callLater(timeout, lambda: d.called or d.callback(None))
        d.addBoth(lambda r: (call.active() and call.cancel(), r)[1])
        return d

    def answer(self, address, rtt=0.01):
        self.probes[address][0].callback(rtt)

    def close(self):
        self.closed = True


class Recorder:
    """The gateway machine's uplink inputs, as a list of events."""

    def __init__(self):
        self.events = []

    def uplinkUp(self):
        self.events.append("up")

    def uplinkDown(self, reason):
        self.events.append(("down", reason))


@implementer(IUplinkCheck)
class ScriptedCheck:
    """Answers with the next Deferred the test hands it."""

    def __init__(self):
        self.pending = []
        self.calls = 0

    def check(self):
        self.calls += 1
        d = defer.Deferred()
        self.pending.append(d)
        return d


class ChecksTests(SynchronousTestCase):
    def test_interfaces(self):
        clock = Clock()
        for check in (LinkCheck(FakeNetlink(), "eth0"), DefaultRouteCheck(FakeNetlink()),
                      PingCheck(clock, ["192.0.2.1"], makePinger=lambda: FakePinger(clock))):
            verifyObject(IUplinkCheck, check)
        verifyObject(IPinger, FakePinger(clock))

    def test_linkCheck(self):
        self.assertIsNone(self.successResultOf(LinkCheck(FakeNetlink(up=True), "eth0").check()))
        self.assertEqual(self.successResultOf(LinkCheck(FakeNetlink(up=False), "eth0").check()),
                         "uplink eth0 is down")
        self.assertEqual(self.successResultOf(LinkCheck(FakeNetlink(up=None), "eth0").check()),
                         "uplink eth0: no interface eth0")

    def test_defaultRouteCheckTakesEitherFamily(self):
        for defaults, expected in (((4,), None), ((6,), None), ((4, 6), None),
                                   ((), "no default route")):
            check = DefaultRouteCheck(FakeNetlink(defaults=defaults))
            self.assertEqual(self.successResultOf(check.check()), expected, defaults)


class PingCheckTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.pingers = []

    def check(self, targets, timeout=0.5, unreachable=()):
        def makePinger():
            pinger = FakePinger(self.clock, unreachable)
            self.pingers.append(pinger)
            return pinger
        return PingCheck(self.clock, targets, timeout, makePinger=makePinger)

    def test_oneAnswerIsEnough(self):
        d = self.check(["192.0.2.1", "2001:db8::1"]).check()
        [pinger] = self.pingers
        self.assertEqual({a: t for a, (_, t) in pinger.probes.items()},
                         {"192.0.2.1": 0.5, "2001:db8::1": 0.5})
        pinger.answer("2001:db8::1")
        self.assertNoResult(d)  # the other is still out
        self.clock.advance(0.5)
        self.assertIsNone(self.successResultOf(d))
        self.assertTrue(pinger.closed)

    def test_aZeroRoundTripIsAnAnswer(self):
        d = self.check(["127.0.0.1"]).check()
        self.pingers[0].answer("127.0.0.1", rtt=0.0)
        self.assertIsNone(self.successResultOf(d))

    def test_noAnswerWithinTheTimeout(self):
        d = self.check(["192.0.2.1", "192.0.2.2"], timeout=0.3).check()
        self.clock.advance(0.29)
        self.assertNoResult(d)
        self.clock.advance(0.01)
        self.assertEqual(self.successResultOf(d), "no answer from 192.0.2.1, 192.0.2.2")
        self.assertTrue(self.pingers[0].closed)

    def test_aProbeThatCannotBeSentDoesNotAnswer(self):
        d = self.check(["192.0.2.1", "192.0.2.9"], unreachable={"192.0.2.9"}).check()
        self.pingers[0].answer("192.0.2.1")
        self.assertIsNone(self.successResultOf(d))
        d = self.check(["192.0.2.9"], unreachable={"192.0.2.9"}).check()
        self.assertEqual(self.successResultOf(d), "no answer from 192.0.2.9")

    def test_aPingerPerRound(self):
        check = self.check(["192.0.2.1"])
        for _ in range(2):
            d = check.check()
            self.clock.advance(1)
            self.successResultOf(d)
        self.assertEqual([p.closed for p in self.pingers], [True, True])

    def test_targetsAreText(self):
        import ipaddress
        check = self.check([ipaddress.ip_address("192.0.2.1")])
        check.check()
        self.assertEqual(list(self.pingers[0].probes), ["192.0.2.1"])


class UplinkMonitorTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.gateway = Recorder()
        self.first, self.second = ScriptedCheck(), ScriptedCheck()
        self.monitor = UplinkMonitor(self.clock, [self.first, self.second], 2.0, self.gateway)

    def test_checksRunInOrderFromTheStart(self):
        self.monitor.start()
        self.assertEqual((self.first.calls, self.second.calls), (1, 0))
        self.first.pending.pop().callback(None)
        self.assertEqual(self.second.calls, 1)
        self.second.pending.pop().callback(None)
        self.assertEqual(self.gateway.events, ["up"])

    def test_theFirstReasonWins(self):
        self.monitor.start()
        self.first.pending.pop().callback("uplink eth0 is down")
        self.assertEqual(self.second.calls, 0)
        self.assertEqual(self.gateway.events, [("down", "uplink eth0 is down")])

    def test_everyInterval(self):
        self.monitor.start()
        for expected in ("up", ("down", "no default route"), "up"):
            self.first.pending.pop().callback(None)
            self.second.pending.pop().callback(None if expected == "up" else expected[1])
            self.clock.advance(2.0)
        self.assertEqual(self.gateway.events, ["up", ("down", "no default route"), "up"])
        self.assertEqual(self.first.calls, 4)

    def test_aSlowRoundMakesTheNextSkip(self):
        self.monitor.start()
        self.clock.advance(2.0)
        self.clock.advance(2.0)
        self.assertEqual(self.first.calls, 1)
        self.first.pending.pop().callback(None)
        self.second.pending.pop().callback(None)
        self.assertEqual(self.gateway.events, ["up"])
        self.clock.advance(2.0)
        self.assertEqual(self.first.calls, 2)

    def test_aCheckThatFailsIsADownUplink(self):
        self.monitor.start()
        self.first.pending.pop().errback(RuntimeError("netlink went away"))
        self.assertEqual(self.gateway.events, [("down", "uplink check failed")])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_stop(self):
        self.monitor.start()
        self.monitor.stop()
        self.monitor.stop()  # twice is harmless
        self.first.pending.pop().callback(None)
        self.second.pending.pop().callback(None)
        self.clock.advance(10)
        self.assertEqual(self.first.calls, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopBeforeStart(self):
        self.monitor.stop()
        self.assertEqual(self.first.calls, 0)
