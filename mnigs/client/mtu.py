# -*- test-case-name: tests.unit.test_mtu -*-
"""
MTU arithmetic for a tunnel over a mesh path: what fits inside the
tunnel (L{tunnelMTU}) and the TCP MSS that goes with it (L{mssFor}).
Pure; the path MTU is read by L{mnigs.client.routes.PolicyRouting.pathMTU}
and the overheads are the methods' (L{mnigs.methods.Method.overhead}).
"""

from __future__ import annotations

from typing import Mapping, Optional

#: IP plus TCP headers (no options), by IP version.
TCP_HEADERS = {4: 40, 6: 60}

#: The smallest MTU an IPv6 link may have; the floor for IPv4 inside a
#: tunnel is IPv4's 576.
MINIMUM_MTU = {4: 576, 6: 1280}


def tunnelMTU(pathMTU: Optional[int], overhead: Optional[Mapping[int, int]],
              outerVersion: int, padding: int = 1) -> Optional[int]:
    """
    The MTU for a tunnel whose packets cross a path of C{pathMTU} as IP
    version C{outerVersion} packets, each C{overhead[outerVersion]} bytes
    bigger than what it carries once that is padded to a multiple of
    C{padding} (WireGuard pads to 16 bytes, up to the sender's own MTU:
    the gateway's tunnel, whose MTU the client does not set, pads a
    1220-byte packet to 1232); C{None} when either is unknown (a method
    whose daemon sizes its own device, or no route) or the result would be
    below IPv4's minimum (a path that narrow is better left to the
    kernel's fragmentation than to an unusable tunnel).
    """
    if pathMTU is None or overhead is None or outerVersion not in overhead:
        return None
    mtu = pathMTU - overhead[outerVersion]
    mtu -= mtu % padding
    return mtu if mtu >= MINIMUM_MTU[4] else None


def deviceMTU(mtu: int, inner6: bool) -> int:
    """
    The MTU to set on a tunnel device that fits C{mtu}: C{mtu}, but never
    below IPv6's minimum when the tunnel carries IPv6 (C{inner6}, IPv6
    egress): the kernel takes every IPv6 address and route off a device
    whose MTU is below 1280.  TCP is still clamped to C{mtu} (the MSS
    fits the path); larger packets of other protocols may not cross it.
    """
    return max(mtu, MINIMUM_MTU[6]) if inner6 else mtu


def mssFor(mtu: int, version: int) -> int:
    """The TCP MSS that fits an IP version C{version} packet in C{mtu}."""
    return mtu - TCP_HEADERS[version]
