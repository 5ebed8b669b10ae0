"""
The gateway's own mesh addresses, as its offer lists them (C{addresses}).

A client that knows every address a gateway answers on can still reach it
while the mesh relearns its routes.  A gateway that has just come back
(rebooted, or its links restored) is missing from its neighbours' routing
tables for a few hello intervals (babel's default hello is 4 s), so its
node address has no route; the address it has on the link to a neighbour
is inside that neighbour's connected subnet, which the neighbour announces
whatever the gateway does.  An offline client asks the recent gateways at
all their addresses (L{mnigs.client.effects.ClientEffects.recentGateways}).

Listed: every global address of the gateway but those of its uplink, its
tunnels and loopback's own (127/8, ::1); when the RPC listens on chosen
addresses only, just those.  Node addresses (host prefixes, e.g. a /32 on
C{lo}) come first: they are the ones a mesh routes best.
"""

from __future__ import annotations

import ipaddress

from twisted.logger import Logger

from mnigs.protocol import MAX_ADDRESSES
from mnigs.system.pyroute import NetlinkError

log = Logger()

#: Seconds an address list is used before it is read again.
REFRESH = 5.0


def offerAddresses(addresses, excluded: set[str], listen=(), limit: int = MAX_ADDRESSES) -> list[str]:
    """
    Pure: C{addresses} is C{(ifname, ip_interface)} pairs as netlink lists
    them; C{excluded} the interfaces left out (uplink, tunnels); C{listen}
    the RPC's listening addresses (a wildcard listens on all).
    """
    wildcard = not listen or any(ipaddress.ip_address(a).is_unspecified for a in listen)
    chosen = {ipaddress.ip_address(a) for a in listen}
    found = []
    for ifname, interface in addresses:
        ip = interface.ip
        if ifname in excluded or ip.is_loopback or ip.is_link_local or ip.is_multicast \
                or ip.is_unspecified:
            continue
        if not wildcard and ip not in chosen:
            continue
        host = interface.network.prefixlen == ip.max_prefixlen
        found.append((not host, ip.version, ip, str(ip)))
    listed = []
    for *_, text in sorted(found):
        if text not in listed:
            listed.append(text)
    return listed[:limit]


class MeshAddresses:
    """
    L{offerAddresses} over the live interfaces, read at most every
    C{refresh} seconds.  C{read} returns the C{(ifname, ip_interface)}
    pairs (L{mnigs.system.netlink.Netlink.linkAddresses}); C{excluded} is
    called each time (tunnels come and go).
    """

    def __init__(self, clock, read, excluded, listen=(), refresh: float = REFRESH):
        self.clock = clock
        self.read = read
        self.excluded = excluded
        self.listen = list(listen)
        self.refresh = refresh
        self._at = None
        self._listed: list[str] = []

    def __call__(self) -> list[str]:
        now = self.clock.seconds()
        if self._at is None or not 0 <= now - self._at < self.refresh:
            try:
                self._listed = offerAddresses(self.read(), set(self.excluded()), self.listen)
            except (OSError, NetlinkError) as e:
                # Keep the last list; the next offer after the refresh tries again.
                log.warn("offer addresses: could not read this node's addresses: {why}", why=e)
            self._at = now
        return self._listed
