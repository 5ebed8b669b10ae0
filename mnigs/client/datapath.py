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

One C{inet} table (C{share.table}), replaced whole in one transaction
by L{tableScript} whenever a session starts or ends, removed on stop.
IPv4-only parts are kept to their own lines (C{ip saddr}, C{snat ip})
so IPv6 can be added beside them.  Every script is built from checked
names, L{ipaddress} objects and integers; nothing from the network is
interpolated as text.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Optional, Sequence

from twisted.internet import defer
from twisted.internet.defer import DeferredLock
from twisted.logger import Logger

from mnigs.client.mtu import TCP_HEADERS
from mnigs.system.admission import checkAddress, checkInterfaceName
from mnigs.system.nft import removeScript

log = Logger()

_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")

#: The mark a packet from a shared interface gets on its way into the
#: tunnel, for the NAT (the postrouting hook knows no input interface).
SHARE_MARK = 0x15000000

IPV4_FORWARD = "/proc/sys/net/ipv4/ip_forward"


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
    route's MTU); C{clamp} false: no clamping.
    """
    device: str
    address: ipaddress.IPv4Address
    mtu: Optional[int] = None
    clamp: bool = True

    def __post_init__(self):
        checkInterfaceName(self.device)
        checkAddress(self.address)
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


def _shareChains(passage: Passage, prefixes, interfaces) -> str:
    """
    The shared LAN's packets leave by the tunnel as the lease's inner
    address (IPv4 here; IPv6 goes beside it).
    """
    dev = _names([passage.device])
    forward = nat = ""
    if interfaces:
        forward = ("\tchain share {\n"
                   "\t\ttype filter hook forward priority filter; policy accept;\n"
                   f"\t\tiifname {{ {_names(interfaces)} }} oifname {dev} "
                   f"meta mark set meta mark | {SHARE_MARK:#x}\n"
                   "\t}\n")
        nat += (f"\t\toifname {dev} meta nfproto ipv4 meta mark & {SHARE_MARK:#x} == "
                f"{SHARE_MARK:#x} snat ip to {passage.address}\n")
    if any(p.version == 4 for p in prefixes):
        nat += f"\t\toifname {dev} ip saddr @shared4 snat ip to {passage.address}\n"
    if not nat:
        return forward
    return (forward + "\tchain postrouting {\n"
            "\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
            + nat + "\t}\n")


def tableScript(table: str, prefixes: Sequence = (), interfaces: Sequence[str] = (),
                passage: Optional[Passage] = None) -> str:
    """
    One transaction that replaces table C{inet TABLE} (whether or not it
    exists): the shared prefixes' set, and with an online session's
    C{passage} its NAT (when anything is shared) and its clamp.
    """
    checkTableName(table)
    v4 = sorted((ipaddress.ip_network(p) for p in prefixes if ipaddress.ip_network(p).version == 4),
                key=lambda n: (int(n.network_address), n.prefixlen))
    body = "\tset shared4 {\n\t\ttype ipv4_addr\n\t\tflags interval\n"
    if v4:
        body += f"\t\telements = {{ {', '.join(str(n) for n in v4)} }}\n"
    body += "\t}\n"
    if passage is not None:
        if passage.clamp:
            body += _clampChains(passage)
        body += _shareChains(passage, v4, list(interfaces))
    return (f"table inet {table} {{}}\n"
            f"delete table inet {table}\n"
            f"table inet {table} {{\n{body}}}\n")


class Forwarding:
    """
    IPv4 forwarding (C{path}, the sysctl's file): turned on by L{enable}
    if it is off, and put back by L{restore} only if this turned it on.
    With C{marker} (a file in the state directory), a run that crashed
    after turning it on is remembered: the next run puts it back on stop.
    """

    def __init__(self, path: str = IPV4_FORWARD, marker: Optional[str] = None):
        self.path = path
        self.marker = marker
        self.turnedOn = bool(marker and os.path.exists(marker))

    def _read(self) -> str:
        with open(self.path) as f:
            return f.read().strip()

    def _write(self, value: str) -> None:
        with open(self.path, "w") as f:
            f.write(value + "\n")

    def enable(self) -> None:
        if self._read() != "1":
            if self.marker:
                open(self.marker, "w").close()
            self._write("1")
            self.turnedOn = True
            log.info("share: IPv4 forwarding turned on (off again when the client stops)")

    def restore(self) -> None:
        if self.turnedOn:
            self._write("0")
            self.turnedOn = False
            if self.marker and os.path.exists(self.marker):
                os.unlink(self.marker)
            log.info("share: IPv4 forwarding turned off again")


class ClientDataPath:
    """
    The client's table (L{tableScript}) through C{runner} (an
    L{mnigs.system.nft.NftRunner}) and, when anything is shared,
    C{forwarding} (L{Forwarding}).  Every change is one nft run, in the
    order asked.  A failed run is logged, not raised: the session goes on
    without clamping or sharing rather than not at all.
    """

    def __init__(self, runner, table: str, prefixes: Sequence = (),
                 interfaces: Sequence[str] = (), clamp: bool = True, forwarding=None):
        self.runner = runner
        self.table = checkTableName(table)
        self.prefixes = [ipaddress.ip_network(p) for p in prefixes]
        self.interfaces = [checkInterfaceName(name) for name in interfaces]
        self.clamp = clamp
        self.sharing = bool(self.prefixes or self.interfaces)
        self.forwarding = forwarding if forwarding is not None else Forwarding()
        self._lock = DeferredLock()

    @property
    def needed(self) -> bool:
        """Whether there is anything for the table to do."""
        return self.sharing or self.clamp

    def _apply(self, script: str, what: str):
        d = self._lock.run(self.runner.apply, script)
        d.addErrback(lambda f: log.error("nft: could not {what} table {table}: {why}", what=what,
                                         table=self.table, why=f.getErrorMessage()))
        return d

    def _script(self, passage=None) -> str:
        return tableScript(self.table, self.prefixes, self.interfaces, passage)

    def start(self):
        if self.sharing:
            try:
                self.forwarding.enable()
            except OSError as e:
                log.error("share: could not turn IPv4 forwarding on: {why}", why=e)
        if not self.needed:
            return self._apply(removeScript(self.table), "remove")
        return self._apply(self._script(), "install")

    def online(self, passage: Passage):
        if not self.needed:
            return defer.succeed(None)
        if not self.clamp:
            passage = Passage(passage.device, passage.address, passage.mtu, clamp=False)
        log.info("nft: table {table} for {device} as {address} ({mss})", table=self.table,
                 device=passage.device, address=passage.address,
                 mss=(("MSS for MTU %d" % passage.mtu) if passage.mtu else "MSS to the route's MTU")
                 if self.clamp else "no clamping")
        return self._apply(self._script(passage), "update")

    def offline(self):
        if not self.needed:
            return defer.succeed(None)
        return self._apply(self._script(), "update")

    def stop(self):
        d = self._apply(removeScript(self.table), "remove")

        def restore(_):
            try:
                self.forwarding.restore()
            except OSError as e:
                log.error("share: could not turn IPv4 forwarding back off: {why}", why=e)

        return d.addBoth(restore)
