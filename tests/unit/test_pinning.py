"""
L{mnigs.client.pinning} (make-before-break): the nft chains that mark
each session's flows, the count of running flows, the policy rules of
retired sessions against a fake rtnetlink, the L{Keeper} with a Clock,
and the data path's slots (L{mnigs.client.datapath.ClientDataPath} with a
recording nft runner).  The kernel's side is tests.mesh.test_pinning.
"""

import ipaddress
import socket
import types

from pyroute2.netlink.exceptions import NetlinkError
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mnigs.client.datapath import ClientDataPath, Forwarding, Forwarding6, Passage
from mnigs.client.machine import Session
from mnigs.client.pinning import (
    PIN_MASK,
    SLOTS,
    Keeper,
    KeptSessions,
    PinRouting,
    liveFlows,
    markChains,
    pinMark,
)
from tests.unit import test_effects
from tests.unit.test_effects import Connection, Step, clientConfig
from tests.unit.test_routes import Message
from tests.unit.test_services import Runner

LEASE_A = ipaddress.ip_address("100.64.0.2")
LEASE_B = ipaddress.ip_address("100.64.1.2")


class MarkChainsTests(SynchronousTestCase):
    def test_newFlowsTakeTheirDevicesMarkAndPacketsCarryIt(self):
        """
        A new flow leaving by a session's device takes its slot's mark;
        packets of marked flows carry it in their original direction only,
        from the LAN (prerouting) and from the client itself (a route
        chain, which routes them again).
        """
        script = markChains([("wg1", 2), ("tun0", 1)])
        self.assertIn('oifname "wg1" ct mark 0 ct mark set 0x00006d02\n', script)
        self.assertIn('oifname "tun0" ct mark 0 ct mark set 0x00006d01\n', script)
        self.assertIn("type filter hook postrouting priority mangle", script)
        self.assertIn("type filter hook prerouting priority mangle", script)
        self.assertIn("type route hook output priority mangle", script)
        self.assertEqual(script.count("ct direction original ct mark and 0x0000fff0 == "
                                      "0x00006d00 meta mark set ct mark"), 2)

    def test_namesAndSlotsAreChecked(self):
        self.assertRaises(ValueError, markChains, [('wg0"; flush ruleset', 1)])
        self.assertRaises(ValueError, markChains, [("wg0", 0)])
        self.assertRaises(ValueError, pinMark, 16)
        self.assertEqual(pinMark(15) & PIN_MASK, pinMark(15))
        self.assertEqual(pinMark(1) & 0x5DFF0000, 0, "the share, hop and reroute marks' bits stay free")


def entry(state=None, proto=socket.IPPROTO_TCP):
    info = None if state is None else types.SimpleNamespace(state=state)
    return types.SimpleNamespace(protoinfo=info, tuple_orig=types.SimpleNamespace(proto=proto))


class LiveFlowsTests(SynchronousTestCase):
    def test_endedTCPFlowsAndPingsDoNotCount(self):
        established, timeWait, close, finWait = 3, 7, 8, 4
        self.assertEqual(liveFlows([entry(established), entry(timeWait), entry(close),
                                    entry(finWait), entry(proto=socket.IPPROTO_UDP),
                                    entry(proto=socket.IPPROTO_ICMP),
                                    entry(proto=socket.IPPROTO_ICMPV6)]), 3)
        self.assertEqual(liveFlows([]), 0)


class FakeIPRoute:
    """Rules as (family, priority, fwmark, fwmask, table); routes by table."""

    def __init__(self, kernel):
        self.kernel = kernel

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def link_lookup(self, ifname):
        return [index for index, name in self.kernel.links.items() if name == ifname]

    def get_rules(self, family):
        return [Message({"FRA_PRIORITY": priority, "FRA_FWMARK": mark, "FRA_TABLE": table},
                        table=252, family=family)
                for f, priority, mark, _, table in self.kernel.rules if f == family]

    def rule(self, command, family, priority, fwmark, fwmask, table):
        rule = (family, priority, fwmark, fwmask, table)
        if command == "add":
            self.kernel.rules.append(rule)
        elif rule in self.kernel.rules:
            self.kernel.rules.remove(rule)
        else:
            raise NetlinkError(2, "No such file or directory")

    def route(self, command, **spec):
        assert command == "replace"
        routes = self.kernel.routes.setdefault(spec.pop("table"), [])
        routes[:] = [r for r in routes if r["dst"] != spec["dst"]] + [spec]

    def get_routes(self, family, table):
        attrs = {"oif": "RTA_OIF", "gateway": "RTA_GATEWAY", "prefsrc": "RTA_PREFSRC"}
        return [Message({attrs[k]: v for k, v in r.items() if k in attrs},
                        dst_len=int(r["dst"].split("/")[1]), type=r.get("type", 1))
                for r in self.kernel.routes.get(table, []) if r["family"] == family]

    def flush_routes(self, table, family):
        kept = [r for r in self.kernel.routes.get(table, []) if r["family"] != family]
        self.kernel.routes[table] = kept
        if not kept:
            del self.kernel.routes[table]


