"""
Inner addresses from a pool, for the methods that hand them out.

Taking the lowest free address by scanning the pool and the live leases is
quadratic in the number of clients (with 10,000 leases it cost ~60 ms a
registration); L{AddressPool} keeps the answer ready instead.
"""

from __future__ import annotations

import heapq

from mnigs.protocol import GATEWAY_FULL, RPCError


class AddressPool:
    """
    The client addresses of C{network}: every host address but the first,
    which is the gateway's.  L{take} hands out the lowest free one, the
    same choice as a scan from the start would make, in O(log n).

    Addresses below the high-water mark are either taken or in the heap of
    freed ones (which may also hold stale entries, skipped when popped);
    addresses from the mark on are all free.
    """

    def __init__(self, network):
        self.network = network
        self.gateway = next(network.hosts())
        self._type = type(self.gateway)
        # network.hosts() without materialising it: IPv4 leaves out the
        # broadcast address (but for /31 and /32), IPv6 does not.
        self._first = int(self.gateway) + 1
        self._last = int(network.broadcast_address)
        if network.version == 4 and network.prefixlen < 31:
            self._last -= 1
        self._owners = {}
        self._freed = []
        self._high = self._first

    def reset(self):
        """
        Forget every address handed out (before reserving the live ones).
        """
        self._owners = {}
        self._freed = []
        self._high = self._first

    def takeOrRecount(self, owner, recount, what):
        """
        L{take}; if the pool says full, it may be holding leftovers of
        registrations that never made it into the lease book: C{recount()}
        refills it from the live leases and it is asked once more.
        """
        try:
            return self.take(owner)
        except RPCError:
            recount()
            try:
                return self.take(owner)
            except RPCError:
                raise RPCError(GATEWAY_FULL, f"{what} address pool exhausted") from None

    def __len__(self):
        return len(self._owners)

    def owner(self, address):
        return self._owners.get(int(address))

    def take(self, owner):
        """
        The lowest free address, now C{owner}'s; 1001 if none is left.
        """
        while self._freed:
            candidate = heapq.heappop(self._freed)
            if candidate not in self._owners:
                self._owners[candidate] = owner
                return self._type(candidate)
        if self._high > self._last:
            raise RPCError(GATEWAY_FULL, "address pool exhausted")
        candidate, self._high = self._high, self._high + 1
        self._owners[candidate] = owner
        return self._type(candidate)

    def reserve(self, address, owner):
        """
        Mark C{address} as C{owner}'s (a lease restored from the state
        file; it may lie outside the pool if the pool was changed).
        """
        value = int(address)
        self._owners[value] = owner
        if self._first <= value <= self._last and value >= self._high:
            for skipped in range(self._high, value):
                heapq.heappush(self._freed, skipped)
            self._high = value + 1

    def release(self, address, owner):
        """
        Free C{address} if C{owner} holds it.
        """
        value = int(address)
        if self._owners.get(value) != owner:
            return
        del self._owners[value]
        if self._first <= value < self._high:
            heapq.heappush(self._freed, value)

