"""
The client's Prometheus metrics (C{/metrics} of its status listener;
every metric is listed in docs/operations.md).

L{ClientMetrics} only counts what it is told, through the client's
existing observation points:

 - the client machine's trace (L{mnigs.client.machine.Trace}, as an
   L{ITransitionObserver}): the state, failovers by reason (the kind of
   the L{mnigs.client.reasons.Reason} the session's watcher gave), and the
   outage from losing a gateway to being online again;
 - the session's reports (L{ISessionReports}, beside the agent; see
   L{mnigs.client.agent.wire}): every health probe round;
 - discovery (L{IDiscoveryObserver}): scans and offers dropped.

The current gateway is read when scraped, by L{currentGateway}.  Nothing
here does I/O or reads a clock of its own: transitions carry their time.
"""

from __future__ import annotations

from prometheus_client import Counter, Enum, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, InfoMetricFamily
from zope.interface import implementer

from mnigs.client.machine import ISessionReports
from mnigs.client.reasons import KINDS, OTHER, SWITCH, kindOf
from mnigs.interfaces import IDiscoveryObserver, ITransitionObserver
from mnigs.protocol import OFFER_REJECTIONS
from mnigs.web.metrics import SnapshotCollector, directly, newRegistry

#: The client machine's states (L{mnigs.client.machine}).
STATES = ("idle", "searching", "waiting", "registering", "connecting", "verifying",
          "online", "degraded", "moving", "promoting", "handingOver", "stopping", "stopped")

#: Where the client has a gateway to lose.
_HOLDING = frozenset({"online", "degraded"})
#: The inputs that leave it: a lost gateway (failover: another one is
#: tried; dropped: nothing else was known; promote: a hot standby takes
#: over) or a move: the policy's, or a planned one (made before break;
#: counted as it is asked for, by its reason's kind: a better gateway,
#: a gateway saying it is unavailable).
_LOST = frozenset({"failover", "dropped", "promote"})
_LEAVING = _LOST | {"switch", "plannedMove", "moveToStandby"}

# Outages last from a second (a failover to a known gateway) to minutes (a
# mesh that has to relearn its routes first).
OUTAGE_BUCKETS = (0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 120, 300, 600)
# Probes cross a mesh and a tunnel: a few ms to a second.
RTT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# A scan settles soon after the first usable answer, or waits out timeouts.
SCAN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30)