class PinRoutingTests(SynchronousTestCase):
    def setUp(self):
        self.kernel = types.SimpleNamespace(links={1: "lo", 5: "wg-a", 6: "tap-b"}, rules=[],
                                            routes={})
        self.routing = PinRouting(8150, 8150, ipRoute=lambda: FakeIPRoute(self.kernel))
        self.fake = FakeIPRoute(self.kernel)

    def mnigsRoutes(self, *routes):
        for route in routes:
            self.fake.route("replace", table=8150, **route)

    def test_pinCopiesMnigsDefaultRoutesThroughTheOldDevice(self):
        """
        Slot 2: C{fwmark 0x6d02/0xffff lookup 8152} before mnigs's own
        rules (8149), and table 8152 the default routes mnigs's table has
        through the old tunnel, with their source addresses; IPv6's too.
        Pinning again replaces, unpinning removes both.
        """
        self.mnigsRoutes({"family": socket.AF_INET, "dst": "0.0.0.0/0", "oif": 5,
                          "prefsrc": "100.64.0.2"},
                         {"family": socket.AF_INET6, "dst": "200::/7", "type": 9},
                         {"family": socket.AF_INET6, "dst": "::/0", "oif": 5,
                          "prefsrc": "fd64::2"})
        self.routing.pin(2, "wg-a")
        self.routing.pin(2, "wg-a")
        self.assertEqual(sorted(self.kernel.rules), [
            (socket.AF_INET, 8149, 0x6D02, PIN_MASK, 8152),
            (socket.AF_INET6, 8149, 0x6D02, PIN_MASK, 8152)])
        self.assertEqual(self.kernel.routes[8152], [
            {"family": socket.AF_INET, "dst": "0.0.0.0/0", "oif": 5, "prefsrc": "100.64.0.2"},
            {"family": socket.AF_INET6, "dst": "::/0", "oif": 5, "prefsrc": "fd64::2"}])
        self.routing.unpin(2)
        self.assertEqual(self.kernel.rules, [])
        self.assertNotIn(8152, self.kernel.routes)

    def test_aNextHopIsKeptAndIPv4AloneIsIPv4Alone(self):
        self.mnigsRoutes({"family": socket.AF_INET, "dst": "0.0.0.0/0", "oif": 6,
                          "gateway": "100.64.9.1"})
        self.routing.pin(1, "tap-b")
        self.assertEqual([r[0] for r in self.kernel.rules], [socket.AF_INET])
        self.assertEqual(self.kernel.routes[8151], [
            {"family": socket.AF_INET, "dst": "0.0.0.0/0", "oif": 6, "gateway": "100.64.9.1"}])

    def test_nothingThroughTheDeviceIsAnError(self):
        """
        mnigs's table routes through another device (or the device is
        gone): nothing can be pinned, and nothing is.
        """
        self.mnigsRoutes({"family": socket.AF_INET, "dst": "0.0.0.0/0", "oif": 6})
        self.assertRaises(LookupError, self.routing.pin, 1, "wg-a")
        self.assertRaises(LookupError, self.routing.pin, 1, "wg-gone")
        self.assertEqual(self.kernel.rules, [])
        self.assertNotIn(8151, self.kernel.routes)

    def test_clearRemovesEverySlotAndNothingElse(self):
        self.mnigsRoutes({"family": socket.AF_INET, "dst": "0.0.0.0/0", "oif": 5})
        self.routing.pin(1, "wg-a")
        self.routing.pin(15, "wg-a")
        self.kernel.rules.append((socket.AF_INET, 8149, 0xCA6C, 0xFFFFFFFF, 51820))  # not ours
        self.routing.clear()
        self.assertEqual(self.kernel.rules, [(socket.AF_INET, 8149, 0xCA6C, 0xFFFFFFFF, 51820)])
        self.assertEqual(list(self.kernel.routes), [8150])


class KeeperTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.counts = []

    def count(self):
        value = self.counts.pop(0)
        if isinstance(value, Exception):
            raise value
        return value

    def test_endsOnceNoFlowIsLeft(self):
        self.counts = [3, 1, 0]
        keeper = Keeper(self.clock, self.count, limit=600, interval=2)
        done = keeper.start()
        self.clock.advance(2)
        self.assertEqual(keeper.describe(), {"connections": 3, "kept_at_most_for_s": 598})
        self.clock.advance(2)
        self.assertNoResult(done)
        self.clock.advance(2)
        self.assertEqual(self.successResultOf(done), "none of its connections is left")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_endsAtTheLimitWhateverIsLeft(self):
        self.counts = [5] * 10 + [RuntimeError("netlink said no")] * 10
        keeper = Keeper(self.clock, self.count, limit=30, interval=2)
        done = keeper.start()
        self.clock.pump([2] * 14)
        self.assertNoResult(done)
        self.clock.advance(2)
        self.assertEqual(self.successResultOf(done), "routing.keep_old (30 s) is over")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_endedFromOutsideOnce(self):
        keeper = Keeper(self.clock, self.count, limit=30)
        done = keeper.start()
        keeper.end("its lease was lost")
        keeper.end("the client stops")
        self.assertEqual(self.successResultOf(done), "its lease was lost")
        self.assertEqual(self.clock.getDelayedCalls(), [])


class DataPathSlotTests(SynchronousTestCase):
    def build(self, prefixes=("192.168.7.0/24",)):
        self.runner = Runner()
        paths = []
        for _ in range(2):
            paths.append(self.mktemp())
            with open(paths[-1], "w") as f:
                f.write("0\n")
        self.forgotten = []
        # what was forgotten by address (test_datapath: the LAN's untranslated flows)
        flows = types.SimpleNamespace(forget=lambda addresses, *shared: (
            self.forgotten.append(sorted(map(str, addresses))) if addresses else None) or 1)
        return ClientDataPath(self.runner, "mnigs_client", prefixes, (), True,
                              Forwarding(paths[0]), Forwarding6(paths[1]), flows, pinning=True)

    def test_aRetiredSessionKeepsItsMarksAndLANFlowsUntilReleased(self):
        """
        Each session takes its slot's mark; a retired one keeps it (and
        its LAN flows' translation to its lease's address) beside the
        next session's until it is released.
        """
        data = self.build()
        self.successResultOf(data.start())
        self.successResultOf(data.online(Passage("wg-a", LEASE_A, 1420)))
        self.assertIn('oifname "wg-a" ct mark 0 ct mark set 0x00006d01', self.runner.scripts[-1])
        slot = data.retire()
        self.assertEqual(slot, 1)
        self.successResultOf(data.online(Passage("tun-b", LEASE_B, 1400)))
        script = self.runner.scripts[-1]
        self.assertIn('oifname "tun-b" ct mark 0 ct mark set 0x00006d02', script)
        self.assertIn('oifname "wg-a" ct mark 0 ct mark set 0x00006d01', script)
        self.assertIn("snat ip to 100.64.1.2", script)
        self.assertNotIn("100.64.0.2", script)
        self.assertEqual(self.forgotten, [])
        self.successResultOf(data.release(slot))
        self.assertNotIn('"wg-a"', self.runner.scripts[-1])
        self.assertEqual(self.forgotten, [["100.64.0.2"]])
        self.successResultOf(data.release(slot))  # once
        self.assertEqual(self.forgotten, [["100.64.0.2"]])

    def test_slotsRotateAndRunOut(self):
        """
        A new session takes the next free slot after the last one given;
        with every slot kept it takes none, and cannot be kept.
        """
        data = self.build(prefixes=())
        slots = []
        for k in SLOTS:
            data.online(Passage("wg-a", LEASE_A))
            slots.append(data.retire())
        self.assertEqual(slots, list(SLOTS))
        data.online(Passage("wg-a", LEASE_A))
        self.assertIsNone(data.retire())
        self.assertNotIn("ct mark set 0x00006d10", self.runner.scripts[-1])
        data.release(3)
        data.release(7)
        data.online(Passage("wg-a", LEASE_A))
        self.assertEqual(data.retire(), 3)

    def test_withoutPinningNoMarks(self):
        data = self.build()
        data.pinning = False
        data.online(Passage("wg-a", LEASE_A))
        self.assertIsNone(data.retire())
        self.assertNotIn("ct mark", self.runner.scripts[-1])

    def test_offlineKeepsTheRetired(self):
        data = self.build()
        data.online(Passage("wg-a", LEASE_A))
        data.retire()
        data.online(Passage("wg-b", LEASE_B))
        data.offline()
        self.assertEqual(self.forgotten, [["100.64.1.2"]])
        self.assertIn('"wg-a"', self.runner.scripts[-1])
        self.assertNotIn('"wg-b"', self.runner.scripts[-1])


