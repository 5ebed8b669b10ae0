"""
Traffic accounting and the server's hooks, without daemons: the meter and
the registry with a recording method, the WireGuard gateway's peer
counters from a real UAPI answer text (wireguard-go cannot run in a unit
test), hooks run through a fake C{spawnProcess} with a Clock, and
C{mnigsctl}'s lease table.  OpenVPN's per-lease counters are in
tests/unit/test_openvpn/test_method.py.
"""

import base64
import ipaddress
import signal

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mnigs import protocol
from mnigs.cli.ctl import formatBytes, formatLeaseAnswer, main
from mnigs.daemon.hooks import Hooks, Verdict
from mnigs.methods.traffic import Traffic
from mnigs.methods.wireguard import WireGuardConnection, WireGuardGateway
from mnigs.server.leases import LeaseBook
from mnigs.server.leasestore import GroupCommit
from mnigs.server.registry import Registry
from mnigs.server.traffic import TrafficMeter
from mnigs.wireguard.uapi import keyToHex, parseGet
from tests.unit.fakeprocess import FakeSpawner
from tests.unit.test_fairness import FakeAccess, FakeDevice
from tests.unit.test_gateway import Hooks as RecordingHooks
from tests.unit.test_gateway import MemoryStore, RecordingMethod, request

KEY_A = base64.b64encode(bytes([1]) * 32).decode()
KEY_B = base64.b64encode(bytes([2]) * 32).decode()
GATEWAY_KEY = base64.b64encode(bytes([3]) * 32).decode()


class ClockSpawner(Clock):
    """A Clock that also spawns (fake) processes: what Hooks needs of a reactor."""

    def __init__(self):
        super().__init__()
        self.spawnProcess = FakeSpawner()

    @property
    def spawned(self):
        return self.spawnProcess.spawned


class HookAskTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = ClockSpawner()
        self.hooks = Hooks(self.reactor, {"register": "/etc/mnigs/register"}, maxRunning=1)

    def test_noHookAnswersNoneAtOnce(self):
        self.assertIsNone(self.hooks.ask("release", 5, "x"))
        self.assertFalse(self.hooks.has("release"))
        self.assertTrue(self.hooks.has("register"))

    def test_exitStatusDecides(self):
        allowed = self.hooks.ask("register", 5, "lease1", None)
        self.assertEqual(self.reactor.spawned[0]["args"],
                         ["/etc/mnigs/register", "register", "lease1", "-"])
        self.assertNoResult(allowed)
        self.reactor.spawned[0]["process"].end(0)
        self.assertIs(self.successResultOf(allowed), Verdict.allowed)
        refused = self.hooks.ask("register", 5, "lease2")
        self.reactor.spawned[1]["process"].end(3)
        self.assertIs(self.successResultOf(refused), Verdict.refused)
        killed = self.hooks.ask("register", 5, "lease3")
        self.reactor.spawned[2]["process"].end(None, sig=signal.SIGSEGV)
        self.assertIs(self.successResultOf(killed), Verdict.refused)
        self.assertEqual(self.hooks.running, 0)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_aHookThatCannotStartRefuses(self):
        self.reactor.spawnProcess.fail = OSError("exec format error")
        self.assertIs(self.successResultOf(self.hooks.ask("register", 5)), Verdict.refused)
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_timeoutKillsTheHook(self):
        answer = self.hooks.ask("register", 2.5, "lease1")
        self.reactor.advance(2.4)
        self.assertNoResult(answer)
        self.reactor.advance(0.1)
        self.assertIs(self.successResultOf(answer), Verdict.timedOut)
        process = self.reactor.spawned[0]["process"]
        self.assertEqual(process.signals, [signal.SIGKILL])
        process.end(None, sig=signal.SIGKILL)  # its end only frees its turn
        self.assertEqual(self.hooks.running, 0)

    def test_theTimeoutCountsTheWaitForATurn(self):
        self.hooks.run("register", "busy")  # takes the one turn
        answer = self.hooks.ask("register", 1, "lease1")
        self.reactor.advance(1)
        self.assertIs(self.successResultOf(answer), Verdict.timedOut)
        self.assertEqual(len(self.hooks.waiting), 0)
        self.reactor.spawned[0]["process"].end(0)
        self.assertEqual(len(self.reactor.spawned), 1)  # the timed-out one never starts


