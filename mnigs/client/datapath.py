# -*- test-case-name: tests.unit.test_datapath,tests.mesh.test_router -*-
"""
The client's own nftables table and IPv4 forwarding: what a mesh router
needs beyond the routes of L{mnigs.client.routes}.

  - LAN sharing (C{[share]}): what a shared prefix or interface sends
    out through the tunnel is translated to the lease's inner address
    (the gateway admits nothing else), and IPv4 forwarding is on while
    the client runs (put back off on stop if the client turned it on).
  - MSS clamping (C{mtu.clamp_mss}): TCP SYNs through the tunnel, both
    ways, carry an MSS that fits the tunnel (L{mnigs.client.mtu}), or the
    route's MTU (C{rt mtu}) when the method's overhead is unknown.
  - Make-before-break (C{routing.keep_old}): each session's flows carry
    its connection-tracking mark, so that those of a session retired by
    a planned move keep going through its tunnel
    (L{mnigs.client.pinning}); a retired session's LAN flows keep their
    translation to its lease's address until it goes.

One C{inet} table (C{share.table}), replaced whole in one transaction
by L{tableScript} whenever a session starts or ends, removed on stop.
Each family has its own lines (C{ip saddr @shared4}, C{snat ip};
C{ip6 saddr @shared6}, C{snat ip6}).  Every script is built from checked
names, L{ipaddress} objects and integers; nothing from the network is
interpolated as text.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Optional, Sequence

from twisted.internet import defer
from twisted.internet.defer import DeferredLock
from twisted.logger import Logger

from mnigs.client.mtu import TCP_HEADERS
from mnigs.client.pinning import SLOTS, markChains
from mnigs.system.admission import checkAddress, checkInterfaceName
from mnigs.system.nft import removeScript
from mnigs.system.sysctl import SysctlSwitch

log = Logger()

_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")

#: The mark a packet from a shared interface gets on its way into the
#: tunnel, for the NAT (the postrouting hook knows no input interface).
SHARE_MARK = 0x15000000

IPV4_FORWARD = "/proc/sys/net/ipv4/ip_forward"
IPV6_FORWARD = "/proc/sys/net/ipv6/conf/all/forwarding"


def checkTableName(name: str) -> str:
    if not isinstance(name, str) or not _TABLE.fullmatch(name):
        raise ValueError(f"bad nft table name: {name!r} (letters, digits, _; at most 32)")
    return name


@dataclass(frozen=True)
class Passage:
    """
    Where an online session's traffic goes: the tunnel C{device}, the
    lease's inner C{address} (an L{ipaddress} address), and the MTU of
    the tunnel (C{mtu}, for an explicit MSS) or C{None} (clamp to the
    route's MTU); C{clamp} false: no clamping; C{address6}, the lease's
    inner IPv6 address when the session has IPv6 egress, else C{None}.
    """
    device: str
    address: ipaddress.IPv4Address
    mtu: Optional[int] = None
    clamp: bool = True
    address6: Optional[ipaddress.IPv6Address] = None

    def __post_init__(self):
        checkInterfaceName(self.device)
        checkAddress(self.address)
        if self.address.version != 4:
            raise ValueError(f"not an IPv4 address: {self.address}")
        if self.address6 is not None:
            checkAddress(self.address6)
            if self.address6.version != 6:
                raise ValueError(f"not an IPv6 address: {self.address6}")
        if self.mtu is not None and (type(self.mtu) is not int or not 576 <= self.mtu <= 65535):
            raise ValueError(f"bad MTU: {self.mtu!r}")


def _names(interfaces: Sequence[str]) -> str:
    return ", ".join(f'"{checkInterfaceName(name)}"' for name in interfaces)


def _clampChains(passage: Passage) -> str:
    """
    TCP SYNs into and out of the tunnel, forwarded or the client's own,
    get an MSS that fits it (the kernel's clamp only ever lowers it).
    Without a known tunnel MTU, forwarded SYNs are clamped to the route's
    MTU (the client's own already fit their route).
    """
    dev = _names([passage.device])
    if passage.mtu is None:
        clamp = "tcp flags syn tcp option maxseg size set rt mtu"
        return ("\tchain clamp {\n"
                "\t\ttype filter hook forward priority mangle; policy accept;\n"
                f"\t\toifname {dev} {clamp}\n"
                f"\t\tiifname {dev} {clamp}\n"
                "\t}\n")
    lines = {way: "".join(
        f"\t\t{way}name {dev} meta nfproto ipv{v} tcp flags syn "
        f"tcp option maxseg size set {passage.mtu - TCP_HEADERS[v]}\n" for v in (4, 6))
        for way in ("oif", "iif")}
    return ("\tchain clampout {\n"
            "\t\ttype filter hook postrouting priority mangle; policy accept;\n"
            + lines["oif"] + "\t}\n"
            "\tchain clampin {\n"
            "\t\ttype filter hook prerouting priority mangle; policy accept;\n"
            + lines["iif"] + "\t}\n")


def _shareChains(passage: Passage, v4, v6, interfaces) -> str:
    """
    The shared LAN's packets leave by the tunnel as the lease's inner
    address: IPv4 as C{address}, IPv6 as C{address6} when the session has
    one (without it, no IPv6 route of mnigs's takes the LAN into the
    tunnel: L{mnigs.client.routes}).
    """
    dev = _names([passage.device])
    six = passage.address6
    forward = nat = ""
    if interfaces:
        forward = ("\tchain share {\n"
                   "\t\ttype filter hook forward priority filter; policy accept;\n"
                   f"\t\tiifname {{ {_names(interfaces)} }} oifname {dev} "
                   f"meta mark set meta mark | {SHARE_MARK:#x}\n"
                   "\t}\n")
        marked = f"\t\toifname {dev} meta nfproto ipv{{v}} meta mark & {SHARE_MARK:#x} == " \
                 f"{SHARE_MARK:#x} snat {{ip}} to {{to}}\n"
        nat += marked.format(v=4, ip="ip", to=passage.address)
        if six is not None:
            nat += marked.format(v=6, ip="ip6", to=six)
    if v4:
        nat += f"\t\toifname {dev} ip saddr @shared4 snat ip to {passage.address}\n"
    if v6 and six is not None:
        nat += f"\t\toifname {dev} ip6 saddr @shared6 snat ip6 to {six}\n"
    if not nat:
        return forward
    return (forward + "\tchain postrouting {\n"
            "\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
            + nat + "\t}\n")


def _prefixSet(name: str, kind: str, networks) -> str:
    body = f"\tset {name} {{\n\t\ttype {kind}\n\t\tflags interval\n"
    if networks:
        body += f"\t\telements = {{ {', '.join(str(n) for n in networks)} }}\n"
    return body + "\t}\n"


def tableScript(table: str, prefixes: Sequence = (), interfaces: Sequence[str] = (),
                passage: Optional[Passage] = None, marks: Sequence = ()) -> str:
    """
    One transaction that replaces table C{inet TABLE} (whether or not it
    exists): the shared prefixes' set, with an online session's
    C{passage} its NAT (when anything is shared) and its clamp, and with
    C{marks} (pairs of a tunnel device and a session slot) the chains
    that mark each session's flows (L{mnigs.client.pinning.markChains}).
    """
    checkTableName(table)
    networks = sorted({ipaddress.ip_network(p) for p in prefixes},
                      key=lambda n: (n.version, int(n.network_address), n.prefixlen))
    v4 = [n for n in networks if n.version == 4]
    v6 = [n for n in networks if n.version == 6]
    body = _prefixSet("shared4", "ipv4_addr", v4) + _prefixSet("shared6", "ipv6_addr", v6)
    if passage is not None:
        if passage.clamp:
            body += _clampChains(passage)
        body += _shareChains(passage, v4, v6, list(interfaces))
    if marks:
        body += markChains(marks)
    return (f"table inet {table} {{}}\n"
            f"delete table inet {table}\n"
            f"table inet {table} {{\n{body}}}\n")


def Forwarding(path: str = IPV4_FORWARD, marker: Optional[str] = None) -> SysctlSwitch:
    """
    IPv4 forwarding (C{path}, the sysctl's file), turned on while a LAN is
    shared and off again only if mnigs turned it on (L{SysctlSwitch}).
    """
    return SysctlSwitch(path, "share: IPv4 forwarding", marker)


def Forwarding6(path: str = IPV6_FORWARD, marker: Optional[str] = None) -> SysctlSwitch:
    """
    IPv6 forwarding (every interface's, C{conf/all}), turned on when the
    shared LAN's IPv6 first goes through a tunnel and off again on stop
    only if mnigs turned it on.  While it is on, the kernel ignores router
    advertisements on interfaces with C{accept_ra=1} (docs/operations.md).
    """
    return SysctlSwitch(path, "share: IPv6 forwarding", marker)


def staleFlow(source, replyTo, old, shared) -> bool:
    """
    Whether a connection tracked from C{source} whose replies go to
    C{replyTo} (L{ipaddress} addresses) must be forgotten now that the
    shared LAN no longer leaves as C{old}: it was translated to one of
    C{old} (though it did not come from there), or it came from the shared
    LAN (C{shared}, networks) and was not translated at all: it began while
    no session was online and, not failing closed, left bare by the mesh's
    own default route.  Either keeps its translation for as long as it
    runs, so its packets would never go through the new session.
    """
    if replyTo in old and source not in old:
        return True
    return replyTo == source and any(source in net for net in shared)


class ConntrackFlows:
    """
    The shared LAN's connections in the kernel's connection tracking
    (pyroute2, netlink).  A LAN flow keeps the translation it was given
    for as long as it runs: after a switch to a gateway with another inner
    address it would leave with the old one and be dropped by the new
    gateway's gate.  L{forget} deletes the flows that L{staleFlow} names,
    so the next packet of each is translated anew.  The shared LAN is its
    prefixes and the networks of its interfaces' addresses.
    """

    def forget(self, old, prefixes=(), interfaces=()) -> int:
        from pyroute2 import Conntrack

        old = {ipaddress.ip_address(a) for a in old}
        shared = list(prefixes) + self._networksOf(interfaces)
        gone = 0
        with Conntrack() as ct:
            for entry in list(ct.dump_entries()):
                try:
                    source = ipaddress.ip_address(entry.tuple_orig.saddr)
                    replyTo = ipaddress.ip_address(entry.tuple_reply.daddr)
                except (TypeError, ValueError):
                    continue
                if staleFlow(source, replyTo, old, shared):
                    ct.delete(entry)
                    gone += 1
        return gone

    @staticmethod
    def _networksOf(interfaces) -> list:
        if not interfaces:
            return []
        from pyroute2 import IPRoute

        networks = []
        with IPRoute() as ipr:
            for name in interfaces:
                for index in ipr.link_lookup(ifname=name):
                    for addr in ipr.get_addr(index=index):
                        networks.append(ipaddress.ip_interface(
                            f"{addr.get_attr('IFA_ADDRESS')}/{addr['prefixlen']}").network)
        return networks


class ClientDataPath:
    """
    The client's table (L{tableScript}) through C{runner} (an
    L{mnigs.system.nft.NftRunner}) and, when anything is shared,
    C{forwarding} (L{Forwarding}, from start) and C{forwarding6}
    (L{Forwarding6}, from the first session with IPv6 egress, when the
    share covers IPv6: an interface, or an IPv6 prefix).  Every change is
    one nft run, in the order asked.  A failed run is logged, not raised:
    the session goes on without clamping or sharing rather than not at all.

    With C{pinning} (make-before-break, L{mnigs.client.pinning}) each
    session given to L{online} takes a free slot, whose mark its flows
    get; L{retire} keeps the current session's slot, marks and LAN
    translations until L{release}.
    """

    def __init__(self, runner, table: str, prefixes: Sequence = (),
                 interfaces: Sequence[str] = (), clamp: bool = True, forwarding=None,
                 forwarding6=None, flows=None, pinning: bool = False):
        self.runner = runner
        self.table = checkTableName(table)
        self.prefixes = [ipaddress.ip_network(p) for p in prefixes]
        self.interfaces = [checkInterfaceName(name) for name in interfaces]
        self.clamp = clamp
        self.pinning = pinning
        self.sharing = bool(self.prefixes or self.interfaces)
        self.sharing6 = bool(self.interfaces or any(p.version == 6 for p in self.prefixes))
        self.forwarding = forwarding if forwarding is not None else Forwarding()
        self.forwarding6 = forwarding6 if forwarding6 is not None else Forwarding6()
        self.flows = flows if flows is not None else ConntrackFlows()
        self._translatedTo: tuple = ()  # the addresses the shared LAN's flows leave as now
        self._passage: Optional[Passage] = None  # the current session's
        self._slot: Optional[int] = None  # its slot (pinning)
        self._retired: dict[int, Passage] = {}  # slot -> a retired session's passage
        self._lastSlot = 0
        self._lock = DeferredLock()

    @property
    def needed(self) -> bool:
        """Whether there is anything for the table to do."""
        return self.sharing or self.clamp or self.pinning

    def _apply(self, script: str, what: str):
        d = self._lock.run(self.runner.apply, script)
        d.addErrback(lambda f: log.error("nft: could not {what} table {table}: {why}", what=what,
                                         table=self.table, why=f.getErrorMessage()))
        return d

    def _script(self) -> str:
        marks = [(p.device, slot) for slot, p in sorted(self._retired.items())]
        if self._passage is not None and self._slot is not None:
            marks.insert(0, (self._passage.device, self._slot))
        return tableScript(self.table, self.prefixes, self.interfaces, self._passage, marks)

    @staticmethod
    def _switch(switch, on: bool) -> None:
        try:
            switch.enable() if on else switch.restore()
        except OSError as e:
            log.error("{what}: could not turn it {way}: {why}", what=switch.what,
                      way="on" if on else "back off", why=e)

    def start(self):
        if self.sharing:
            self._switch(self.forwarding, True)
        if not self.needed:
            return self._apply(removeScript(self.table), "remove")
        return self._apply(self._script(), "install")

    def _freeSlot(self) -> Optional[int]:
        # The next free slot after the last one given, so that a slot is
        # reused as late as possible (a dead session's flows keep its mark).
        for k in range(len(SLOTS)):
            slot = SLOTS[(self._lastSlot + k) % len(SLOTS)]
            if slot not in self._retired:
                self._lastSlot = slot
                return slot
        log.warn("make-before-break: {count} old sessions are kept already; the next move "
                 "will break its connections", count=len(self._retired))
        return None

    def online(self, passage: Passage):
        if not self.needed:
            return defer.succeed(None)
        if not self.clamp:
            passage = Passage(passage.device, passage.address, passage.mtu, clamp=False,
                              address6=passage.address6)
        if passage.address6 is not None and self.sharing6:
            self._switch(self.forwarding6, True)
        self._passage = passage
        self._slot = self._freeSlot() if self.pinning else None
        log.info("nft: table {table} for {device} as {address}{six} ({mss})", table=self.table,
                 device=passage.device, address=passage.address,
                 six=f" and {passage.address6}" if passage.address6 is not None else "",
                 mss=(("MSS for MTU %d" % passage.mtu) if passage.mtu else "MSS to the route's MTU")
                 if self.clamp else "no clamping")
        return self._apply(self._script(), "update").addCallback(lambda _: self._forgetFlows())

    def offline(self):
        if not self.needed:
            return defer.succeed(None)
        self._passage = self._slot = None
        return self._apply(self._script(), "update").addCallback(lambda _: self._forgetFlows())

    def retire(self) -> Optional[int]:
        """
        Keep the current session's marks and LAN translations beyond the
        next L{online} or L{offline}, until L{release}: its slot, or
        C{None} (no pinning, no session, or no slot: it cannot be kept).
        The table is written by the next change.
        """
        slot, passage = self._slot, self._passage
        if slot is None or passage is None:
            return None
        self._retired[slot] = passage
        self._passage = self._slot = None
        return slot

    def release(self, slot: int):
        "A retired session goes: its marks, and its LAN flows' translations."
        if self._retired.pop(slot, None) is None:
            return defer.succeed(None)
        return self._apply(self._script(), "update").addCallback(lambda _: self._forgetFlows())

    def _forgetFlows(self) -> None:
        """
        The shared LAN's flows leave as the current session's addresses
        and the retired ones': the flows translated to any other address
        of before go, and, while any of them is there, those the LAN began
        bare while none was (L{ConntrackFlows}, L{staleFlow}).
        """
        now = tuple(a for p in [self._passage, *self._retired.values()] if p is not None
                    for a in (p.address, p.address6) if a is not None) if self.sharing else ()
        before, self._translatedTo = self._translatedTo, now
        old = set(before) - set(now)
        if not self.sharing or not (old or now):
            return
        try:
            gone = self.flows.forget(old, self.prefixes, self.interfaces)
        except Exception as e:  # netlink refused: the flows time out instead
            log.error("share: could not forget the LAN's stale flows: {why}", why=e)
            return
        if gone:
            log.info("share: {count} LAN flow(s) translated to {addresses} or not at all "
                     "forgotten: their next packet is translated anew", count=gone,
                     addresses=", ".join(map(str, sorted(old, key=str))) or "no address")

    def stop(self):
        self._passage = self._slot = None
        self._retired.clear()
        d = self._apply(removeScript(self.table), "remove")

        def restore(_):
            self._switch(self.forwarding, False)
            self._switch(self.forwarding6, False)

        return d.addBoth(restore)