class FakePins:
    def __init__(self):
        self.pinned = {}

    def pin(self, slot, device):
        if device == "gone":
            raise LookupError("no interface gone")
        self.pinned[slot] = device

    def unpin(self, slot):
        del self.pinned[slot]


class FakeRPC:
    def __init__(self):
        self.calls = []

    def call(self, host, port, method, params, timeout=None):
        d = defer.Deferred()
        self.calls.append((method, params.get("lease"), d))
        return d

    def methods(self):
        return [call[0] for call in self.calls]


class HandOverTests(test_effects.EffectsTestCase):
    """
    L{ClientEffects.handOver}: the old session's flows pinned before
    mnigs's route moves, the old session ended as a session and kept with
    its lease renewed until its keeper lets it go; its tunnel and lease
    then go.  Real L{ClientDataPath} (recording nft runner) and
    L{KeptSessions}; recording pins, counter, RPC and method.
    """

    class Method:
        slots = 6

        def __init__(self):
            self.calls = []
            self.made = 0

        def connect(self, step, lease, route=True):
            connection = Connection()
            connection.device = f"wg{self.made}"
            self.made += 1
            connection.activate = lambda: self.calls.append(("activate", connection.device))
            return defer.succeed(connection)

    def setUp(self):
        super().setUp()
        self.routing = test_effects.PassageTests.PathRouting()
        self.makeEffects(clientConfig())
        self.method = self.effects.methods["wireguard"] = self.Method()
        self.runner = Runner()
        self.dataPath = self.effects.dataPath = ClientDataPath(
            self.runner, "mnigs_client", clamp=False, pinning=True,
            forwarding=types.SimpleNamespace(), forwarding6=types.SimpleNamespace())
        self.pins = FakePins()
        self.counts = []
        counter = types.SimpleNamespace(count=lambda mark: self.counts.pop(0))
        self.effects.kept = KeptSessions(self.clock, self.dataPath, self.pins, counter, 600)
        self.rpc = self.effects.rpc = FakeRPC()

    def sessions(self):
        lease = self.session().lease
        old = Session(Step(), dict(lease), self.successResultOf(
            self.effects.connect(Step(), lease)), 0)
        new = Session(Step(), dict(lease, id="l2"), self.successResultOf(
            self.effects.connectStandby(Step(), lease)), 0)
        return old, new

    def test_canConnectBesideOnlyWhenTheOldCanBeKept(self):
        old, new = self.sessions()
        self.assertTrue(self.effects.canConnectBeside(old, Step()))
        self.assertFalse(self.effects.canConnectBeside(new, Step()), "not carrying the table")
        self.Method.slots = 1
        self.addCleanup(setattr, self.Method, "slots", 6)
        self.assertFalse(self.effects.canConnectBeside(old, Step()))
        self.Method.slots = 6
        self.effects.kept = None
        self.assertFalse(self.effects.canConnectBeside(old, Step()))

    def test_keptUntilNoConnectionIsLeftThenLetGo(self):
        old, new = self.sessions()
        self.effects.handOver(old, new)
        self.assertEqual(self.pins.pinned, {1: "wg0"})
        self.assertEqual(self.method.calls, [("activate", "wg1")])
        script = self.runner.scripts[-1]
        self.assertIn('oifname "wg1" ct mark 0 ct mark set 0x00006d02', script)
        self.assertIn('oifname "wg0" ct mark 0 ct mark set 0x00006d01', script)
        self.assertEqual(old.connection.disconnected, 0)
        # no standby is planned with the kept session's gateway meanwhile
        self.assertEqual(self.effects.kept.gatewayIds(), {"ed25519:gw"})
        self.assertEqual(self.effects.kept.describe(),
                         [{"gateway": "pdx-gw-1 (10.99.0.5)", "connections": None,
                           "kept_at_most_for_s": 600}])
        self.counts = [3, 0]
        self.clock.advance(2)
        self.assertEqual(old.connection.disconnected, 0)
        self.clock.advance(2)
        self.assertEqual(old.connection.disconnected, 1)
        self.assertEqual(self.pins.pinned, {})
        self.assertNotIn('"wg0"', self.runner.scripts[-1])
        self.assertEqual(self.rpc.methods(), ["gateway.unregister"])
        self.assertEqual(self.effects.kept.describe(), [])
        self.assertEqual(self.effects.kept.gatewayIds(), frozenset())
        self.assertEqual(new.connection.disconnected, 0)

    def test_aLostLeaseLetsGoAtOnce(self):
        from mnigs.protocol import UNKNOWN_LEASE, RPCError

        old, new = self.sessions()
        self.effects.handOver(old, new)
        self.clock.advance(300)  # half the lease: renewed
        self.counts = [1] * 200
        [(method, lease, renewing)] = self.rpc.calls
        self.assertEqual((method, lease), ("gateway.renew", "l1"))
        renewing.errback(RPCError(UNKNOWN_LEASE, "unknown lease"))
        self.assertEqual(old.connection.disconnected, 1)
        self.assertEqual(self.rpc.methods()[-1], "gateway.unregister")

    def test_whatCannotBePinnedEndsAtOnce(self):
        old, new = self.sessions()
        old.connection.device = "gone"
        self.effects.handOver(old, new)
        self.assertEqual(old.connection.disconnected, 1)
        self.assertEqual(self.rpc.methods(), ["gateway.unregister"])
        self.assertEqual(self.method.calls, [("activate", "wg1")])
        self.assertNotIn('"gone"', self.runner.scripts[-1])

    def test_releaseAllOnStop(self):
        old, new = self.sessions()
        self.effects.handOver(old, new)
        self.successResultOf(self.effects.kept.releaseAll("the client stops"))
        self.assertEqual(old.connection.disconnected, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class StatusTests(SynchronousTestCase):
    def test_mnigsctlStatusShowsTheKeptSessions(self):
        from mnigs.cli.ctl import formatStatus

        text = formatStatus({"state": "online", "reason": "", "kept": [
            {"gateway": "gwA (10.251.0.4)", "connections": 2, "kept_at_most_for_s": 580.5},
            {"gateway": "gwC (10.251.0.9)", "connections": None, "kept_at_most_for_s": None}]})
        self.assertIn("kept: gwA (10.251.0.4) for its 2 connection(s), 580.5s more at most", text)
        self.assertIn("kept: gwC (10.251.0.9) for its connections\n", text + "\n")


class MetricsTests(SynchronousTestCase):
    def test_aPlannedMoveCountsAsAMoveByItsKindAndNoOutage(self):
        """
        The real machine with recording effects and the client metrics
        watching its trace: a hand-over to a standby and a move made
        before break count once each (switch; a gateway saying it is
        unavailable by that kind), the state gauge knows handingOver,
        and no outage is counted.
        """
        from mnigs.client.machine import Backoff, ClientCore, makeClient
        from mnigs.client.metrics import ClientMetrics
        from mnigs.client.plan import buildPlan
        from mnigs.client.reasons import SAYS_UNAVAILABLE, SWITCH, UNAVAILABLE, Reason
        from tests.unit.test_client_machine import LEASE, RecordingEffects, ranked
        from tests.unit.test_client_machine import Connection as FakeConnection

        effects = RecordingEffects()
        effects.beside = True
        effects.handOver = lambda old, new: defer.Deferred()
        core = ClientCore(Clock(), effects, Backoff(1, 8))
        metrics = ClientMetrics()
        core.trace.observe(metrics)
        client = makeClient(core)
        client.start()
        effects.fire("scan", [ranked("A", "10.0.0.1"), ranked("B", "10.0.0.2")])
        effects.fire("register", LEASE)
        effects.fire("connect", FakeConnection())
        effects.fire("verify", 0.01)
        session = core.session
        standby = Session(session.step, LEASE, FakeConnection(), 0)
        client.moveToStandby(standby, session, "it scored better", None)
        sample = metrics.registry.get_sample_value
        self.assertEqual(sample("mnigs_client_state", {"mnigs_client_state": "handingOver"}), 1)
        self.assertEqual(sample("mnigs_client_failovers_total", {"reason": SWITCH}), 1)
        client.promoted(standby)
        client.plannedMove(standby, buildPlan([ranked("B", "10.0.0.2")]),
                           Reason(UNAVAILABLE, SAYS_UNAVAILABLE))
        self.assertEqual(sample("mnigs_client_failovers_total", {"reason": UNAVAILABLE}), 1)
        self.assertEqual(sample("mnigs_client_outage_seconds_count"), 0)