class RegistryWithHooksTests(SynchronousTestCase):
    """
    The registry with real L{Hooks} over a fake spawner and a Clock: a
    register hook decides before anything is granted, and a refusal
    leaves nothing (no lease, no grant, nothing stored).
    """

    def setUp(self):
        self.reactor = ClockSpawner()
        self.reactor.advance(1000)
        self.events = []
        self.method = RecordingMethod(self.events)
        self.store = MemoryStore(self.events)
        self.book = LeaseBook(maxClients=3, leaseSeconds=600)

    def registry(self, **kw):
        hooks = Hooks(self.reactor, {"register": "/hooks/register", "release": "/hooks/release"})
        return Registry(self.reactor, self.book, {"fake": self.method},
                        GroupCommit(self.reactor, self.store, self.book.records), hooks,
                        traffic=TrafficMeter(self.reactor, {"fake": self.method}), **kw)

    def register(self, registry):
        d = registry.register(request("c1"), "10.0.0.1", "10.0.0.254")
        self.reactor.advance(0)
        return d

    def test_registerHookArgv(self):
        d = self.register(self.registry())
        self.assertEqual(self.events, [])  # nothing granted while the hook decides
        argv = self.reactor.spawned[0]["args"]
        leaseId = argv[2]
        self.assertEqual(argv, ["/hooks/register", "register", leaseId, "fake", "10.0.0.1",
                                "100.64.0.2/32", "c1", ""])
        self.reactor.spawned[0]["process"].end(0)
        self.reactor.advance(0)
        self.assertEqual(self.successResultOf(d)["lease"]["id"], leaseId)
        self.assertEqual(self.events, [("grant", "c1", "100.64.0.2/32"), ("save", 1)])

    def test_refusalLeavesNothing(self):
        d = self.register(self.registry())
        self.reactor.spawned[0]["process"].end(1)
        self.reactor.advance(0)
        failure = self.failureResultOf(d, protocol.RPCError)
        self.assertEqual(failure.value.code, protocol.REFUSED)
        self.assertEqual(failure.value.code, 1008)
        self.assertEqual(len(self.book), 0)
        # What allocate reserved is given back (revoke of a lease never granted).
        self.assertEqual(self.events, [("revoke", "c1", "100.64.0.2/32")])
        self.assertEqual(self.store.saved, None)

    def test_aLeaseBeingDecidedIsNotStored(self):
        """
        Another registration's commit while the hook decides does not
        store the undecided lease (a crash then would bring it back).
        """
        registry = self.registry()
        d = self.register(registry)
        other = registry.register(request("c2"), "10.0.0.2", "10.0.0.254")
        self.reactor.advance(0)
        self.reactor.spawned[1]["process"].end(0)
        self.reactor.advance(0)
        self.successResultOf(other)
        self.assertEqual([r["client_id"] for r in self.store.saved["leases"]], ["c2"])
        self.reactor.spawned[0]["process"].end(0)
        self.reactor.advance(0)
        self.successResultOf(d)
        self.assertEqual(sorted(r["client_id"] for r in self.store.saved["leases"]), ["c1", "c2"])

    def test_timeoutRefusesByDefault(self):
        d = self.register(self.registry(registerTimeout=2))
        self.reactor.advance(2)
        self.assertEqual(self.failureResultOf(d, protocol.RPCError).value.code, protocol.REFUSED)
        self.assertEqual(len(self.book), 0)
        self.assertEqual(self.reactor.spawned[0]["process"].signals, [signal.SIGKILL])

    def test_timeoutMayAllow(self):
        d = self.register(self.registry(registerTimeout=2, allowOnTimeout=True))
        self.reactor.advance(2)
        self.assertEqual(self.successResultOf(d)["lease"]["config"]["address"], "100.64.0.2/32")
        self.assertEqual(len(self.book), 1)

    def test_releaseHookHasBytesAndDuration(self):
        registry = self.registry()
        d = self.register(registry)
        self.reactor.spawned[0]["process"].end(0)
        self.reactor.advance(0)
        lease = self.successResultOf(d)["lease"]
        self.method.counts["c1"] = (5000, 700, None)
        self.reactor.advance(90.4)
        d = registry.unregister(lease["id"], lease["token"])
        self.reactor.advance(0)
        self.assertEqual(self.successResultOf(d), {"released": True})
        self.assertEqual(self.reactor.spawned[1]["args"],
                         ["/hooks/release", "release", lease["id"], "fake", "10.0.0.1",
                          "100.64.0.2/32", "c1", "", "5000", "700", "90", "released"])


