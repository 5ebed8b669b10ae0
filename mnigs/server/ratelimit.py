"""
Fair shares per client address: L{addressGroup} says which addresses count
as one (an IPv6 host picks any address of its /64 at will), and
L{RateLimiter} is a token bucket per group for the calls that change
state.  Pure: time comes from the clock passed in.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict

from mnigs.protocol import RATE_LIMITED, RPCError

#: IPv6 sources are counted per network of this size.
IPV6_GROUP_PREFIX = 64


def addressGroup(host: str) -> str:
    """
    The key a client address is counted under for rate limits and caps:
    an IPv4 address itself, an IPv6 address's /64 (C{"2001:db8::/64"}),
    anything unparsable as it is.
    """
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return host
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/{IPV6_GROUP_PREFIX}", strict=False))
    return str(address)


class RateLimiter:
    """
    C{rate} tokens a second per address group, up to C{burst}; at most
    C{maxHosts} groups are remembered, the least recently seen forgotten
    first (a forgotten group starts again with a full bucket, which is
    what it would have had after a pause anyway).
    """

    def __init__(self, clock, rate: float, burst: float | None = None, maxHosts: int = 10000):
        self.clock = clock
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate * 2)
        self.maxHosts = maxHosts
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def check(self, host: str) -> None:
        """
        Spend one token of C{host}'s bucket or raise 1006.
        """
        if self.rate <= 0:
            return
        group = addressGroup(host)
        now = self.clock.seconds()
        tokens, last = self.buckets.get(group, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1:
            self._put(group, (tokens, now))
            raise RPCError(RATE_LIMITED, "rate limited: slow down")
        self._put(group, (tokens - 1, now))

    def _put(self, group, bucket):
        self.buckets[group] = bucket
        self.buckets.move_to_end(group)
        while len(self.buckets) > self.maxHosts:
            self.buckets.popitem(last=False)
