# -*- test-case-name: tests.unit.test_pinning,tests.mesh.test_pinning -*-
"""
Make-before-break: after a planned move the connections a session
carried keep going through its tunnel, while new ones take the new
gateway's, until none of them is left.

How the kernel tells them apart:

  - Every flow that first leaves through a session's tunnel device gets
    that session's connection-tracking mark, C{PIN_MARK | slot}
    (L{markChains}: a postrouting chain in the client's nftables table,
    L{mnigs.client.datapath}).  A client keeps at most L{SLOTS} sessions
    (the current one and those it retired) at once.
  - Every packet of a marked flow in its original direction carries the
    flow's mark as its packet mark: in prerouting (a shared LAN's) and in
    a C{route} output chain (the client's own, which the kernel then
    routes again).  Replies are not marked: they go where the flow came
    from, as before.
  - A retired session's slot has a policy rule
    C{fwmark MARK lookup TABLE+slot} at C{rule_priority - 1}, whose table
    holds a default route through the old tunnel (L{PinRouting}).  The
    current session's mark has no rule, so its flows are routed as
    everything else.
  - A shared LAN's flows keep the translation to the old lease's address
    they were given (the client's table translates only new flows); the
    data path forgets them only when the old session goes.

A retired session goes (L{Keeper}) once connection tracking holds none of
its flows (TCP flows in TIME_WAIT or CLOSE do not count), or its lease is
lost, or its tunnel goes, or C{routing.keep_old} seconds have passed
(ICMP does not count: L{liveFlows}).
"""

from __future__ import annotations

import socket
from typing import Callable, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from mnigs.system.admission import checkInterfaceName
from mnigs.system.pyroute import IPRoute, NetlinkError

log = Logger()

#: A session's connection-tracking mark is C{PIN_MARK | slot}; mnigs's
#: marks are those with C{mark & PIN_RANGE == PIN_MARK}.  The low 16 bits
#: only: apart from the client's share mark (0x15000000) and the
#: gateway's hop and reroute marks (0xff0000, 0x4d000000), for a node
#: that runs both.
PIN_MARK = 0x6D00
PIN_RANGE = 0xFFF0
#: The bits a pin rule compares.
PIN_MASK = 0xFFFF
#: The session slots: the current session and the ones kept after a move.
SLOTS = tuple(range(1, 16))

RTN_UNICAST = 1
ICMP = (socket.IPPROTO_ICMP, socket.IPPROTO_ICMPV6)

#: TCP flows in these conntrack states have ended (pyroute2's
#: TCP_CONNTRACK_TIME_WAIT and TCP_CONNTRACK_CLOSE).
TCP_ENDED = (7, 8)


def pinMark(slot: int) -> int:
    "The connection-tracking mark of the session in C{slot}."
    if slot not in SLOTS:
        raise ValueError(f"bad pin slot: {slot!r}")
    return PIN_MARK | slot


def markChains(devices) -> str:
    """
    nft chains (inside an C{inet} table) for C{devices}, pairs of a
    tunnel device and its session's slot: a new flow leaving through a
    device takes its slot's mark, and every packet of a marked flow in
    its original direction carries it (see the module docstring).
    """
    lines = "".join(
        f'\t\toifname "{checkInterfaceName(device)}" ct mark 0 ct mark set {pinMark(slot):#010x}\n'
        for device, slot in devices)
    restore = (f"\t\tct direction original ct mark and {PIN_RANGE:#010x} == {PIN_MARK:#010x} "
               "meta mark set ct mark\n")
    return ("\tchain pinmark {\n"
            "\t\ttype filter hook postrouting priority mangle; policy accept;\n"
            + lines + "\t}\n"
            "\tchain pinin {\n"
            "\t\ttype filter hook prerouting priority mangle; policy accept;\n"
            + restore + "\t}\n"
            "\tchain pinout {\n"
            "\t\ttype route hook output priority mangle; policy accept;\n"
            + restore + "\t}\n")


def liveFlows(entries) -> int:
    """
    How many of conntrack C{entries} (pyroute2 C{ConntrackEntry}) are
    connections still running that a move would break: TCP but those in
    TIME_WAIT or CLOSE, and UDP and the rest; not ICMP (a ping goes on
    through the new gateway as well: its echoes are answered whatever
    address they come from, and the old session's own health probes
    would hold it for their conntrack timeout).
    """
    count = 0
    for entry in entries:
        if entry.tuple_orig.proto in ICMP:
            continue
        info = getattr(entry, "protoinfo", None)
        if info is not None and info.state in TCP_ENDED:
            continue
        count += 1
    return count


