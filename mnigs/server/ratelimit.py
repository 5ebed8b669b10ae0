"""
A token bucket per client address for the calls that change state.  Pure:
time comes from the clock passed in.
"""

from __future__ import annotations

from mnigs.protocol import RATE_LIMITED, RPCError


class RateLimiter:
    def __init__(self, clock, rate: float, burst: float | None = None, maxHosts: int = 10000):
        self.clock = clock
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate * 2)
        self.maxHosts = maxHosts
        self.buckets = {}

    def check(self, host: str) -> None:
        """
        Spend one token of C{host}'s bucket or raise 1006.
        """
        if self.rate <= 0:
            return
        now = self.clock.seconds()
        tokens, last = self.buckets.get(host, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1:
            self.buckets[host] = (tokens, now)
            raise RPCError(RATE_LIMITED, "rate limited: slow down")
        if host not in self.buckets and len(self.buckets) >= self.maxHosts:
            self._forgetFull(now)
        self.buckets[host] = (tokens - 1, now)

    def _forgetFull(self, now):
        # Buckets that have refilled carry no information: drop them.
        full = [h for h, (t, last) in self.buckets.items()
                if t + (now - last) * self.rate >= self.burst]
        for h in full:
            del self.buckets[h]
        if len(self.buckets) >= self.maxHosts:
            self.buckets.clear()
