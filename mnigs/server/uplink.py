"""
Watching the gateway's own uplink.  Each check answers "fine" (None) or a
reason; the monitor runs them every interval and feeds the gateway
machine C{uplinkUp()} or C{uplinkDown(reason)}.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from mnigs.interfaces import IUplinkCheck
from mnigs.system.icmp import Pinger

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


@implementer(IUplinkCheck)
class PingCheck:
    """
    Fine when at least one target answers one ICMP echo within the timeout.

    The echoes go out through an L{IPinger} (raw sockets read by the
    reactor, L{mnigs.system.icmp}), as the client's health probes do, not
    through a C{ping(8)} process per target and check: nothing is spawned
    every interval, a timeout below a second is kept (C{ping -W} takes
    whole seconds), and no output is parsed.  The gateway has C{CAP_NET_RAW}
    anyway (etc/systemd/mnigs-server.service).  A pinger is made for each
    round and closed after it, so no socket outlives a check and there is
    nothing for the service to close.

    @param makePinger: makes the round's L{IPinger} (default: a
        L{Pinger} on C{reactor}).
    """

    def __init__(self, reactor, targets, timeout=1.0, makePinger=None):
        self.targets = [str(t) for t in targets]
        self.timeout = timeout
        self.makePinger = makePinger or (lambda: Pinger(reactor))

    def _one(self, pinger, target):
        def unsent(failure):
            # No route, or no socket: that target does not answer.
            log.debug("uplink probe to {target} not sent: {reason}", target=target,
                      reason=failure.value)
            return None
        return defer.maybeDeferred(pinger.ping, target, self.timeout).addErrback(unsent)

    @defer.inlineCallbacks
    def check(self):
        pinger = self.makePinger()
        try:
            rtts = yield defer.gatherResults([self._one(pinger, t) for t in self.targets])
        finally:
            pinger.close()
        if any(rtt is not None for rtt in rtts):
            return None
        return f"no answer from {', '.join(self.targets)}"


class UplinkMonitor:
    """
    Runs the checks in order every C{interval} seconds (the first at
    once), stopping at the first that gives a reason, and tells C{gateway}
    C{uplinkUp()} or C{uplinkDown(reason)}.  A round still out when the
    next is due (a slow probe) makes that next one skip.
    """

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