class ConntrackCounter:
    """
    The running flows with a mark, IPv4 and IPv6 (netlink, pyroute2), in
    network namespace C{netns} when given.
    """

    def __init__(self, netns: str | None = None):
        self.netns = netns

    def count(self, mark: int) -> int:
        from pyroute2.conntrack import Conntrack

        where = {"netns": self.netns} if self.netns else {}
        total = 0
        for family in (socket.AF_INET, socket.AF_INET6):
            with Conntrack(nfgen_family=family, **where) as ct:
                total += liveFlows(ct.dump_entries(mark=mark))
        return total


class PinRouting:
    """
    The policy rules and tables of retired sessions: slot C{n}'s rule
    C{fwmark 0x6d0n/0xffff lookup TABLE+n} at C{priority - 1}
    (before mnigs's other rules, L{mnigs.client.routes}), its table the
    default routes mnigs's table had through the old device (IPv6's too
    when it had IPv6 egress).

    @param table: C{routing.table}; slot C{n}'s table is C{table + n}.
    @param priority: C{routing.rule_priority}.
    @param ipRoute: opens the rtnetlink socket (a context manager); tests
        give a fake.
    """

    FAMILIES = (socket.AF_INET, socket.AF_INET6)

    def __init__(self, table: int, priority: int,
                 ipRoute: Optional[Callable[[], IPRoute]] = None):
        self.table = table
        self.priority = max(0, priority - 1)
        self._ipr = ipRoute or IPRoute

    def tableOf(self, slot: int) -> int:
        pinMark(slot)
        return self.table + slot

    def pin(self, slot: int, interface: str) -> None:
        """
        Route the flows marked for C{slot} the way mnigs's table routes
        now through C{interface}: its default routes (IPv4, and IPv6 when
        there is one) are copied into the slot's table, so whatever the
        method gave them (a next hop, a source address) stays.  Done
        before the new session's route replaces them.

        @raise LookupError: mnigs's table has no default route through
            C{interface}.
        """
        table = self.tableOf(slot)
        with self._ipr() as ipr:
            index = ipr.link_lookup(ifname=interface)
            if not index:
                raise LookupError(f"no interface {interface}")
            copied = 0
            for family, default in ((socket.AF_INET, "0.0.0.0/0"), (socket.AF_INET6, "::/0")):
                routes = [r for r in ipr.get_routes(family=family, table=self.table)
                          if r["dst_len"] == 0 and r["type"] == RTN_UNICAST
                          and r.get_attr("RTA_OIF") == index[0]]
                if not routes:
                    continue
                route = {"family": family, "dst": default, "table": table, "oif": index[0]}
                for attr, key in (("RTA_GATEWAY", "gateway"), ("RTA_PREFSRC", "prefsrc")):
                    if routes[0].get_attr(attr):
                        route[key] = routes[0].get_attr(attr)
                ipr.route("replace", **route)
                self._delRule(ipr, family, slot)
                ipr.rule("add", family=family, priority=self.priority, fwmark=pinMark(slot),
                         fwmask=PIN_MASK, table=table)
                copied += 1
            if not copied:
                raise LookupError(f"table {self.table} has no default route through {interface}")

    def unpin(self, slot: int) -> None:
        "Remove C{slot}'s rules and flush its table, both families."
        with self._ipr() as ipr:
            for family in self.FAMILIES:
                self._delRule(ipr, family, slot)
                self._flush(ipr, family, self.tableOf(slot))

    def clear(self) -> None:
        "Every slot's rules and tables: what a crashed run left, or this one's on stop."
        with self._ipr() as ipr:
            for family in self.FAMILIES:
                for slot in SLOTS:
                    self._delRule(ipr, family, slot)
                    self._flush(ipr, family, self.tableOf(slot))

    def _delRule(self, ipr, family, slot) -> None:
        for rule in ipr.get_rules(family=family):
            if (rule.get_attr("FRA_PRIORITY") == self.priority
                    and rule.get_attr("FRA_FWMARK") == pinMark(slot)):
                try:
                    ipr.rule("del", family=family, priority=self.priority,
                             fwmark=pinMark(slot), fwmask=PIN_MASK,
                             table=rule.get_attr("FRA_TABLE") or rule["table"])
                except NetlinkError as e:
                    log.warn("could not remove a pin rule: {e}", e=e)

    @staticmethod
    def _flush(ipr, family, table) -> None:
        try:
            ipr.flush_routes(table=table, family=family)
        except NetlinkError as e:
            log.warn("could not flush table {t}: {e}", t=table, e=e)


