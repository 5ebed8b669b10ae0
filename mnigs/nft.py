# -*- test-case-name: tests.unit.test_nft,tests.mesh.test_nft_real -*-
"""
nftables: a runner for C{nft -f -} / C{nft -j list}, and the gateway's data
path gate (L{NftAccess}), one C{inet} table with two address sets.

Every script is built here from validated names and L{ipaddress} objects;
nothing from outside is interpolated as text.
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

from mnigs.interfaces import IAccessList
from mnigs.command import runCommand
from mnigs.nftnetlink import NetlinkUnavailable

log = Logger()

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

_IFNAME = re.compile(r"^[A-Za-z0-9_.@+-]{1,15}$")
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,31}$")
_SETS = {4: "clients4", 6: "clients6"}


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


def checkAddress(address: object) -> IPAddress:
    """Accept only L{ipaddress} address objects without an IPv6 zone."""
    if not isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        raise TypeError(f"expected an ipaddress address, not {address!r}")
    if getattr(address, "scope_id", None):
        raise ValueError(f"zoned address not allowed here: {address}")
    return address


def _elements(addresses: Iterable[IPAddress]) -> str:
    return ", ".join(str(a) for a in addresses)


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


def tableScript(table: str, uplink: str, addresses: Iterable[IPAddress],
                replyPorts: Sequence[int] = ()) -> str:
    """
    One transaction that replaces table C{inet TABLE} (whether or not it
    exists) by the gate admitting exactly C{addresses}, and, for the local
    UDP C{replyPorts} of the tunnel daemons, replies routed by the tables
    rather than by the interface the peer's packet came in on.
    """
    byFamily: dict[int, list[IPAddress]] = {4: [], 6: []}
    for address in sorted(set(map(checkAddress, addresses)), key=lambda a: (a.version, a)):
        byFamily[address.version].append(address)
    up = f'"{uplink}"'

    def setBlock(version: int) -> str:
        kind = "ipv4_addr" if version == 4 else "ipv6_addr"
        elements = byFamily[version]
        body = f"\t\ttype {kind}\n"
        if elements:
            body += f"\t\telements = {{ {_elements(elements)} }}\n"
        return f"\tset {_SETS[version]} {{\n{body}\t}}\n"

    return (
        f"table inet {table} {{}}\n"
        f"delete table inet {table}\n"
        f"table inet {table} {{\n"
        + setBlock(4) + setBlock(6) +
        "\tchain forward {\n"
        "\t\ttype filter hook forward priority filter; policy accept;\n"
        f"\t\toifname {up} ip saddr @clients4 accept\n"
        f"\t\toifname {up} ip6 saddr @clients6 accept\n"
        f"\t\toifname {up} drop\n"
        f"\t\tiifname {up} ct state established,related ip daddr @clients4 accept\n"
        f"\t\tiifname {up} ct state established,related ip6 daddr @clients6 accept\n"
        f"\t\tiifname {up} drop\n"
        "\t}\n"
        "\tchain postrouting {\n"
        "\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
        f"\t\toifname {up} ip saddr @clients4 masquerade\n"
        f"\t\toifname {up} ip6 saddr @clients6 masquerade\n"
        "\t}\n"
        + _replyChains(replyPorts) +
        "}\n"
    )


def removeScript(table: str) -> str:
    """Delete the table; creating it first makes a missing table no error."""
    return f"table inet {table} {{}}\ndelete table inet {table}\n"


def changesScript(table: str, changes: dict[IPAddress, bool]) -> str:
    """
    Admit (C{True}) or stop admitting (C{False}) each address.  A denied
    address is added and then deleted in the same transaction, because
    deleting an element that is not there fails the whole transaction.
    """
    lines = []
    for version in (4, 6):
        touched = [a for a in changes if a.version == version]
        denied = [a for a in touched if not changes[a]]
        if touched:
            lines.append(f"add element inet {table} {_SETS[version]} {{ {_elements(touched)} }}")
        if denied:
            lines.append(f"delete element inet {table} {_SETS[version]} {{ {_elements(denied)} }}")
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

    With C{elements} (a L{mnigs.nftnetlink.NftSetElements}), allow/deny
    batches go over its netlink socket instead, in ~0.2 ms and without a
    process; the table itself is still installed and removed with nft.  If
    no netlink socket can be had, nft does it all.
    """

    def __init__(self, reactor, runner: NftRunner, uplink: str, table: str = "mnigs",
                 elements=None) -> None:
        if not _IFNAME.match(uplink):
            raise ValueError(f"bad interface name: {uplink!r}")
        if not _TABLE.match(table):
            raise ValueError(f"bad table name: {table!r}")
        self._reactor = reactor
        self._runner = runner
        self.uplink = uplink
        self.table = table
        self._elements = elements
        self._lock = DeferredLock()
        self._changes: dict[IPAddress, bool] = {}
        self._waiters: list[Deferred[None]] = []
        self._flushCall = None

    def _apply(self, script: str) -> Deferred[None]:
        return self._lock.run(self._runner.apply, script).addBoth(self._ran)

    def _applyChanges(self, changes: dict[IPAddress, bool]) -> Deferred[None]:
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

    def install(self, addresses: Iterable[IPAddress],
                replyPorts: Sequence[int] = ()) -> Deferred[None]:
        """
        Replace the table by the gate admitting C{addresses}, with the UDP
        C{replyPorts} of the tunnel daemons answered by the routing tables
        (L{tableScript}).
        """
        script = tableScript(self.table, self.uplink, addresses, replyPorts)
        self._flush(queue=True)  # changes asked before install go first
        log.info("nft: installing table {table} on uplink {uplink}", table=self.table,
                 uplink=self.uplink)
        return self._apply(script)

    def allow(self, address: IPAddress) -> Deferred[None]:
        return self._change(checkAddress(address), True)

    def deny(self, address: IPAddress) -> Deferred[None]:
        return self._change(checkAddress(address), False)

    def remove(self) -> Deferred[None]:
        self._flush(queue=True)
        log.info("nft: removing table {table}", table=self.table)
        return self._apply(removeScript(self.table))

    def _change(self, address: IPAddress, admit: bool) -> Deferred[None]:
        self._changes.pop(address, None)
        self._changes[address] = admit
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