@implementer(ITransitionObserver, IDiscoveryObserver, ISessionReports)
class ClientMetrics:
    """
    @param registry: where the metrics live (the daemon's own registry).
    """

    def __init__(self, registry=None):
        self.registry = r = newRegistry() if registry is None else registry
        self.state = Enum(
            "mnigs_client_state", "The client machine's state (1 for the current one).",
            states=list(STATES), registry=r)
        self.failovers = Counter(
            "mnigs_client_failovers",
            "Times the client left its gateway, by reason (switch: for a better one).",
            ["reason"], registry=r)
        self.outage = Histogram(
            "mnigs_client_outage_seconds",
            "Offline time from losing a gateway (its first unanswered probe round) "
            "to being online again.",
            buckets=OUTAGE_BUCKETS, registry=r)
        self.probeRTT = Histogram(
            "mnigs_client_probe_rtt_seconds",
            "Round-trip time of the answered health probe rounds through the tunnel.",
            buckets=RTT_BUCKETS, registry=r)
        self.probes = Counter(
            "mnigs_client_probe_rounds",
            "Health probe rounds through the tunnel, by result (answered or missed).",
            ["result"], registry=r)
        self.scans = Histogram(
            "mnigs_client_discovery_duration_seconds", "How long discovery scans took.",
            buckets=SCAN_BUCKETS, registry=r)
        self.candidates = Gauge(
            "mnigs_client_discovery_candidates", "Addresses the last scan asked.", registry=r)
        self.gatewaysFound = Gauge(
            "mnigs_client_discovery_gateways", "Gateways the last scan heard.", registry=r)
        self.rejected = Counter(
            "mnigs_client_offers_rejected",
            "Answers to gateway.info dropped as unusable offers, by reason.",
            ["reason"], registry=r)
        # Every label value known ahead, so that each series exists (at 0)
        # from the start: a rate over a series that appears at 1 misses it.
        for kind in KINDS:
            self.failovers.labels(kind)
        for kind in OFFER_REJECTIONS:
            self.rejected.labels(kind)
        self._answered = self.probes.labels("answered")
        self._missed = self.probes.labels("missed")
        self._offlineSince: float | None = None
        self._degradedSince: float | None = None

    # -- the machine's trace ----------------------------------------------
    def transitioned(self, transition) -> None:
        old, new = transition.old, transition.new
        if old == new:
            return
        self.state.state(new)
        if new == "degraded":
            self._degradedSince = transition.at
        elif new == "online":
            self._degradedSince = None
            if self._offlineSince is not None:
                self.outage.observe(max(0.0, transition.at - self._offlineSince))
                self._offlineSince = None
        elif old in _HOLDING and transition.input in _LOST:
            # Traffic stopped with the first unanswered probe round, if
            # one came before the loss.
            since, self._degradedSince = self._degradedSince, None
            self._offlineSince = transition.at if since is None else since
        elif new in ("stopping", "stopped"):
            # An outage that never ends is none to count.
            self._offlineSince = self._degradedSince = None

    def explained(self, transition) -> None:
        # The machine explains every move away from a gateway (the reason
        # the session's watcher reported, or "switching to ...").
        if transition.old in _HOLDING and transition.input in _LEAVING:
            default = OTHER if transition.input in _LOST else SWITCH
            self.failovers.labels(kindOf(transition.reason, default)).inc()

    # -- the session's reports ---------------------------------------------
    def probeSample(self, session, rtt) -> None:
        if rtt is None:
            self._missed.inc()
        else:
            self._answered.inc()
            self.probeRTT.observe(rtt)

    def lost(self, session, reason) -> None:
        "Counted when the machine takes it (L{explained})."

    def leaseLost(self, session, reason) -> None:
        "Counted when the machine takes it (L{explained})."

    def probeMissed(self, session, count) -> None:
        "Counted in L{probeSample}."

    def probeAnswered(self, session, rtt) -> None:
        "Counted in L{probeSample}."

    # -- discovery ----------------------------------------------------------
    def scanned(self, seconds, candidates, gateways) -> None:
        self.scans.observe(max(0.0, seconds))
        self.candidates.set(candidates)
        self.gatewaysFound.set(gateways)

    def offerRejected(self, kind) -> None:
        self.rejected.labels(kind if kind in OFFER_REJECTIONS else "malformed").inc()

    # -- read when scraped ---------------------------------------------------
    def watchAgent(self, agent, call=directly) -> None:
        """
        Add the metrics read from C{agent} when scraped, C{call} running
        the read in the reactor thread (L{mnigs.web.metrics.inReactorThread}).
        """
        self.registry.register(SnapshotCollector(lambda: currentGateway(agent.core.session), call))
        self.registry.register(SnapshotCollector(lambda: agentCounts(agent), call))


def agentCounts(agent):
    """
    C{mnigs_client_false_failovers} (L{mnigs.client.falseloss}) and
    C{mnigs_client_degradation_moves} (L{mnigs.client.degrade}), as the
    agent counted them.
    """
    falseFailovers = CounterMetricFamily(
        "mnigs_client_false_failovers",
        "Gateways given up as silent by the health probes that answered over the mesh a "
        "second later (the failover was most likely false).")
    checked = getattr(agent, "falseLosses", None)
    falseFailovers.add_metric((), checked.count if checked is not None else 0)
    moves = CounterMetricFamily(
        "mnigs_client_degradation_moves",
        "Planned moves away from a degraded gateway (lossy or slow) to a measurably better one.")
    moves.add_metric((), getattr(agent, "degradeMoves", 0))
    return [falseFailovers, moves]


def currentGateway(session):
    """
    C{mnigs_client_gateway_info}: the gateway of the session the client is
    online (or degraded) with, none otherwise; one series at most.
    """
    info = InfoMetricFamily("mnigs_client_gateway",
                            "The gateway the client is online with (none while offline).",
                            labels=("gateway", "name", "host", "method"))
    if session is not None:
        step = session.step
        info.add_metric((step.gatewayId, step.seen.offer.name, step.host, step.method), {})
    return [info]
