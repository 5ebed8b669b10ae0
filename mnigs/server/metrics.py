"""
The gateway's Prometheus metrics (C{/metrics} of its status listener;
every metric is listed in docs/operations.md).

L{GatewayMetrics} counts what it is told, through the gateway's existing
observation points:

 - the gateway machine's transitions (it is the machine's tracer, see
   L{mnigs.system.tracing.setTrace}): the state, whether it is available,
   whether its uplink is up;
 - the JSON-RPC resource (L{IRPCObserver}): calls, errors by code, latency;
 - the registry (L{ILeaseObserver}): how leases end (expiries among them).

What the lease book holds (leases by method, clients, the bytes the live
leases carried) is read when scraped, by L{bookMetrics}.  Labels stay
bounded: methods, error codes, states; a lease's id and its client's name
label a series only with C{web.metrics_per_lease}.
"""

from __future__ import annotations

import bisect
from typing import Callable

from prometheus_client import Counter, Enum, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from zope.interface import implementer

from mnigs.interfaces import ILeaseObserver, IRPCObserver
from mnigs.server.registry import LEASE_ENDS
from mnigs.web.metrics import SnapshotCollector, directly, newRegistry

#: The gateway machine's states (L{mnigs.server.machine}).
STATES = ("starting", "serving", "unavailable", "draining", "clearing", "drained",
          "stopping", "stopped")

#: The calls of the protocol; anything else is counted as C{invalid}.
RPC_METHODS = ("gateway.info", "gateway.register", "gateway.renew", "gateway.unregister")
INVALID = "invalid"

# Answers take well under a millisecond (info) to tens of milliseconds (a
# register that waits for the data path and the lease journal's fsync).
RPC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
               0.5, 1.0, 2.5, 5.0)


@implementer(IRPCObserver, ILeaseObserver)
class GatewayMetrics:
    """
    @param clock: times the RPC calls (the reactor).
    @param registry: where the metrics live (the daemon's own registry).
    @param call: runs what is read when scraped in the reactor thread
        (L{mnigs.web.metrics.inReactorThread} in the daemon).
    """

    def __init__(self, clock, registry=None, call=directly):
        self.clock = clock
        self.call = call
        self.registry = r = newRegistry() if registry is None else registry
        self.state = Enum(
            "mnigs_server_state", "The gateway machine's state (1 for the current one).",
            states=list(STATES), registry=r)
        self.available = Gauge(
            "mnigs_server_available", "1 while the gateway serves (offers say available).",
            registry=r)
        self.uplinkUp = Gauge(
            "mnigs_server_uplink_up",
            "1 when the last uplink check found the uplink usable, 0 otherwise (and before it).",
            registry=r)
        # The calls are counted in plain numbers, read when scraped: at
        # thousands of calls a second, prometheus_client's locked counters
        # and histograms cost a few per cent of a gateway.info call.
        self.rpc = {method: CallStats() for method in RPC_METHODS + (INVALID,)}
        r.register(SnapshotCollector(lambda: rpcMetrics(self.rpc), call))
        self.leaseEnds = Counter(
            "mnigs_server_lease_ends",
            "Leases ended, by method and how (expired: not renewed in time).",
            ["method", "reason"], registry=r)

    # -- the gateway machine's tracer ----------------------------------------
    def __call__(self, old, input: str, new) -> None:
        if input == "uplinkUp":
            self.uplinkUp.set(1)
        elif input == "uplinkDown":
            self.uplinkUp.set(0)
        if old is not new:
            self.state.state(new.name)
            self.available.set(1 if new.name == "serving" else 0)

    # -- the RPC resource ----------------------------------------------------
    def callStarted(self) -> float:
        return self.clock.seconds()

    def callAnswered(self, token: float, method, code) -> None:
        stats = self.rpc.get(method) or self.rpc[INVALID]
        stats.add(self.clock.seconds() - token, code)

    # -- the registry ---------------------------------------------------------
    def leaseEnded(self, lease, end: str) -> None:
        self.leaseEnds.labels(lease.method, end if end in LEASE_ENDS else "released").inc()

    # -- read when scraped ----------------------------------------------------
    def watchBook(self, book, methods, traffic: Callable[[], dict] | None = None,
                  perLease: bool = False) -> None:
        """
        Add the metrics read from the lease C{book} when scraped.  C{methods}: the names of
        the methods served (each gets a series, 0 when it has no lease).
        C{traffic}: see L{bookMetrics}.
        """
        methods = tuple(methods)
        self.registry.register(SnapshotCollector(
            lambda: bookMetrics(book, methods, traffic, perLease), self.call))


