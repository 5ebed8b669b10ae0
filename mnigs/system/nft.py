# -*- test-case-name: tests.unit.test_nft,tests.mesh.test_nft,tests.mesh.test_gate -*-
"""
nftables: a runner for C{nft -f -} / C{nft -j list}, and the gateway's data
path gate (L{NftAccess}), one C{inet} table whose sets hold every lease's
address together with where its packets must come from
(L{mnigs.system.admission.Admission}; the rules are in L{tableScript}).

Every script is built here from validated names, L{ipaddress} objects and
checked MACs; nothing from outside is interpolated as text.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Iterable, Optional, Sequence, Union

from twisted.internet.defer import Deferred, DeferredLock
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mnigs.system.admission import Admission, checkAddress, checkInterfaceName
from mnigs.interfaces import IAccessList
from mnigs.system.command import runCommand
from mnigs.system.nftnetlink import NetlinkUnavailable

log = Logger()

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")  # fullmatch


def checkTableName(name: object) -> str:
    if not isinstance(name, str) or not _TABLE.fullmatch(name):
        raise ValueError(f"bad table name: {name!r}")
    return name


class NftError(Exception):
    """nft exited non-zero; C{stderr} is what it said."""

    def __init__(self, argv: Sequence[str], exitCode: Optional[int], stderr: str) -> None:
        super().__init__(argv, exitCode, stderr)
        self.argv = tuple(argv)
        self.exitCode = exitCode
        self.stderr = stderr

    def __str__(self) -> str:
        return f"{' '.join(self.argv)} exited {self.exitCode}: {self.stderr.strip()}"


class NftRunner:
    """Runs C{nft}, in network namespace C{netns} when given."""

    def __init__(self, reactor, nft: str = "nft", netns: Optional[str] = None,
                 timeout: float = 30, spawn=None) -> None:
        self._reactor = reactor
        self._prefix = (["ip", "netns", "exec", netns] if netns else []) + [nft]
        self._timeout = timeout
        self._spawn = spawn

    def _run(self, args: Sequence[str], stdin: bytes = b"") -> Deferred:
        argv = self._prefix + list(args)
        d = runCommand(self._reactor, argv, stdin=stdin, env=None,
                       timeout=self._timeout, spawn=self._spawn)

        def check(result):
            if result.exitCode != 0:
                raise NftError(argv, result.exitCode, result.stderr.decode("utf-8", "replace"))
            return result.stdout

        return d.addCallback(check)

    def apply(self, script: str) -> Deferred[None]:
        """Apply C{script} as one nft transaction (all or nothing)."""
        return self._run(["-f", "-"], script.encode("utf-8")).addCallback(lambda _: None)

    def listJSON(self, args: Sequence[str]) -> Deferred[dict]:
        """C{nft -j list ARGS...}, parsed."""
        return self._run(["-j", "list", *args]).addCallback(json.loads)


#: The gate's sets (see L{tableScript}), in the order batches touch them.
SET_TYPES = {
    "clients4": "ipv4_addr", "clients6": "ipv6_addr",
    "tunnel4": "ipv4_addr . ifname", "tunnel6": "ipv6_addr . ifname",
    "link4": "ipv4_addr . ifname . ether_addr", "link6": "ipv6_addr . ifname . ether_addr",
}


#: The sets whose elements count what they match: what comes back to each
#: admitted address (in), and what each link-bound lease sends (out).
#: The kernel gives each element added later the set's counter too.
COUNTED_SETS = ("clients4", "clients6", "link4", "link6")

_V4, _V6 = ipaddress.IPv4Address, ipaddress.IPv6Address
#: What each part of a set's elements is: an address, an interface name
#: (text), a MAC (six bytes).
_SET_PARTS = {
    "clients4": (_V4,), "clients6": (_V6,),
    "tunnel4": (_V4, str), "tunnel6": (_V6, str),
    "link4": (_V4, str, bytes), "link6": (_V6, str, bytes),
}


def checkElement(setName: str, key: tuple) -> tuple:
    """Refuse an element key whose parts are not what C{setName} holds."""
    kinds = _SET_PARTS.get(setName)
    if kinds is None:
        raise ValueError(f"not a set of the gate: {setName!r}")
    if (not isinstance(key, tuple) or len(key) != len(kinds)
            or not all(isinstance(part, kind) for part, kind in zip(key, kinds))):
        raise TypeError(f"not an element of {setName}: {key!r}")
    elementText(key)  # checks each part's value
    return key


def addressSet(address: IPAddress) -> str:
    """The set of every admitted address of C{address}'s family."""
    return f"clients{address.version}"


