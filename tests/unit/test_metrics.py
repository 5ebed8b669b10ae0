"""
The daemons' Prometheus metrics: each metric's updates from recorded
events (transitions, calls, lease ends, probe rounds, scans) on a Clock,
the values read from the lease book and the session when scraped, and the
exposition of both registries checked by promtool (Debian's prometheus
package) when it is installed.
"""

import json
import shutil
import subprocess
from types import SimpleNamespace

from prometheus_client import generate_latest
from twisted.internet import reactor, threads
from twisted.internet.task import Clock
from twisted.python import threadable
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mnigs import protocol
from mnigs.client.agent import wire
from mnigs.client.discovery import Discovery
from mnigs.client.machine import Trace, Transition
from mnigs.client.metrics import ClientMetrics, currentGateway
from mnigs.client.reasons import LEASE, PROBES, Reason
from mnigs.rpc.server import JSONRPCResource, makeSite
from mnigs.server.leases import LeaseBook
from mnigs.server.metrics import GatewayMetrics, bookMetrics
from mnigs.web.metrics import SnapshotCollector, SnapshotTimeout, inReactorThread
from tests.unit.test_discovery import FakeRPC, candidates
from tests.unit.test_protocol import makeOffer
from tests.unit.test_rpc import Echo, rawPost


def value(registry, name, /, **labels):
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def promtoolProblems(exposition: bytes) -> str:
    """
    What C{promtool check metrics} says about C{exposition}: errors and
    lint warnings alike (empty when it has nothing to say).
    """
    result = subprocess.run([shutil.which("promtool"), "check", "metrics"], input=exposition,
                            capture_output=True, timeout=30)
    said = (result.stdout + result.stderr).decode().strip()
    return said if (result.returncode or said) else ""


class State(SimpleNamespace):
    "An Automat state as a tracer sees it: something with a name."


STARTING, SERVING, UNAVAILABLE = State(name="starting"), State(name="serving"), State(name="unavailable")


class GatewayMetricsTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.metrics = GatewayMetrics(self.clock)
        self.registry = self.metrics.registry

    def test_callsErrorsAndLatencyByMethod(self):
        token = self.metrics.callStarted()
        self.clock.advance(0.02)
        self.metrics.callAnswered(token, "gateway.register", protocol.GATEWAY_FULL)
        token = self.metrics.callStarted()
        self.metrics.callAnswered(token, "gateway.register", 0)
        r = self.registry
        self.assertEqual(value(r, "mnigs_server_rpc_calls_total", method="gateway.register"), 2)
        self.assertEqual(value(r, "mnigs_server_rpc_errors_total", method="gateway.register",
                               code="1001"), 1)
        self.assertEqual(value(r, "mnigs_server_rpc_duration_seconds_count",
                               method="gateway.register"), 2)
        self.assertAlmostEqual(value(r, "mnigs_server_rpc_duration_seconds_sum",
                                     method="gateway.register"), 0.02)
        self.assertEqual(value(r, "mnigs_server_rpc_duration_seconds_bucket",
                               method="gateway.register", le="0.01"), 1)

    def test_unknownMethodsShareOneLabel(self):
        for method in (None, "gateway.nosuch", "x" * 300):
            self.metrics.callAnswered(self.metrics.callStarted(), method, protocol.METHOD_NOT_FOUND)
        self.assertEqual(value(self.registry, "mnigs_server_rpc_errors_total", method="invalid",
                               code="-32601"), 3)

    def test_callerHangingUpIsNoError(self):
        self.metrics.callAnswered(self.metrics.callStarted(), "gateway.renew", None)
        self.assertEqual(value(self.registry, "mnigs_server_rpc_calls_total", method="gateway.renew"), 1)
        self.assertNotIn(b"mnigs_server_rpc_errors_total{", generate_latest(self.registry))

    def test_stateAvailableAndUplinkFromTransitions(self):
        r, trace = self.registry, self.metrics
        self.assertEqual(value(r, "mnigs_server_state", mnigs_server_state="starting"), 1)
        self.assertEqual(value(r, "mnigs_server_available"), 0)
        trace(STARTING, "uplinkUp", STARTING)
        self.assertEqual(value(r, "mnigs_server_uplink_up"), 1)
        trace(STARTING, "started", SERVING)
        self.assertEqual(value(r, "mnigs_server_available"), 1)
        self.assertEqual(value(r, "mnigs_server_state", mnigs_server_state="serving"), 1)
        self.assertEqual(value(r, "mnigs_server_state", mnigs_server_state="starting"), 0)
        trace(SERVING, "info", SERVING)
        trace(SERVING, "uplinkDown", UNAVAILABLE)
        self.assertEqual(value(r, "mnigs_server_uplink_up"), 0)
        self.assertEqual(value(r, "mnigs_server_available"), 0)

    def test_leaseEndsByMethodAndHow(self):
        lease = SimpleNamespace(method="wireguard")
        self.metrics.leaseEnded(lease, "expired")
        self.metrics.leaseEnded(lease, "expired")
        self.metrics.leaseEnded(lease, "released")
        r = self.registry
        self.assertEqual(value(r, "mnigs_server_lease_ends_total", method="wireguard",
                               reason="expired"), 2)
        self.assertEqual(value(r, "mnigs_server_lease_ends_total", method="wireguard",
                               reason="released"), 1)