class Keeper:
    """
    How long a retired session lives: every C{interval} seconds its
    running flows are counted (C{count()}, e.g. L{ConntrackCounter.count}
    with its mark); L{done} fires with why it ended once none is left, at
    C{limit} seconds, or when L{end} is called (its lease was lost, its
    tunnel went, the client stops).  A count that fails is logged and
    the session kept until the limit.
    """

    def __init__(self, clock: IReactorTime, count: Callable[[], int], limit: float,
                 interval: float = 2.0):
        self.clock = clock
        self.count = count
        self.limit = limit
        self.interval = interval
        self.done: defer.Deferred[str] = defer.Deferred()
        self.flows: int | None = None  # the last count
        self._loop = LoopingCall(self._check)
        self._loop.clock = clock
        self._deadline = None

    def start(self) -> defer.Deferred:
        self._deadline = self.clock.callLater(
            self.limit, self.end, f"routing.keep_old ({self.limit:g} s) is over")
        self._loop.start(self.interval, now=False)
        return self.done

    def _check(self) -> None:
        try:
            self.flows = self.count()
        except Exception as e:
            log.warn("could not count an old session's connections: {why}", why=e)
            return
        if self.flows == 0:
            self.end("none of its connections is left")

    def end(self, why: str) -> None:
        "The retired session goes now, for C{why}; once."
        if self.done.called:
            return
        if self._loop.running:
            self._loop.stop()
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self.done.callback(why)

    def describe(self) -> dict:
        left = None
        if self._deadline is not None and self._deadline.active():
            left = max(0, round(self._deadline.getTime() - self.clock.seconds(), 1))
        return {"connections": self.flows, "kept_at_most_for_s": left}


class KeptSessions:
    """
    The sessions planned moves left, each kept (its tunnel, its lease,
    its pinned slot) until its L{Keeper} ends it: L{hold} pins the
    serving session's flows to its tunnel before mnigs's route moves,
    L{keep} watches them, and C{letGo(why)} (the effects': tunnel down,
    lease released) runs once it ends, after the slot's rules and marks
    are gone.

    @param dataPath: the client's table (L{mnigs.client.datapath.ClientDataPath}
        with pinning).
    @param pins: L{PinRouting}.
    @param counter: L{ConntrackCounter}.
    @param keepFor: C{routing.keep_old}, seconds.
    """

    def __init__(self, clock: IReactorTime, dataPath, pins: PinRouting, counter, keepFor: float,
                 interval: float = 2.0):
        self.clock = clock
        self.dataPath = dataPath
        self.pins = pins
        self.counter = counter
        self.keepFor = keepFor
        self.interval = interval
        #: slot -> (the kept session's name, its keeper, its gateway id or None)
        self.kept: dict[int, tuple[str, Keeper, str | None]] = {}
        self._releases: list[defer.Deferred] = []

    def hold(self, device: str) -> int | None:
        """
        The serving session's slot, its flows pinned to C{device}; or
        C{None} when it cannot be kept (no slot, no route through it).
        """
        slot = self.dataPath.retire()
        if slot is None:
            return None
        try:
            self.pins.pin(slot, device)
        except Exception as e:
            log.warn("make-before-break: could not pin the connections through {device}: {why}",
                     device=device, why=e)
            self.dataPath.release(slot)
            return None
        return slot

    def keep(self, slot: int, name: str, letGo: Callable[[str], object],
             gatewayId: str | None = None) -> Keeper:
        """
        Keep C{slot}'s session (with gateway C{gatewayId}, C{name} for the
        log) until its keeper ends it.
        """
        keeper = Keeper(self.clock, lambda: self.counter.count(pinMark(slot)), self.keepFor,
                        self.interval)
        self.kept[slot] = (name, keeper, gatewayId)
        keeper.start().addCallback(self._ended, slot, name, letGo)
        return keeper

    def gatewayIds(self) -> frozenset:
        "The gateways of the kept sessions: no other lease is asked of them meanwhile."
        return frozenset(gid for _, _, gid in self.kept.values() if gid is not None)

    def _ended(self, why, slot, name, letGo):
        del self.kept[slot]
        log.info("make-before-break: {name} let go: {why}", name=name, why=why)
        try:
            self.pins.unpin(slot)
        except Exception as e:
            log.warn("could not remove the pin of {name}: {why}", name=name, why=e)
        released = defer.gatherResults([self.dataPath.release(slot),
                                        defer.maybeDeferred(letGo, why)], consumeErrors=True)
        released.addErrback(lambda f: log.warn("letting go of {name}: {why}", name=name,
                                               why=f.getErrorMessage()))
        self._releases.append(released)
        released.addBoth(lambda _: self._releases.remove(released))

    def releaseAll(self, why: str) -> defer.Deferred:
        "Let every kept session go now (the client stops); fires once they are."
        for _, keeper, _ in list(self.kept.values()):
            keeper.end(why)
        return defer.DeferredList(list(self._releases)).addCallback(lambda _: None)

    def describe(self) -> list[dict]:
        return [dict(keeper.describe(), gateway=name) for name, keeper, _ in self.kept.values()]