class RegistryTrafficTests(SynchronousTestCase):
    """
    The status's lease entries, the operator's release, the counters
    without a release hook (no wait), and trafficByLease.
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.events = []
        self.method = RecordingMethod(self.events)
        self.book = LeaseBook(maxClients=5, leaseSeconds=600)
        self.meter = TrafficMeter(self.clock, {"fake": self.method}, interval=10)
        self.hooks = RecordingHooks(self.events)
        self.registry = Registry(self.clock, self.book, {"fake": self.method},
                                 GroupCommit(self.clock, MemoryStore(self.events),
                                             self.book.records),
                                 self.hooks, traffic=self.meter)

    def lease(self, clientId):
        d = self.registry.register(request(clientId), "10.0.0.1", "10.0.0.254")
        self.clock.advance(0)
        return self.successResultOf(d)["lease"]

    def test_describeHasCountersAgeAndHandshake(self):
        self.meter.start()
        a = self.lease("c1")
        b = self.lease("c2")
        self.method.counts["c1"] = (100, 20, self.clock.seconds() - 3)
        self.clock.advance(10)  # one look by the meter
        entries = {e["id"]: e for e in self.registry.describe()["leases"]}
        self.assertEqual({k: entries[a["id"]][k] for k in
                          ("bytes_in", "bytes_out", "last_handshake_ago", "age_s", "expires_in")},
                         {"bytes_in": 100, "bytes_out": 20, "last_handshake_ago": 13,
                          "age_s": 10, "expires_in": 590})
        self.assertEqual((entries[b["id"]]["bytes_in"], entries[b["id"]]["last_handshake_ago"]),
                         (None, None))
        self.assertEqual(self.registry.trafficByLease(),
                         {a["id"]: ("fake", 100, 20), b["id"]: ("fake", None, None)})
        self.meter.stop()

    def test_leasesReadsTheCountersNow(self):
        a = self.lease("c1")
        self.method.counts["c1"] = (7, 8, None)
        answer = self.successResultOf(self.registry.leases())
        self.assertEqual((answer["clients"], answer["max_clients"]), (1, 5))
        self.assertEqual([(e["id"], e["bytes_in"], e["bytes_out"]) for e in answer["leases"]],
                         [(a["id"], 7, 8)])

    def test_releaseWithoutAHookUsesTheLastCount(self):
        """
        No release hook: the revoke does not wait for a fresh count; the
        log line has what was last counted.
        """
        a = self.lease("c1")
        calls = []
        self.method.traffic = lambda: calls.append(1) or defer.succeed({})
        d = self.registry.release(a["id"])
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(d)["released"], a["id"])
        self.assertEqual(calls, [])
        self.assertEqual(len(self.book), 0)
        self.assertIn(("hook", "release", "fake", "10.0.0.1"), self.events)
        self.assertEqual(self.hooks.args[-1][-1], "released by the operator")

    def test_releaseByUniquePrefix(self):
        self.book.newId = iter(["abcd0001", "abcd0002", "ffff0003"]).__next__
        for n in (1, 2, 3):
            self.lease(f"c{n}")
        self.assertRaises(ValueError, self.registry.findLease, "abcd")
        self.assertRaises(ValueError, self.registry.findLease, "ab")  # too short to guess
        self.assertRaises(ValueError, self.registry.findLease, "0000")
        d = self.registry.release("ffff")
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(d)["released"], "ffff0003")

    def test_unknownLease(self):
        f = self.failureResultOf(self.registry.release("0123456789abcdef"), ValueError)
        self.assertEqual(str(f.value), "no lease '0123456789abcdef'")


class FailingMethod:
    def __init__(self):
        self.answers = []

    def traffic(self):
        return self.answers.pop(0)


class TrafficMeterTests(SynchronousTestCase):
    def test_aFailedLookKeepsTheLastCounts(self):
        clock = Clock()
        method = FailingMethod()
        meter = TrafficMeter(clock, {"m": method}, interval=5)
        method.answers = [defer.succeed({"L1": Traffic(1, 2)}),
                          defer.fail(OSError("daemon restarting")),
                          defer.succeed({"L2": Traffic(3, 4)})]
        meter.start()
        clock.advance(5)
        self.assertEqual(meter.trafficByLease(), {"L1": ("m", 1, 2)})
        clock.advance(5)
        self.assertEqual(meter.trafficByLease(), {"L1": ("m", 1, 2)})
        clock.advance(5)
        self.assertEqual(meter.trafficByLease(), {"L2": ("m", 3, 4)})
        self.assertEqual(meter.forLease("L1"), Traffic())
        meter.stop()
        self.assertEqual(clock.getDelayedCalls(), [])


UAPI_ANSWER = f"""private_key={keyToHex(GATEWAY_KEY)}
listen_port=51820
public_key={keyToHex(KEY_A)}
endpoint=10.99.1.1:40000
last_handshake_time_sec=1796537000
last_handshake_time_nsec=5
tx_bytes=8492868
rx_bytes=4246868
persistent_keepalive_interval=0
allowed_ip=100.64.0.2/32
public_key={keyToHex(KEY_B)}
last_handshake_time_sec=0
last_handshake_time_nsec=0
tx_bytes=0
rx_bytes=0
allowed_ip=100.64.0.3/32
errno=0
"""


class WireGuardCounterTests(SynchronousTestCase):
    """
    A peer's C{tx_bytes} (sent to the client) are its lease's bytes in,
    C{rx_bytes} its bytes out; a peer with no handshake has none.
    """

    def test_peerCountersFromAUAPIAnswer(self):
        device = FakeDevice()
        device.get = lambda: defer.succeed(parseGet(UAPI_ANSWER))
        method = WireGuardGateway(device, FakeAccess(), GATEWAY_KEY,
                                  ipaddress.ip_network("100.64.0.0/24"), 51820)
        book = LeaseBook(maxClients=10, leaseSeconds=600)
        leases = []
        for clientId, key in (("a", KEY_A), ("b", KEY_B)):
            lease = book.draft(clientId, "", "wireguard", "10.0.0.1", {"public_key": key}, 0)
            lease.config = method.allocate(lease, book.others("wireguard"), "10.0.0.254")
            book.add(lease)
            self.successResultOf(method.grant(lease))
            leases.append(lease)
        self.assertEqual(self.successResultOf(method.traffic()),
                         {leases[0].id: Traffic(8492868, 4246868, 1796537000),
                          leases[1].id: Traffic(0, 0, None)})

    def test_theClientCountsItsTunnelDevice(self):
        class Netlink:
            def linkStats(self, name):
                return {"mc0": (1200, 340)}.get(name)

        class Device:
            ifname = "mc0"

            def onDeath(self, callback):
                pass

        connection = WireGuardConnection(Device(), None, {}, Netlink())
        self.assertEqual(connection.traffic(), (1200, 340))
        self.assertIsNone(WireGuardConnection(Device(), None, {}).traffic())


class LeaseCommandTests(SynchronousTestCase):
    ANSWER = {"clients": 1, "max_clients": 8, "leases": [{
        "id": "41fd0ce6aed599c9", "method": "wireguard", "name": "laptop\x1b[2J",
        "client": "ed25519:643wNA2U+mlcKeXmYjNN/AuWK29js/rU6HvEFd2TwBQ=",
        "host": "10.99.1.1", "address": "100.64.0.2/32", "age_s": 3725,
        "expires_in": 598, "bytes_in": 8492868, "bytes_out": 4246868,
        "last_handshake_ago": 2}]}

    def test_humanLeaseTable(self):
        text = formatLeaseAnswer("leases", self.ANSWER)
        lines = text.splitlines()
        self.assertEqual(lines[0], "1 leases, clients 1/8 (in: to the client, out: from it)")
        self.assertEqual(lines[1].split(), ["LEASE", "METHOD", "NAME", "CLIENT", "HOST", "ADDRESS",
                                            "AGE", "EXPIRES", "IN", "OUT", "HANDSHAKE"])
        self.assertEqual(lines[2].split(),
                         ["41fd0ce6aed599c9", "wireguard", "laptop\\x1b[2J", "ed25519:643wNA2U",
                          "10.99.1.1", "100.64.0.2/32", "62m05s", "9m58s", "8.5", "MB", "4.2", "MB",
                          "2s", "ago"])

    def test_humanRelease(self):
        self.assertEqual(formatLeaseAnswer("release", {"released": "41fd", "method": "wireguard",
                                                       "name": "laptop",
                                                       "address": "100.64.0.2/32"}),
                         "released lease 41fd (wireguard, laptop, 100.64.0.2/32)")
        self.assertEqual(formatLeaseAnswer("release", {"error": "no lease 'x'"}),
                         "error: no lease 'x'")

    def test_bytes(self):
        self.assertEqual([formatBytes(n) for n in (None, 0, 999, 1000, 2_500_000, 10**13)],
                         ["-", "0 B", "999 B", "1.0 kB", "2.5 MB", "10.0 TB"])

    def test_releaseNeedsALeaseIdAndAWellFormedOne(self):
        for argv in (["--server", "release"], ["--server", "leases", "abcd"],
                     ["--server", "release", "ab cd"], ["--server", "release", "a\nstatus"]):
            with self.assertRaises(SystemExit):
                main(argv)


NFT_ANSWER = {"nftables": [
    {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
    {"table": {"family": "inet", "name": "mnigs", "handle": 1}},
    {"set": {"family": "inet", "name": "clients4", "table": "mnigs", "type": "ipv4_addr",
             "handle": 2, "stmt": [{"counter": None}],
             "elem": [{"elem": {"val": "10.99.1.2", "counter": {"packets": 6, "bytes": 9000}}},
                      {"elem": {"val": "100.64.0.2", "counter": {"packets": 1, "bytes": 84}}}]}},
    {"set": {"family": "inet", "name": "tunnel4", "table": "mnigs",
             "type": ["ipv4_addr", "ifname"], "handle": 3,
             "elem": [{"concat": ["100.64.0.2", "mw1"]}]}},
    {"set": {"family": "inet", "name": "link4", "table": "mnigs",
             "type": ["ipv4_addr", "ifname", "ether_addr"], "handle": 4,
             "stmt": [{"counter": None}],
             "elem": [{"elem": {"val": {"concat": ["10.99.1.2", "m0", "02:00:5e:10:00:02"]},
                                "counter": {"packets": 3, "bytes": 252}}}]}},
    {"set": {"family": "inet", "name": "link6", "table": "mnigs",
             "type": ["ipv6_addr", "ifname", "ether_addr"], "handle": 5,
             "stmt": [{"counter": None}]}},
]}


class NftCounterTests(SynchronousTestCase):
    """
    The gate's element counters as C{nft -j list table} gives them (the
    answer above is what nft 1.0.6 printed here, with other values), and
    the forward method's bytes from them.
    """

    def test_parseCounters(self):
        from mnigs.system.nft import parseCounters

        ip = ipaddress.ip_address
        self.assertEqual(parseCounters(NFT_ANSWER), {
            ("clients4", (ip("10.99.1.2"),)): 9000,
            ("clients4", (ip("100.64.0.2"),)): 84,
            ("link4", (ip("10.99.1.2"), "m0", bytes([2, 0, 0x5e, 0x10, 0, 2]))): 252,
        })

    def test_forwardLeaseBytes(self):
        from mnigs.methods.forward import ForwardGateway
        from mnigs.system.nft import parseCounters
        from tests.unit.test_gatemethods import MAC, FakeNetlink, RecordingAccess

        access = RecordingAccess()
        access.counters = lambda: defer.succeed(parseCounters(NFT_ANSWER))
        method = ForwardGateway(access, FakeNetlink({("10.99.1.2", "m0"): MAC}), ["m0"])
        self.assertEqual(self.successResultOf(method.traffic()), {})
        book = LeaseBook(maxClients=10, leaseSeconds=600)
        lease = book.draft("n1", "", "forward", "10.99.1.2", {}, 0)
        lease.config = method.allocate(lease, [], "10.99.1.1")
        self.successResultOf(method.grant(lease))
        self.assertEqual(self.successResultOf(method.traffic()), {lease.id: Traffic(9000, 252)})
        self.successResultOf(method.revoke(lease))
        self.assertEqual(self.successResultOf(method.traffic()), {})


class SoftEtherCounterTests(SynchronousTestCase):
    """
    The hub's sessions' data sizes as vpncmd prints them (the SessionList
    is a captured one; the SessionGet items are the names it uses), and
    the SoftEther method's bytes from them (vpnserver cannot run in a
    unit test: a fake server answers).
    """

    def test_sessionsAndTheirBytes(self):
        import json
        import os

        from mnigs.softether import hub

        with open(os.path.join(os.path.dirname(__file__), "data", "softether",
                               "hub_sessions.json")) as f:
            stdout = json.load(f)["stdout"]
        lines = stdout.split("VPN Server/mnigs>SessionList\n")[1].splitlines()
        table = [dict(zip(lines[0].split(","), line.split(","))) for line in lines[1:]]
        self.assertEqual(hub.sessionsByUser(table, ["M23E8CC9A8F0195E590E482E1", "m0"]),
                         [("m23e8cc9a8f0195e590e482e1", "SID-M23E8CC9A8F0195E590E482E1-2")])
        self.assertEqual(hub.sessionBytes({"Outgoing Data Size": "1,048,696 bytes",
                                           "Incoming Data Size": "2,096,546 bytes"}),
                         (2096546, 1048696))
        self.assertIsNone(hub.sessionBytes({"Outgoing Data Size": "12 bytes"}))

    def test_leaseBytesFromItsUsersSessions(self):
        from mnigs.methods.softether import SoftEtherGateway
        from mnigs.softether.hub import userName
        from tests.unit.test_softether.test_method import FakeAccess as SEAccess
        from tests.unit.test_softether.test_method import FakeServer, lease

        server = FakeServer([])
        server.sessionTraffic = lambda: defer.succeed({userName("aaaa"): (2096546, 1048696)})
        method = SoftEtherGateway(server, SEAccess([]), ipaddress.ip_network("100.66.0.0/29"),
                                  password=lambda: "x" * 32)
        self.assertEqual(self.successResultOf(method.traffic()), {})
        self.successResultOf(method.start([lease("aaaa", "100.66.0.2/29"),
                                           lease("bbbb", "100.66.0.3/29")]))
        self.assertEqual(self.successResultOf(method.traffic()),
                         {"aaaa": Traffic(2096546, 1048696), "bbbb": Traffic(0, 0)})


class UptimeTests(SynchronousTestCase):
    def test_statusHasUptime(self):
        from mnigs.server.machine import GatewayCore, makeGateway
        from tests.unit.test_gateway import Offers

        clock = Clock()
        clock.advance(500)
        book = LeaseBook(maxClients=3, leaseSeconds=60)
        registry = Registry(clock, book, {}, GroupCommit(clock, MemoryStore([]), book.records),
                            RecordingHooks([]))
        gateway = makeGateway(GatewayCore(registry, Offers(), lambda: None, lambda: None, clock,
                                          bornAt=clock.seconds()))
        clock.advance(3725.6)
        self.assertEqual(gateway.describe()["uptime_s"], 3725.6)


class DrainWaitsForRevokesTests(SynchronousTestCase):
    def test_releaseAllWaitsForAnUnregistersRevoke(self):
        """
        A lease unregistered just before the end of a drain is out of the
        book while its revoke still runs: releaseAll (after which the
        methods stop) waits for it.
        """
        clock = Clock()
        events = []
        method = RecordingMethod(events)
        book = LeaseBook(maxClients=3, leaseSeconds=60)
        registry = Registry(clock, book, {"fake": method},
                            GroupCommit(clock, MemoryStore(events), book.records),
                            RecordingHooks(events))
        d = registry.register(request("c1"), "10.0.0.1", "10.0.0.254")
        clock.advance(0)
        lease = self.successResultOf(d)["lease"]
        method.slowRevokes = []
        registry.unregister(lease["id"], lease["token"])
        released = registry.releaseAll("released: drained")
        self.assertNoResult(released)
        method.slowRevokes[0].callback(None)
        clock.advance(0)
        self.assertEqual(self.successResultOf(released), [])