class BookMetricsTests(SynchronousTestCase):
    def setUp(self):
        self.book = LeaseBook(maxClients=10, leaseSeconds=600)
        for n, (client, method) in enumerate([("a", "wireguard"), ("b", "wireguard"),
                                             ("c", "openvpn")]):
            lease = self.book.draft(client, f"name-{client}", method, f"10.0.0.{n + 1}", {}, 0)
            self.book.add(lease)

    def samples(self, families):
        return {(f.name, tuple(sorted(s.labels.items()))): s.value
                for f in families for s in f.samples}

    def test_leasesByMethodClientsAndMax(self):
        got = self.samples(bookMetrics(self.book, ["wireguard", "openvpn", "forward"]))
        self.assertEqual(got[("mnigs_server_leases", (("method", "wireguard"),))], 2)
        self.assertEqual(got[("mnigs_server_leases", (("method", "openvpn"),))], 1)
        self.assertEqual(got[("mnigs_server_leases", (("method", "forward"),))], 0)
        self.assertEqual(got[("mnigs_server_clients", ())], 3)
        self.assertEqual(got[("mnigs_server_max_clients", ())], 10)
        self.assertNotIn("mnigs_server_lease_traffic_bytes", {name for name, _ in got})

    def traffic(self):
        ids = {lease.clientId: lease.id for lease in self.book.live()}
        return {ids["a"]: ("wireguard", 100, 1000), ids["b"]: ("wireguard", 5, 50),
                ids["c"]: ("openvpn", 7, 70)}

    def test_trafficSummedByMethodWithoutLeaseLabels(self):
        got = self.samples(bookMetrics(self.book, ["wireguard", "openvpn"], self.traffic))
        traffic = "mnigs_server_lease_traffic_bytes"
        self.assertEqual(got[(traffic, (("direction", "in"), ("method", "wireguard")))], 105)
        self.assertEqual(got[(traffic, (("direction", "out"), ("method", "wireguard")))], 1050)
        self.assertEqual(got[(traffic, (("direction", "out"), ("method", "openvpn")))], 70)
        self.assertFalse([name for name, labels in got if dict(labels).get("lease")])

    def test_aLeaseWhoseMethodDoesNotCountIsLeftOut(self):
        """
        The registry gives C{None} bytes for a method that does not count
        (cjdns): that lease is in no sum and has no series.
        """
        ids = {lease.clientId: lease.id for lease in self.book.live()}
        traffic = lambda: {ids["a"]: ("wireguard", 100, 1000), ids["b"]: ("cjdns", None, None)}
        got = self.samples(bookMetrics(self.book, ["wireguard", "cjdns"], traffic, perLease=True))
        name = "mnigs_server_lease_traffic_bytes"
        self.assertEqual(got[(name, (("direction", "in"), ("method", "cjdns")))], 0)
        self.assertEqual(got[(name, (("direction", "in"), ("method", "wireguard")))], 100)
        self.assertEqual([labels for key, labels in got if key == "mnigs_server_lease_bytes"
                          and dict(labels)["method"] == "cjdns"], [])

    def test_perLeaseSeriesOnlyWhenAskedFor(self):
        got = self.samples(bookMetrics(self.book, ["wireguard", "openvpn"], self.traffic,
                                       perLease=True))
        lease = self.book.find("a", "wireguard")
        key = ("mnigs_server_lease_bytes", (("client", "name-a"), ("direction", "out"),
                                            ("lease", lease.id), ("method", "wireguard")))
        self.assertEqual(got[key], 1000)

    def test_readThroughTheGivenCaller(self):
        calls = []

        def call(f):
            calls.append(f)
            return f()

        metrics = GatewayMetrics(Clock(), call=call)
        metrics.watchBook(self.book, ["wireguard"])
        self.assertEqual(value(metrics.registry, "mnigs_server_leases", method="wireguard"), 2)
        self.assertEqual(len(calls), 2)  # the calls' and the book's


