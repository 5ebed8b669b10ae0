"""
What both daemons' C{/metrics} share: prometheus_client's Twisted resource
over a daemon's own L{CollectorRegistry}, and L{SnapshotCollector}, a
collector whose values are read in the reactor thread.

prometheus_client's C{MetricsResource} is a WSGI resource: it collects in
a thread of the reactor's thread pool.  Counters and histograms lock, so
updating them from the reactor thread is safe; but the lease book, the
client's session and the like are plain objects that only the reactor
thread may read while they change.  A L{SnapshotCollector} therefore hands
its C{read} to the reactor thread and waits (at most L{SNAPSHOT_TIMEOUT}
seconds: a scrape that arrives while the reactor shuts down fails instead
of holding the thread pool, which shutdown joins, forever).
"""

from __future__ import annotations

import threading
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from twisted.python.failure import Failure
from twisted.python.threadable import isInIOThread

#: Seconds a scrape waits for the reactor thread to read the state.
SNAPSHOT_TIMEOUT = 5.0


class SnapshotTimeout(Exception):
    "The reactor did not read the state in time (it is busy or stopping)."


def inReactorThread(reactor, timeout: float = SNAPSHOT_TIMEOUT):
    """
    A caller that runs C{f()} in C{reactor}'s thread and returns its
    result to the calling (pool) thread: what a L{SnapshotCollector} reads
    with in a daemon.  Unlike C{blockingCallFromThread}, it gives up after
    C{timeout} seconds; called in the reactor thread itself (the manhole),
    it calls C{f} at once.
    """
    def call(f: Callable[[], object]) -> object:
        if isInIOThread():
            return f()
        done = threading.Event()
        outcome: list = []

        def run() -> None:
            try:
                outcome.append((True, f()))
            except BaseException:
                outcome.append((False, Failure()))
            done.set()

        reactor.callFromThread(run)
        if not done.wait(timeout):
            raise SnapshotTimeout(f"the reactor did not answer within {timeout} s")
        ok, value = outcome[0]
        if not ok:
            value.raiseException()
        return value

    return call


def directly(f: Callable[[], object]) -> object:
    "The caller for tests and the reactor thread itself: call C{f} now."
    return f()


class SnapshotCollector(Collector):
    """
    Yields the metric families that C{read()} makes, C{read} running
    through C{call} (L{inReactorThread} in a daemon, L{directly} in tests).
    """

    def __init__(self, read: Callable[[], Iterable[Metric]], call=directly):
        self.read = read
        self.call = call

    def collect(self) -> Iterable[Metric]:
        return self.call(lambda: list(self.read()))


def makeMetricsResource(registry: CollectorRegistry):
    """
    C{/metrics}: prometheus_client's Twisted resource over C{registry}.
    Imported here, when the listener is built: the module binds the global
    reactor as it is imported, which must be installed by then (twistd has).
    """
    from prometheus_client.twisted import MetricsResource

    return MetricsResource(registry=registry)


def newRegistry() -> CollectorRegistry:
    "A daemon's own registry (never prometheus_client's global one)."
    return CollectorRegistry(auto_describe=False)
