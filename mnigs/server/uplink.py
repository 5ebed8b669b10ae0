"""
Watching the gateway's own uplink.  Each check answers "fine" (None) or a
reason; the monitor runs them every interval and feeds the gateway
machine C{uplinkUp()} or C{uplinkDown(reason)}.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from mnigs.interfaces import IUplinkCheck

log = Logger()


@implementer(IUplinkCheck)
class LinkCheck:
    def __init__(self, netlink, ifname):
        self.netlink = netlink
        self.ifname = ifname

    def check(self):
        try:
            up = self.netlink.linkIsUp(self.ifname)
        except Exception as e:
            return defer.succeed(f"uplink {self.ifname}: {e}")
        return defer.succeed(None if up else f"uplink {self.ifname} is down")


@implementer(IUplinkCheck)
class DefaultRouteCheck:
    def __init__(self, netlink):
        self.netlink = netlink

    def check(self):
        if self.netlink.hasDefaultRoute(4) or self.netlink.hasDefaultRoute(6):
            return defer.succeed(None)
        return defer.succeed("no default route")


class _Ping(ProcessProtocol):
    def __init__(self, done):
        self.done = done

    def processEnded(self, reason):
        self.done.callback(getattr(reason.value, "exitCode", 1) == 0)


@implementer(IUplinkCheck)
class PingCheck:
    """
    Fine when at least one target answers one ping within the timeout.
    """

    def __init__(self, reactor, targets, timeout=1.0, ping="ping"):
        self.reactor = reactor
        self.targets = [str(t) for t in targets]
        self.timeout = timeout
        self.ping = ping

    def _one(self, target):
        done = defer.Deferred()
        argv = [self.ping, "-n", "-q", "-c", "1", "-W", str(max(1, round(self.timeout))), target]
        self.reactor.spawnProcess(_Ping(done), self.ping, argv, env=None,
                                  childFDs={0: "w", 1: "r", 2: "r"})
        return done

    @defer.inlineCallbacks
    def check(self):
        results = yield defer.gatherResults([self._one(t) for t in self.targets])
        if any(results):
            return None
        return f"no answer from {', '.join(self.targets)}"


class UplinkMonitor:
    def __init__(self, reactor, checks, interval, gateway):
        self.checks = checks
        self.gateway = gateway
        self.loop = LoopingCall(self.tick)
        self.loop.clock = reactor
        self.interval = interval
        self.running = None

    def start(self):
        self.loop.start(self.interval, now=True)

    def stop(self):
        if self.loop.running:
            self.loop.stop()

    def tick(self):
        if self.running is not None:
            return  # the previous round is still out (a slow ping)
        self.running = self.runChecks()
        self.running.addBoth(self._done)

    @defer.inlineCallbacks
    def runChecks(self):
        for check in self.checks:
            reason = yield check.check()
            if reason:
                return reason
        return None

    def _done(self, result):
        self.running = None
        if isinstance(result, str):
            self.gateway.uplinkDown(result)
        elif result is None:
            self.gateway.uplinkUp()
        else:
            log.failure("uplink check failed", result)
            self.gateway.uplinkDown("uplink check failed")