class RPCObserverTests(TestCase):
    """
    The RPC resource tells its observer about every call, over a real
    loopback socket.
    """

    def setUp(self):
        self.metrics = GatewayMetrics(reactor)
        resource = JSONRPCResource(self.metrics)
        resource.putSubHandler("test", Echo())
        port = reactor.listenTCP(0, makeSite(resource, reactor, 16, 30), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port

    def post(self, message):
        body = message if isinstance(message, bytes) else json.dumps(message).encode()
        return threads.deferToThread(rawPost, self.port, body)

    async def test_everyOutcomeCounted(self):
        call = {"jsonrpc": "2.0", "id": 1, "params": {}}
        await self.post(dict(call, method="test.echo"))
        await self.post(dict(call, method="test.fail"))
        await self.post(dict(call, method="test.crash"))
        await self.post(dict(call, method="nosuch.thing"))
        await self.post(b"{not json")
        self.flushLoggedErrors(KeyError)
        r = self.metrics.registry
        # Only the protocol's own methods get a label of their own.
        self.assertEqual(value(r, "mnigs_server_rpc_calls_total", method="invalid"), 5)
        self.assertEqual(value(r, "mnigs_server_rpc_errors_total", method="invalid", code="1001"), 1)
        self.assertEqual(value(r, "mnigs_server_rpc_errors_total", method="invalid",
                               code="-32603"), 1)
        self.assertEqual(value(r, "mnigs_server_rpc_errors_total", method="invalid",
                               code="-32601"), 1)
        self.assertEqual(value(r, "mnigs_server_rpc_errors_total", method="invalid",
                               code="-32700"), 1)


class GatewayMethodsTests(TestCase):
    def setUp(self):
        self.metrics = GatewayMetrics(reactor)

    async def test_protocolMethodsLabelled(self):
        from txjsonrpc_ng.jsonrpc import BaseSubhandler

        class Gateway(BaseSubhandler):
            def jsonrpc_info(self, call):
                return {}

        resource = JSONRPCResource(self.metrics)
        resource.putSubHandler("gateway", Gateway())
        port = reactor.listenTCP(0, makeSite(resource, reactor, 16, 30), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "gateway.info"}).encode()
        await threads.deferToThread(rawPost, port.getHost().port, body)
        self.assertEqual(value(self.metrics.registry, "mnigs_server_rpc_calls_total",
                               method="gateway.info"), 1)


def transition(at, old, input, new, reason=""):
    return Transition(at, old, input, new, reason)