def boundSet(admission: Admission) -> str:
    """The set holding C{admission}'s address with where it must come from."""
    kind = "tunnel" if admission.linkAddress is None else "link"
    return f"{kind}{admission.family}"


def checkAdmission(admission: object) -> Admission:
    if not isinstance(admission, Admission):
        raise TypeError(f"expected an Admission, not {admission!r}")
    return admission


def _part(part) -> str:
    if isinstance(part, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return str(checkAddress(part))
    if isinstance(part, str):
        return f'"{checkInterfaceName(part)}"'
    if isinstance(part, bytes) and len(part) == 6:
        return ":".join(f"{b:02x}" for b in part)
    raise TypeError(f"not a part of a gate set element: {part!r}")


def elementText(key: tuple) -> str:
    """A set element in nft's syntax, e.g. C{100.64.0.2 . "wg0"}."""
    return " . ".join(_part(part) for part in key)


def _elements(keys: Iterable[tuple]) -> str:
    return ", ".join(elementText(key) for key in keys)


def gateElements(admissions: Iterable[Admission]) -> dict[str, list[tuple]]:
    """Set name -> the sorted element keys that admit exactly C{admissions}."""
    elements: dict[str, set[tuple]] = {name: set() for name in SET_TYPES}
    for admission in map(checkAdmission, admissions):
        elements[addressSet(admission.address)].add((admission.address,))
        elements[boundSet(admission)].add(admission.key())
    return {name: sorted(keys, key=_keyOrder) for name, keys in elements.items()}


def _keyOrder(key: tuple) -> tuple:
    return tuple((0, p.version, int(p)) if isinstance(p, (ipaddress.IPv4Address, ipaddress.IPv6Address))
                 else (1, 0, p) if isinstance(p, str) else (2, 0, p.hex()) for p in key)


#: The mark bit flipped on a tunnel daemon's UDP replies so that the kernel
#: routes them again (see L{tableScript}); flipped back before they leave.
REROUTE_MARK = 0x4D000000


def _replyChains(ports: Sequence[int]) -> str:
    """
    wireguard-go and openvpn --multihome answer a peer through the interface
    its packet arrived on (IP_PKTINFO with that ifindex).  On a mesh the way
    back often leaves by another interface; the kernel then takes the peer
    for on-link on the arrival interface, asks ARP there, and the answer is
    lost (bench/wg_sticky_reply.sh).  A changed mark makes the output hook
    route the packet again (ip_route_me_harder), by the tables and without
    the arrival interface; the postrouting hook puts the mark back.
    """
    if not ports:
        return ""
    for port in ports:
        if type(port) is not int or not 0 < port < 65536:  # bool is not int here
            raise ValueError(f"bad UDP port: {port!r}")
    elements = ", ".join(str(p) for p in sorted(set(ports)))
    flip = f"udp sport {{ {elements} }} meta mark set meta mark ^ {REROUTE_MARK:#x}"
    return (
        "\tchain reroute {\n"
        "\t\ttype route hook output priority mangle; policy accept;\n"
        f"\t\t{flip}\n"
        "\t}\n"
        "\tchain unmark {\n"
        "\t\ttype filter hook postrouting priority mangle; policy accept;\n"
        f"\t\t{flip}\n"
        "\t}\n"
    )


def _strictChain(interfaces: Sequence[str]) -> str:
    """
    Strict reverse-path filtering on the tunnel interfaces: what comes out
    of a tunnel must have a source that the gateway routes back into that
    same tunnel (its pool), whatever it is sent to (the uplink, the mesh,
    the gateway itself).  Not on mesh interfaces, where the way back to a
    source may rightly be another link.
    """
    if not interfaces:
        return ""
    names = ", ".join(f'"{checkInterfaceName(name)}"' for name in sorted(set(interfaces)))
    return (
        "\tchain prerouting {\n"
        "\t\ttype filter hook prerouting priority raw; policy accept;\n"
        f"\t\tiifname {{ {names} }} fib saddr . iif oif missing drop\n"
        "\t}\n"
    )


def _routedPrefixes(prefixes: Sequence[ipaddress.IPv6Network]) -> str:
    """
    The IPv6 pools routed to the gateway (C{nat6 = false}): their clients'
    own addresses leave by the uplink as they are, not masqueraded.
    """
    if not prefixes:
        return ""
    for prefix in prefixes:
        if not isinstance(prefix, ipaddress.IPv6Network):
            raise TypeError(f"not an IPv6 network: {prefix!r}")
    return f"ip6 saddr {{ {', '.join(str(p) for p in sorted(set(prefixes)))} }} accept"


def _clampChain(uplink: str) -> str:
    """
    TCP MSS clamping on everything the gateway forwards to or from its
    uplink, tunnels and forward leases alike: a SYN's MSS is lowered (never
    raised) to what fits the route it takes, so an Internet host's segments
    fit the client's tunnel (or mesh link) without path MTU discovery
    across the NAT.  The client clamps its end to its path MTU
    (L{mnigs.client.datapath}).
    """
    up = f'"{checkInterfaceName(uplink)}"'
    clamp = "tcp flags syn tcp option maxseg size set rt mtu"
    return (
        "\tchain clamp {\n"
        "\t\ttype filter hook forward priority mangle; policy accept;\n"
        f"\t\tiifname {up} {clamp}\n"
        f"\t\toifname {up} {clamp}\n"
        "\t}\n"
    )


def tableScript(table: str, uplink: str, admissions: Iterable[Admission],
                replyPorts: Sequence[int] = (), strictInterfaces: Sequence[str] = (),
                routed6: Sequence[ipaddress.IPv6Network] = ()) -> str:
    """
    One transaction that replaces table C{inet TABLE} (whether or not it
    exists) by the gate admitting exactly C{admissions}, with strict
    reverse-path filtering on C{strictInterfaces} (L{_strictChain}) and,
    for the local UDP C{replyPorts} of the tunnel daemons, replies routed
    by the tables rather than by the interface the peer's packet came in
    on.

    A packet leaves by the uplink only if its source address and input
    interface are a tunnel lease's (C{tunnel4}/C{tunnel6}), or its source
    address, input interface and source MAC are a link-bound lease's
    (C{link4}/C{link6}).  What comes back is let in only for an address
    that is still admitted (C{clients4}/C{clients6}); the same sets pick
    what is masqueraded, but for sources in the IPv6 prefixes C{routed6}
    (pools routed to the gateway, whose addresses leave as they are).  The
    elements of L{COUNTED_SETS} count the packets they let through
    (L{NftAccess.counters}).
    """
    elements = gateElements(admissions)
    up = f'"{checkInterfaceName(uplink)}"'
    routed = _routedPrefixes(routed6)

    def setBlock(name: str) -> str:
        body = f"\t\ttype {SET_TYPES[name]}\n"
        if name in COUNTED_SETS:
            body += "\t\tcounter\n"
        if elements[name]:
            body += f"\t\telements = {{ {_elements(elements[name])} }}\n"
        return f"\tset {name} {{\n{body}\t}}\n"

    return (
        f"table inet {table} {{}}\n"
        f"delete table inet {table}\n"
        f"table inet {table} {{\n"
        + "".join(setBlock(name) for name in SET_TYPES)
        + _strictChain(strictInterfaces) +
        "\tchain forward {\n"
        "\t\ttype filter hook forward priority filter; policy accept;\n"
        f"\t\toifname {up} ip saddr . iifname @tunnel4 accept\n"
        f"\t\toifname {up} ip6 saddr . iifname @tunnel6 accept\n"
        f"\t\toifname {up} ip saddr . iifname . ether saddr @link4 accept\n"
        f"\t\toifname {up} ip6 saddr . iifname . ether saddr @link6 accept\n"
        f"\t\toifname {up} drop\n"
        f"\t\tiifname {up} ct state established,related ip daddr @clients4 accept\n"
        f"\t\tiifname {up} ct state established,related ip6 daddr @clients6 accept\n"
        f"\t\tiifname {up} drop\n"
        "\t}\n"
        "\tchain postrouting {\n"
        "\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
        f"\t\toifname {up} ip saddr @clients4 masquerade\n"
        + (f"\t\toifname {up} {routed}\n" if routed else "") +
        f"\t\toifname {up} ip6 saddr @clients6 masquerade\n"
        "\t}\n"
        + _clampChain(uplink)
        + _replyChains(replyPorts) +
        "}\n"
    )


def _elementKey(setName: str, value) -> tuple:
    parts = value["concat"] if isinstance(value, dict) else [value]
    kinds = _SET_PARTS[setName]
    if len(parts) != len(kinds):
        raise ValueError(f"not an element of {setName}: {value!r}")
    key = []
    for part, kind in zip(parts, kinds):
        if kind is bytes:
            key.append(bytes.fromhex(part.replace(":", "")))
        elif kind is str:
            key.append(part)
        else:
            key.append(kind(part))
    return tuple(key)


def elementValue(element):
    """
    An element of a set in C{nft -j}'s answer without what it carries
    besides its value (a counter: C{{"elem": {"val": ..., "counter": ...}}}).
    """
    if isinstance(element, dict) and isinstance(element.get("elem"), dict):
        return element["elem"]["val"]
    return element


def parseCounters(answer: dict) -> dict[tuple[str, tuple], int]:
    """
    (set name, element key) -> bytes matched, from C{nft -j list table}'s
    answer, for the elements of L{COUNTED_SETS} that have a counter.
    """
    counted = {}
    for item in answer.get("nftables", []):
        found = item.get("set") if isinstance(item, dict) else None
        if not found or found.get("name") not in COUNTED_SETS:
            continue
        for element in found.get("elem", []):
            inner = element.get("elem") if isinstance(element, dict) else None
            if not isinstance(inner, dict) or not isinstance(inner.get("counter"), dict):
                continue
            key = _elementKey(found["name"], elementValue(element))
            counted[(found["name"], key)] = int(inner["counter"]["bytes"])
    return counted


def removeScript(table: str) -> str:
    """Delete the table; creating it first makes a missing table no error."""
    return f"table inet {table} {{}}\ndelete table inet {table}\n"


def changesScript(table: str, changes: dict[tuple[str, tuple], bool]) -> str:
    """
    Add (C{True}) or delete (C{False}) each (set name, element key) of
    C{changes}.  A deleted element is added and then deleted in the same
    transaction, because deleting an element that is not there fails the
    whole transaction.
    """
    for setName, key in changes:
        checkElement(setName, key)
    lines = []
    for name in SET_TYPES:
        touched = [key for (setName, key) in changes if setName == name]
        denied = [key for key in touched if not changes[(name, key)]]
        if touched:
            lines.append(f"add element inet {table} {name} {{ {_elements(touched)} }}")
        if denied:
            lines.append(f"delete element inet {table} {name} {{ {_elements(denied)} }}")
    return "".join(line + "\n" for line in lines)


@implementer(IAccessList)
class NftAccess:
    """
    The gate as one nftables table.  C{allow}/C{deny} calls made in the same
    reactor turn, or while an earlier C{nft} run is still going, are applied
    together in one C{nft} run; every nft run of this object happens in the
    order asked, one at a time.

    Batching while a run goes matters: an nft run that deletes an element
    takes ~15 ms (most of it in nft closing its netlink socket), so one run
    per call would cap unregistrations at ~60 a second.

    With C{elements} (a L{mnigs.system.nftnetlink.NftSetElements}), allow/deny
    batches go over its netlink socket instead, in ~0.2 ms and without a
    process; the table itself is still installed and removed with nft.  If
    no netlink socket can be had, nft does it all.

    It keeps the admissions asked for, so that an address stays in
    C{clients4}/C{clients6} (replies, NAT) while any admission of it does,
    even when one is replaced by another for the same address.
    """

    def __init__(self, reactor, runner: NftRunner, uplink: str, table: str = "mnigs",
                 elements=None) -> None:
        checkInterfaceName(uplink)
        checkTableName(table)
        self._reactor = reactor
        self._runner = runner
        self.uplink = uplink
        self.table = table
        self._elements = elements
        self._lock = DeferredLock()
        self._admitted: dict[IPAddress, set[Admission]] = {}
        self._changes: dict[tuple[str, tuple], bool] = {}
        self._waiters: list[Deferred[None]] = []
        self._flushCall = None

    def _apply(self, script: str) -> Deferred[None]:
        return self._lock.run(self._runner.apply, script).addBoth(self._ran)

    def _applyChanges(self, changes: dict[tuple[str, tuple], bool]) -> Deferred[None]:
        if self._elements is not None:
            try:
                return self._elements.apply(self.table, changes)
            except NetlinkUnavailable as e:
                log.warn("nft: no netlink socket ({error}); running nft for every change",
                         error=e)
                self._elements = None
        return self._runner.apply(changesScript(self.table, changes))

    def _ran(self, result: object) -> object:
        # Changes asked while that run went wait for no further turn.
        if self._waiters and not self._lock.locked:
            self._flush()
        return result

    def install(self, admissions: Iterable[Admission], replyPorts: Sequence[int] = (),
                strictInterfaces: Sequence[str] = (),
                routed6: Sequence[ipaddress.IPv6Network] = ()) -> Deferred[None]:
        """
        Replace the table by the gate admitting C{admissions}, with strict
        reverse-path filtering on C{strictInterfaces}, the UDP
        C{replyPorts} of the tunnel daemons answered by the routing tables
        and the IPv6 pools C{routed6} not masqueraded (L{tableScript}).
        """
        admissions = list(admissions)
        script = tableScript(self.table, self.uplink, admissions, replyPorts, strictInterfaces,
                             routed6)
        self._flush(queue=True)  # changes asked before install go first
        self._admitted = {}
        for admission in admissions:
            self._admitted.setdefault(admission.address, set()).add(admission)
        log.info("nft: installing table {table} on uplink {uplink}", table=self.table,
                 uplink=self.uplink)
        return self._apply(script)

    def allow(self, admission: Admission) -> Deferred[None]:
        admission = checkAdmission(admission)
        self._admitted.setdefault(admission.address, set()).add(admission)
        return self._change(admission, True)

    def deny(self, admission: Admission) -> Deferred[None]:
        admission = checkAdmission(admission)
        same = self._admitted.get(admission.address, set())
        same.discard(admission)
        if not same:
            self._admitted.pop(admission.address, None)
        return self._change(admission, False)

    def counters(self) -> Deferred[dict]:
        """
        What each counted element matched (L{parseCounters}), from one
        C{nft -j list table}.
        """
        return self._runner.listJSON(["table", "inet", self.table]).addCallback(parseCounters)

    def remove(self) -> Deferred[None]:
        self._flush(queue=True)
        self._admitted = {}
        log.info("nft: removing table {table}", table=self.table)
        return self._apply(removeScript(self.table))

    def _change(self, admission: Admission, admit: bool) -> Deferred[None]:
        address = admission.address
        for element, wanted in (((boundSet(admission), admission.key()), admit),
                                ((addressSet(address), (address,)), address in self._admitted)):
            self._changes.pop(element, None)
            self._changes[element] = wanted
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        if self._flushCall is None:
            self._flushCall = self._reactor.callLater(0, self._flush)
        return waiter

    def _flush(self, queue: bool = False) -> None:
        """
        Apply the pending changes, or, while a run is going and C{queue} is
        false, leave them to L{_ran}, which gathers whatever else arrives
        meanwhile into the same run.
        """
        if self._flushCall is not None and self._flushCall.active():
            self._flushCall.cancel()
        self._flushCall = None
        if not self._waiters or (self._lock.locked and not queue):
            return
        changes, self._changes = self._changes, {}
        waiters, self._waiters = self._waiters, []
        log.debug("nft: applying {count} change(s) for {callers} caller(s)",
                  count=len(changes), callers=len(waiters))

        def fire(result: object) -> None:
            for waiter in waiters:
                if isinstance(result, Failure):
                    waiter.errback(result)
                else:
                    waiter.callback(None)

        self._lock.run(self._applyChanges, changes).addBoth(self._ran).addBoth(fire)
