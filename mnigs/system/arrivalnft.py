# -*- test-case-name: tests.unit.test_arrivalnft -*-
"""
The nftables half of "answer a mesh peer by the way its packets came"
(L{mnigs.server.arrival}): one C{inet} table of its own, replaced whole at
every change of the previous hops, that

 - stamps the id of the previous hop (input interface and source MAC, or
   the interface alone when it has no link-layer addresses) into bits
   L{HOP_MASK} of the connection's mark, on every packet of the original
   direction, so that a connection follows its client's current path (a
   packet from an unknown hop clears them: the main table decides again);
 - copies those bits into the packet mark of the reply direction: in
   prerouting for forwarded replies (before the routing decision) and in a
   C{type route} output chain for the gateway's own, which the kernel routes
   again when the mark changed.

A policy rule per hop (C{fwmark ID/HOP_MASK lookup TABLE}) then sends the
reply to the hop's table, holding one default route to the hop.

nft 1.0.6 cannot OR a map's value into a mark ("Right hand side of binary
operation (|) must be constant"), so each id has two tiny chains that set
its bits with constants, reached through verdict maps.  The bits of
L{HOP_MASK} are apart from L{mnigs.system.nft.REROUTE_MARK}'s; other bits of
both marks are kept.
"""

from __future__ import annotations

from typing import Iterable

from mnigs.server.prevhops import MAX_HOPS, Hop
from mnigs.system.nft import checkTableName, elementText

#: The mark bits holding a hop id (ids 1..255).
HOP_SHIFT = 16
HOP_MASK = 0xFF << HOP_SHIFT


def hopMark(hopId: int) -> int:
    if type(hopId) is not int or not 0 < hopId <= MAX_HOPS:
        raise ValueError(f"not a hop id: {hopId!r}")
    return hopId << HOP_SHIFT


def _hopChains(hop: Hop) -> str:
    keep, mark = 0xFFFFFFFF & ~HOP_MASK, hopMark(hop.id)
    return (
        f"\tchain from{hop.id} {{\n"
        f"\t\tct mark set ct mark and {keep:#010x} or {mark:#010x}\n"
        "\t}\n"
        f"\tchain to{hop.id} {{\n"
        f"\t\tmeta mark set meta mark and {keep:#010x} or {mark:#010x}\n"
        "\t}\n"
    )


def _vmap(key: str, entries: list[str]) -> str:
    return f"{key} vmap {{ {', '.join(entries)} }}" if entries else ""


def arrivalScript(table: str, hops: Iterable[Hop]) -> str:
    """
    One transaction replacing table C{inet TABLE} (whether or not it
    exists) by the marking of C{hops}.
    """
    checkTableName(table)
    hops = sorted(hops, key=lambda hop: hop.id)
    byLink = [f"{elementText((hop.ifname, hop.mac))} : goto from{hop.id}"
              for hop in hops if hop.mac is not None]
    byInterface = [f"{elementText((hop.ifname,))} : goto from{hop.id}"
                   for hop in hops if hop.mac is None]
    replies = [f"{hopMark(hop.id):#010x} : goto to{hop.id}" for hop in hops]
    keep = 0xFFFFFFFF & ~HOP_MASK
    original = [
        f"ct direction original ct mark and {HOP_MASK:#010x} != 0 "
        f"ct mark set ct mark and {keep:#010x}",
        _vmap("ct direction original iifname . ether saddr", byLink),
        _vmap("ct direction original iifname", byInterface),
    ]
    reply = _vmap(f"ct direction reply ct mark and {HOP_MASK:#010x}", replies)
    rules = [rule for rule in original + [reply] if rule]
    return (
        f"table inet {table} {{}}\n"
        f"delete table inet {table}\n"
        f"table inet {table} {{\n"
        + "".join(_hopChains(hop) for hop in hops) +
        "\tchain arrival {\n"
        "\t\ttype filter hook prerouting priority mangle; policy accept;\n"
        + "".join(f"\t\t{rule}\n" for rule in rules) +
        "\t}\n"
        "\tchain replies {\n"
        "\t\ttype route hook output priority mangle; policy accept;\n"
        + (f"\t\t{reply}\n" if reply else "") +
        "\t}\n"
        "}\n"
    )


def removeArrivalScript(table: str) -> str:
    checkTableName(table)
    return f"table inet {table} {{}}\ndelete table inet {table}\n"
