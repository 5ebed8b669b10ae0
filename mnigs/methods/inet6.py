# -*- test-case-name: tests.unit.test_inet6 -*-
"""
IPv6 egress through a tunnel method, as both sides check it: the pool a
gateway hands inner IPv6 addresses out of (its C{pool6} setting, named
in its offer's method entry) and the lease's C{address6} and
C{gateway_address6} (docs/protocol.md, "IPv6 egress"); and the gateway's
bookkeeping of those addresses (L{LeasePool6}).

The same rule holds on both sides, so that a gateway cannot be configured
with a pool its clients would refuse: a pool is an IPv6 network of /48 to
/126, none of whose addresses belongs to a mesh (Yggdrasil's 200::/7,
cjdns's fc00::/8), a link, a host or multicast.  Pure: no I/O.
"""

from __future__ import annotations

import ipaddress

#: Mesh address space: it stays on the mesh, never in a tunnel's pool (and
#: the client's IPv6 default route through a tunnel never covers it).
MESH_PREFIXES6 = (ipaddress.ip_network("200::/7"),   # Yggdrasil
                  ipaddress.ip_network("fc00::/8"))  # cjdns

_NOT_POOLS = MESH_PREFIXES6 + (
    ipaddress.ip_network("::/8"),         # unspecified, loopback, IPv4-mapped, NAT64
    ipaddress.ip_network("fe80::/10"),    # link-local
    ipaddress.ip_network("fec0::/10"),    # site-local (deprecated)
    ipaddress.ip_network("ff00::/8"),     # multicast
)

SHORTEST_POOL6 = 48
LONGEST_POOL6 = 126


def pool6(value) -> ipaddress.IPv6Network:
    """
    The IPv6 pool C{value} names (text), or ValueError saying why it
    cannot be one.
    """
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError("an IPv6 pool must be a network written as text")
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as e:
        raise ValueError(f"{value!r} is not a network: {e}") from None
    if network.version != 6:
        raise ValueError(f"{network} is not an IPv6 network")
    if not SHORTEST_POOL6 <= network.prefixlen <= LONGEST_POOL6:
        raise ValueError(f"{network} must be a /{SHORTEST_POOL6} to /{LONGEST_POOL6}")
    for reserved in _NOT_POOLS:
        if network.overlaps(reserved):
            raise ValueError(f"{network} overlaps {reserved}, which is never a tunnel's pool")
    return network


def gatewayAddress6(network: ipaddress.IPv6Network) -> ipaddress.IPv6Address:
    """The gateway's own inner address in C{network}: its first host (::1)."""
    return network.network_address + 1


def leaseAddresses6(config: dict, network: ipaddress.IPv6Network | None):
    """
    The inner IPv6 address and the gateway's inner IPv6 address of a
    lease C{config}, checked against the C{network} its offer names
    (C{None}: the offer names none): C{(address, gateway)}, both C{None}
    for a lease without IPv6, else ValueError saying why the lease
    disagrees with the offer.
    """
    address, gateway = config.get("address6"), config.get("gateway_address6")
    if address is None and gateway is None:
        return None, None
    if network is None:
        raise ValueError("it has an IPv6 address but the signed offer names no pool6")
    if not isinstance(address, str) or not isinstance(gateway, str):
        raise ValueError("address6 and gateway_address6 must both be text")
    try:
        inner = ipaddress.ip_interface(address)
        other = ipaddress.ip_address(gateway)
    except ValueError as e:
        raise ValueError(f"lease IPv6 address: {e}") from None
    if inner.version != 6 or inner.network.prefixlen != 128 or inner.scope_id:
        raise ValueError("address6 must be an IPv6 /128 without a zone")
    if other.version != 6 or other.scope_id:
        raise ValueError("gateway_address6 must be an IPv6 address without a zone")
    for what, value in (("address6", inner.ip), ("gateway_address6", other)):
        if value not in network or value == network.network_address:
            raise ValueError(f"{what} {value} is not a host of the offered pool6 {network}")
    if inner.ip == other:
        raise ValueError("address6 is the gateway's own address")
    return inner.ip, other


class LeasePool6:
    """
    The gateway side of a method's IPv6 egress: one /128 of C{network}
    (its pool6) per lease, beside the lease's IPv4 address and kept apart
    from the IPv4 pool's bookkeeping, so that recounting one never loses
    what a registration has just taken from the other.  Any tunnel method
    with a pool6 uses one (only WireGuard does today).
    """

    def __init__(self, network: ipaddress.IPv6Network):
        from mnigs.methods.pool import AddressPool  # the protocol's errors; keep this module light

        self.network = network
        self.gateway = gatewayAddress6(network)
        self._addresses = AddressPool(network)

    def of(self, lease) -> ipaddress.IPv6Address | None:
        """
        C{lease}'s inner IPv6 address if it has one in this pool (a lease
        restored after pool6 was switched off or changed keeps only its
        IPv4).
        """
        text = lease.config.get("address6")
        if text is None:
            return None
        address = ipaddress.ip_interface(text).ip
        return address if address in self.network else None

    def take(self, lease, others) -> dict:
        """
        The lease config members of a new lease's IPv6 address (1001 when
        the pool is full, after recounting it from C{others}, the other
        live leases).
        """
        address = self._addresses.takeOrRecount(lease.id, lambda: self.rebuild(others), "IPv6")
        return {"address6": f"{address}/128", "gateway_address6": str(self.gateway)}

    def rebuild(self, leases) -> None:
        """Forget what was handed out, then hold the addresses of C{leases}."""
        self._addresses.reset()
        for lease in leases:
            address = self.of(lease)
            if address is not None:
                self._addresses.reserve(address, lease.id)

    def release(self, lease) -> None:
        address = self.of(lease)
        if address is not None:
            self._addresses.release(address, lease.id)


def takeAddress6(pool: LeasePool6 | None, lease, others, giveBack) -> dict:
    """
    The lease config members of a new lease's IPv6 address from C{pool}
    (nothing without IPv6 egress).  When the pool is full, C{giveBack()}
    (what returns the lease's IPv4 address) is called before the 1001
    goes on: a lease gets both addresses or neither.
    """
    if pool is None:
        return {}
    try:
        return pool.take(lease, others)
    except Exception:
        giveBack()
        raise