class ClientMetricsTests(SynchronousTestCase):
    def setUp(self):
        self.metrics = ClientMetrics()
        self.registry = self.metrics.registry

    def move(self, at, old, input, new, reason=""):
        entry = transition(at, old, input, new)
        self.metrics.transitioned(entry)
        if reason:
            entry.reason = reason
            self.metrics.explained(entry)

    def failovers(self, reason):
        return value(self.registry, "mnigs_client_failovers_total", reason=reason)

    def test_stateFollowsTheMachine(self):
        self.assertEqual(value(self.registry, "mnigs_client_state", mnigs_client_state="idle"), 1)
        self.move(1, "idle", "start", "searching")
        self.assertEqual(value(self.registry, "mnigs_client_state",
                               mnigs_client_state="searching"), 1)
        self.assertEqual(value(self.registry, "mnigs_client_state", mnigs_client_state="idle"), 0)

    def test_failoverCountedByReasonAndOutageTimed(self):
        self.move(10, "verifying", "answered", "online")
        self.assertEqual(value(self.registry, "mnigs_client_outage_seconds_count"), 0)
        self.move(20, "online", "probeMissed", "degraded", "1 health probe(s) unanswered")
        self.move(22, "degraded", "failover", "registering",
                  Reason(PROBES, "no answer from 10.0.0.1 in 3 probes"))
        self.move(23, "registering", "tryNext", "registering", "refused")
        self.move(24, "registering", "registered", "connecting")
        self.move(25, "connecting", "connected", "verifying")
        self.move(29.5, "verifying", "answered", "online")
        self.assertEqual(self.failovers("probes_unanswered"), 1)
        self.assertEqual(self.failovers("lease_lost"), 0)
        self.assertEqual(value(self.registry, "mnigs_client_outage_seconds_count"), 1)
        # From the first unanswered round (degraded) on.
        self.assertEqual(value(self.registry, "mnigs_client_outage_seconds_sum"), 9.5)
        self.assertEqual(value(self.registry, "mnigs_client_outage_seconds_bucket", le="7.5"), 0)
        self.assertEqual(value(self.registry, "mnigs_client_outage_seconds_bucket", le="10.0"), 1)

    def test_droppedOutageLastsUntilOnline(self):
        self.move(0, "verifying", "answered", "online")
        self.move(5, "online", "dropped", "searching", Reason(LEASE, "forgot us"))
        self.move(6, "searching", "nothingFound", "waiting", "no usable gateway found")
        self.move(40, "waiting", "retry", "searching")
        self.move(41, "searching", "scanned", "registering")
        self.move(45, "verifying", "answered", "online")
        self.assertEqual(self.failovers("lease_lost"), 1)
        self.assertEqual(value(self.registry, "mnigs_client_outage_seconds_sum"), 40)

    def test_recoveredDegradationIsNoOutage(self):
        self.move(0, "verifying", "answered", "online")
        self.move(1, "online", "probeMissed", "degraded", "1 health probe(s) unanswered")
        self.move(2, "degraded", "probeAnswered", "online")
        self.move(10, "online", "failover", "registering", Reason(PROBES, "gone"))
        self.move(12, "verifying", "answered", "online")
        self.assertEqual(value(self.registry, "mnigs_client_outage_seconds_sum"), 2)

    def test_switchIsCountedButIsNoOutage(self):
        self.move(0, "verifying", "answered", "online")
        self.move(5, "online", "switch", "registering", "switching to the better gateway b")
        self.move(6, "verifying", "answered", "online")
        self.assertEqual(self.failovers("switch"), 1)
        self.assertEqual(value(self.registry, "mnigs_client_outage_seconds_count"), 0)

    def test_plainTextReasonIsOther(self):
        self.move(0, "verifying", "answered", "online")
        self.move(1, "online", "failover", "registering", "something new")
        self.assertEqual(self.failovers("other"), 1)

    def test_stoppingAbandonsTheOutage(self):
        self.move(0, "verifying", "answered", "online")
        self.move(1, "online", "failover", "registering", Reason(PROBES, "gone"))
        self.move(2, "registering", "stop", "stopping")
        self.move(3, "verifying", "answered", "online")  # a later run's
        self.assertEqual(value(self.registry, "mnigs_client_outage_seconds_count"), 0)

    def test_probeRounds(self):
        self.metrics.probeSample(None, 0.012)
        self.metrics.probeSample(None, None)
        self.metrics.probeSample(None, 0.2)
        r = self.registry
        self.assertEqual(value(r, "mnigs_client_probe_rounds_total", result="answered"), 2)
        self.assertEqual(value(r, "mnigs_client_probe_rounds_total", result="missed"), 1)
        self.assertAlmostEqual(value(r, "mnigs_client_probe_rtt_seconds_sum"), 0.212)
        self.assertEqual(value(r, "mnigs_client_probe_rtt_seconds_bucket", le="0.025"), 1)

    def test_scansAndRejectedOffers(self):
        self.metrics.scanned(1.5, 40, 2)
        self.metrics.offerRejected("bad_signature")
        self.metrics.offerRejected("made-up")
        r = self.registry
        self.assertEqual(value(r, "mnigs_client_discovery_duration_seconds_sum"), 1.5)
        self.assertEqual(value(r, "mnigs_client_discovery_candidates"), 40)
        self.assertEqual(value(r, "mnigs_client_discovery_gateways"), 2)
        self.assertEqual(value(r, "mnigs_client_offers_rejected_total", reason="bad_signature"), 1)
        self.assertEqual(value(r, "mnigs_client_offers_rejected_total", reason="malformed"), 1)
        self.assertEqual(value(r, "mnigs_client_offers_rejected_total", reason="blocked"), 0)

    def test_currentGatewayInfoOnlyWhileOnline(self):
        offer = SimpleNamespace(name="gw-a")
        step = SimpleNamespace(gatewayId="ed25519:abc", host="10.0.0.1", method="wireguard",
                               seen=SimpleNamespace(offer=offer))
        agent = SimpleNamespace(core=SimpleNamespace(session=None))
        self.metrics.watchAgent(agent)
        self.assertNotIn(b"mnigs_client_gateway_info{", generate_latest(self.registry))
        agent.core.session = SimpleNamespace(step=step)
        self.assertEqual(value(self.registry, "mnigs_client_gateway_info", gateway="ed25519:abc",
                               name="gw-a", host="10.0.0.1", method="wireguard"), 1)
        [family] = currentGateway(None)
        self.assertEqual(family.samples, [])

    def test_falseFailoversAndDegradationMovesReadFromTheAgent(self):
        agent = SimpleNamespace(core=SimpleNamespace(session=None),
                                falseLosses=SimpleNamespace(count=2), degradeMoves=1)
        self.metrics.watchAgent(agent)
        self.assertEqual(value(self.registry, "mnigs_client_false_failovers_total"), 2)
        self.assertEqual(value(self.registry, "mnigs_client_degradation_moves_total"), 1)
        agent.falseLosses = None
        self.assertEqual(value(self.registry, "mnigs_client_false_failovers_total"), 0)