class CallStats:
    """
    One method's calls: how many, their errors by code, and their
    durations as a histogram over L{RPC_BUCKETS} (C{buckets[i]}: calls
    that took at most C{RPC_BUCKETS[i]} and more than the bound before;
    the last: more than every bound).  Touched by the reactor thread only.
    """

    __slots__ = ("count", "seconds", "buckets", "errors")

    def __init__(self):
        self.count = 0
        self.seconds = 0.0
        self.buckets = [0] * (len(RPC_BUCKETS) + 1)
        self.errors: dict[int, int] = {}

    def add(self, seconds: float, code) -> None:
        if seconds < 0.0:  # the clock was stepped back
            seconds = 0.0
        self.count += 1
        self.seconds += seconds
        self.buckets[bisect.bisect_left(RPC_BUCKETS, seconds)] += 1
        if code:  # 0: a result; None: the caller hung up first
            self.errors[code] = self.errors.get(code, 0) + 1


def rpcMetrics(stats: dict):
    "The RPC metric families from each method's L{CallStats}."
    calls = CounterMetricFamily("mnigs_server_rpc_calls", "JSON-RPC calls answered, by method.",
                                labels=("method",))
    errors = CounterMetricFamily(
        "mnigs_server_rpc_errors", "JSON-RPC calls answered with an error, by method and code.",
        labels=("method", "code"))
    duration = HistogramMetricFamily(
        "mnigs_server_rpc_duration_seconds",
        "Time from a call's arrival (whole) to its answer, by method.", labels=("method",))
    bounds = [repr(float(b)) for b in RPC_BUCKETS] + ["+Inf"]
    for method, each in stats.items():
        calls.add_metric((method,), each.count)
        for code, count in sorted(each.errors.items()):
            errors.add_metric((method, str(code)), count)
        cumulative, running = [], 0
        for bound, count in zip(bounds, each.buckets):
            running += count
            cumulative.append((bound, running))
        duration.add_metric((method,), cumulative, each.seconds)
    return [calls, errors, duration]


def bookMetrics(book, methods, traffic=None, perLease=False):
    """
    The lease book's metric families, as of now.

    C{traffic()} returns C{{lease id: (method, bytes_in, bytes_out)}} for
    the live leases whose bytes are counted (bytes_in: from the client,
    bytes_out: to it), or C{traffic} is None: no traffic metrics.  With
    C{perLease}, each lease also gets its own series, labelled with its id
    and its client's name (as many series as leases: for small gateways).
    """
    leases = GaugeMetricFamily("mnigs_server_leases", "Live leases, by method.",
                               labels=("method",))
    for method in methods:
        leases.add_metric((method,), len(book.byMethod.get(method, ())))
    clients = GaugeMetricFamily(
        "mnigs_server_clients", "Live leases in all, as counted against max_clients and offered.",
        value=len(book))
    maxClients = GaugeMetricFamily(
        "mnigs_server_max_clients", "How many leases the gateway takes at most.",
        value=book.maxClients)
    families = [leases, clients, maxClients]
    if traffic is None:
        return families
    carried = GaugeMetricFamily(
        "mnigs_server_lease_traffic_bytes",
        "Bytes the live leases carried so far, by method and direction (in: to the clients).",
        labels=("method", "direction"))
    totals = {method: [0, 0] for method in methods}
    each = GaugeMetricFamily(
        "mnigs_server_lease_bytes",
        "Bytes each live lease carried so far, by direction (in: to its client).",
        labels=("lease", "client", "method", "direction"))
    for leaseId, (method, received, sent) in traffic().items():
        if received is None or sent is None:
            continue  # a method that does not count (cjdns)
        total = totals.setdefault(method, [0, 0])
        total[0] += received
        total[1] += sent
        if perLease:
            lease = book.byId.get(leaseId)
            name = lease.clientName if lease is not None else ""
            each.add_metric((leaseId, name, method, "in"), received)
            each.add_metric((leaseId, name, method, "out"), sent)
    for method, (received, sent) in totals.items():
        carried.add_metric((method, "in"), received)
        carried.add_metric((method, "out"), sent)
    families.append(carried)
    if perLease:
        families.append(each)
    return families