class ObservationPointTests(SynchronousTestCase):
    """
    The parts tell the metrics what they see: the trace, the session's
    reports, discovery.
    """

    def test_traceTellsChangesAndReasons(self):
        clock = Clock()
        trace = Trace(clock)
        told = []

        class Observer:
            def transitioned(self, entry):
                told.append(("transitioned", str(entry)))

            def explained(self, entry):
                told.append(("explained", str(entry)))

        trace.observe(Observer())
        online, registering = State(name="online"), State(name="registering")
        trace(online, "failover", registering)
        trace.because(Reason(PROBES, "gone"))
        trace(registering, "describe", registering)  # a loop without a reason: not told
        self.assertEqual(told, [("transitioned", "online --failover--> registering"),
                                ("explained", "online --failover--> registering (gone)")])
        self.assertEqual(trace.entries[-1].reason.kind, PROBES)

    def test_reportsReachTheObserversAfterTheAgent(self):
        told = []

        class Reports:
            def __init__(self, name):
                self.name = name

            def __getattr__(self, method):
                if method.startswith("_"):  # zope.interface's questions
                    raise AttributeError(method)
                return lambda session, detail: told.append((self.name, method, detail))

        agent = Reports("agent")
        effects = SimpleNamespace(wire=lambda reports: setattr(effects, "reports", reports))
        agent.effects = effects
        wire(agent, effects, [Reports("metrics")])
        effects.reports.probeSample("session", 0.01)
        effects.reports.lost("session", "gone")
        self.assertEqual(told, [("agent", "probeSample", 0.01), ("metrics", "probeSample", 0.01),
                                ("agent", "lost", "gone"), ("metrics", "lost", "gone")])

    def test_wireMakesTheMetricsHearTheTrace(self):
        effects = SimpleNamespace(wire=lambda reports: None)
        agent = SimpleNamespace(effects=effects, core=SimpleNamespace(trace=Trace(Clock())))
        metrics = ClientMetrics()
        wire(agent, effects, [metrics])
        self.assertEqual(agent.core.trace.observers, [metrics])

    def test_discoveryTellsScansAndRejections(self):
        clock = Clock()
        rpc = FakeRPC()
        metrics = ClientMetrics()
        discovery = Discovery(clock, rpc, concurrency=4, timeout=1.0, observer=metrics)
        offer, _ = makeOffer()
        forged = dict(offer, available=not offer["available"])
        d = discovery.scan(candidates(3))
        clock.advance(0.25)
        rpc.calls[0][1].callback(offer)
        rpc.calls[1][1].callback(forged)
        rpc.calls[2][1].callback({"protocol": 1})
        self.assertEqual(len(self.successResultOf(d)), 1)
        r = metrics.registry
        self.assertEqual(value(r, "mnigs_client_discovery_duration_seconds_sum"), 0.25)
        self.assertEqual(value(r, "mnigs_client_discovery_candidates"), 3)
        self.assertEqual(value(r, "mnigs_client_discovery_gateways"), 1)
        self.assertEqual(value(r, "mnigs_client_offers_rejected_total", reason="bad_signature"), 1)
        self.assertEqual(value(r, "mnigs_client_offers_rejected_total",
                               reason="protocol_version"), 1)

    def test_offerRejectionKinds(self):
        offer, _ = makeOffer()
        with self.assertRaises(protocol.OfferRejected) as caught:
            protocol.verifyOffer(offer, blocked=frozenset({offer["gateway"]["id"]}))
        self.assertEqual(caught.exception.kind, "blocked")
        self.assertEqual(str(caught.exception), "gateway is blocked")
        with self.assertRaises(protocol.OfferRejected) as caught:
            protocol.verifyOffer(offer, pinned=frozenset({"ed25519:other"}))
        self.assertEqual(caught.exception.kind, "not_pinned")


class SnapshotTests(TestCase):
    """
    prometheus_client's Twisted resource collects in a pool thread: the
    state is read in the reactor thread, and a reactor that does not
    answer fails the scrape instead of holding the thread.
    """

    async def test_readInTheReactorThread(self):
        import threading

        seen = []
        collector = SnapshotCollector(lambda: seen.append(threading.current_thread()) or [],
                                      inReactorThread(reactor))
        await threads.deferToThread(collector.collect)
        self.assertEqual(seen, [threading.main_thread()])

    async def test_silentReactorTimesOut(self):
        class Silent:
            def callFromThread(self, f):
                pass

        call = inReactorThread(Silent(), timeout=0.01)
        with self.assertRaises(SnapshotTimeout):
            await threads.deferToThread(call, lambda: 1)

    def test_inTheReactorThreadAtOnce(self):
        class Silent:
            def callFromThread(self, f):
                raise AssertionError("not to be called")

        # trial runs its reactor in this thread (it marks it so only once
        # the reactor has run).
        threadable.registerAsIOThread()
        self.assertEqual(inReactorThread(Silent())(lambda: 1), 1)


class ExpositionTests(SynchronousTestCase):
    """
    Both registries, with every metric holding something, as promtool
    reads them: no error, no lint warning.
    """

    def setUp(self):
        if shutil.which("promtool") is None:
            raise self.skipTest("promtool not installed (Debian's prometheus package)")

    def test_gatewayExposition(self):
        clock = Clock()
        metrics = GatewayMetrics(clock)
        book = LeaseBook(maxClients=4, leaseSeconds=60)
        lease = book.draft("a", "laptop", "wireguard", "10.0.0.2", {}, 0)
        book.add(lease)
        metrics.watchBook(book, ["wireguard"], lambda: {lease.id: ("wireguard", 1, 2)},
                          perLease=True)
        metrics(STARTING, "started", SERVING)
        metrics.callAnswered(metrics.callStarted(), "gateway.register", 1001)
        metrics.leaseEnded(lease, "expired")
        self.assertEqual(promtoolProblems(generate_latest(metrics.registry)), "")

    def test_clientExposition(self):
        metrics = ClientMetrics()
        metrics.watchAgent(SimpleNamespace(core=SimpleNamespace(session=None)))
        metrics.transitioned(transition(0, "verifying", "answered", "online"))
        entry = transition(1, "online", "failover", "registering", Reason(PROBES, "gone"))
        metrics.transitioned(entry)
        metrics.explained(entry)
        metrics.transitioned(transition(3, "verifying", "answered", "online"))
        metrics.probeSample(None, 0.01)
        metrics.scanned(0.5, 3, 1)
        metrics.offerRejected("blocked")
        self.assertEqual(promtoolProblems(generate_latest(metrics.registry)), "")
