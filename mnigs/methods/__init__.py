"""
The registry of connection methods: one L{Method} per type on the wire.

Everything that depends on which methods exist reads L{METHODS}: the
protocol's check of an offer's entries (L{mnigs.protocol.verifyOffer}),
the server's and the client's configuration schemas (their
C{[methods.NAME]} tables), and both services, which build each
configured method with its entry's builders.  Adding a method is its
module(s), one entry below, its sample config sections (etc/) and its
docs (docs/configuration.md); see docs/architecture.md, "Adding a method".

This module is read by the protocol and by both config loaders, so it
stays light: builders are named as C{"package.module.function"} and imported only
when a service builds the method.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from twisted.python.reflect import namedAny

from mnigs.daemon.config import (
    Field,
    addresses,
    between,
    strings,
    ifname,
    network,
    oneOf,
    port,
)
from mnigs.methods import inet6
from mnigs.protocol import (
    MAX_RESOLVERS,
    checkResolvers,
    formatEndpoint,
    fromBase64,
    isSHA256,
    parseEndpoint,
    unprintable,
)

#: The word in a method's C{dns} that stands for the gateway's own address
#: as the lease gives it (C{gateway_address}): its resolver inside the tunnel.
TUNNEL_RESOLVER = "tunnel"

def resolve(builder):
    """
    The callable C{builder} names (C{"package.module.function"}), imported
    now; a callable is returned as it is.
    """
    return namedAny(builder) if isinstance(builder, str) else builder


@dataclass(frozen=True)
class GatewayContext:
    """
    What a gateway-side builder is given besides its own C{[methods.NAME]}
    section: the whole config (for shared sections like C{[cjdns]} or
    C{terms.max_clients}), the state directory, the gate and netlink.
    """
    reactor: Any
    config: Any
    stateDir: str
    access: Any
    netlink: Any


@dataclass(frozen=True)
class ClientContext:
    """
    What a client-side builder is given besides its own C{[methods.NAME]}
    section (C{None} for a method without one): the whole config, the
    state directory, the client's policy routing and netlink.
    """
    reactor: Any
    config: Any
    stateDir: str
    routing: Any
    netlink: Any


@dataclass(frozen=True)
class Method:
    """
    One connection method.

    @ivar gateway: builds its L{mnigs.interfaces.IGatewayMethod}:
        C{gateway(GatewayContext, section)}.
    @ivar client: builds its L{mnigs.interfaces.IClientMethod}:
        C{client(ClientContext, section)}.
    @ivar serverSettings: the server's C{[methods.NAME]} keys (beside
        C{enabled}, which every method has).  A method that has a C{pool}
        key gets its pool checked against the other methods' pools, and
        one with a C{pool6} key (IPv6 egress, L{mnigs.methods.inet6})
        likewise; its C{nat6} says whether that pool is masqueraded.
    @ivar clientSettings: the client's C{[methods.NAME]} keys; C{None}
        for a method whose client has no table of its own.
    @ivar offer: what the method's entry in an offer carries, as a client
        checks it: C{offer(entry)} returns the entry to keep (normalised)
        or raises ValueError saying why (the protocol names the method).
    @ivar serverCheck: C{serverCheck(config)}: C{None}, or C{(key,
        reason)} for what else the method needs in the server's file.
    @ivar clientCheck: the same for a client whose C{methods.order}
        lists the method.
    @ivar overhead: by the outer packets' IP version (4, 6), how many
        bytes the method adds to each packet it carries: the client sets
        its tunnel's MTU to the path MTU to the gateway less this
        (L{mnigs.client.mtu.tunnelMTU}).  C{None} for a method whose
        device the client does not size: C{forward} (the mesh interface
        itself), a method carried in a TCP stream, or one whose daemon
        sizes its own device; its TCP MSS is then clamped to the route's
        MTU (docs/operations.md, "MTU and MSS").
    @ivar padding: the method pads what it carries to a multiple of this
        many bytes; the tunnel MTU is rounded down to one.
    """
    name: str
    gateway: Any
    client: Any
    offer: Callable[[dict], dict]
    serverSettings: Mapping = field(default_factory=dict)
    clientSettings: Mapping | None = None
    serverCheck: Callable[[Any], tuple[str, str] | None] | None = None
    clientCheck: Callable[[Any], tuple[str, str] | None] | None = None
    overhead: Mapping[int, int] | None = None
    padding: int = 1

    def buildGateway(self, context: GatewayContext, section):
        return resolve(self.gateway)(context, section)

    def buildClient(self, context: ClientContext, section):
        return resolve(self.client)(context, section)

    def serverSchema(self) -> dict:
        return {"enabled": Field(bool, True), **self.serverSettings}


#: Every method, by name, in the order the server lists them.
METHODS: dict[str, Method] = {}


def register(method: Method) -> Callable[[], None]:
    """
    Add C{method}; returns what removes it again (a test's cleanup).
    """
    if method.name in METHODS:
        raise ValueError(f"a method {method.name!r} is registered already")
    METHODS[method.name] = method
    return lambda: METHODS.pop(method.name, None)


def serverSections() -> dict:
    """
    The server's C{[methods.NAME]} schemas, one per registered method.
    """
    return {name: method.serverSchema() for name, method in METHODS.items()}


def clientSections() -> dict:
    """
    The client's C{[methods.NAME]} schemas, for methods that have one.
    """
    return {name: dict(method.clientSettings) for name, method in METHODS.items()
            if method.clientSettings is not None}


# -- what the entries below share ----------------------------------------

def _pool(value):
    net = network(value)
    if net.num_addresses < 4:
        raise ValueError("pool is too small: it needs room for the gateway and clients")
    return net


def _endpoint(entry: dict) -> dict:
    address, port_ = parseEndpoint(entry.get("endpoint"))
    return dict(entry, endpoint=formatEndpoint(address, port_))


def _pinned(entry: dict, member: str) -> dict:
    # What pins the tunnel to this gateway: a lease must agree with it.
    if not isSHA256(entry.get(member)):
        raise ValueError(f"{member} must be a lowercase hex SHA-256")
    return entry


def _resolvers(value):
    """
    A method's C{dns} (server): addresses a lease hands its client as
    resolvers, or L{TUNNEL_RESOLVER}; checked as a client checks a lease's
    (L{checkResolvers}), so that a gateway never offers what clients refuse.
    """
    value = strings(value)
    if len(value) > MAX_RESOLVERS:
        raise ValueError(f"lists {len(value)} resolvers, more than {MAX_RESOLVERS}")
    if value.count(TUNNEL_RESOLVER) > 1:
        raise ValueError(f"lists {TUNNEL_RESOLVER!r} twice")
    checked = list(checkResolvers([v for v in value if v != TUNNEL_RESOLVER]))
    return [TUNNEL_RESOLVER if v == TUNNEL_RESOLVER else checked.pop(0) for v in value]


def resolversFor(configured, gatewayAddress) -> list[str]:
    """
    A lease's C{dns}: the method's configured resolvers, with
    L{TUNNEL_RESOLVER} replaced by C{gatewayAddress} (the lease's
    C{gateway_address}), each once.
    """
    out: list[str] = []
    for entry in configured:
        address = str(gatewayAddress) if entry == TUNNEL_RESOLVER else str(entry)
        if address not in out:
            out.append(address)
    return out


def _needsNodeKey(config, reason):
    if not config.cjdns.public_key:
        return "cjdns.public_key", reason
    return None


# -- the methods -----------------------------------------------------------

def _forwardOffer(entry):
    return {"type": "forward"}


def _wireguardOffer(entry):
    checked = _endpoint(entry)
    try:
        fromBase64(entry.get("public_key"), 32)
    except ValueError as e:
        raise ValueError(f"public_key: {e}") from None
    return _withPool6(checked, entry)


def _withPool6(checked, entry):
    if "pool6" in entry:  # the gateway offers IPv6 egress (mnigs.methods.inet6)
        checked["pool6"] = str(inet6.pool6(entry["pool6"]))
    return checked


def _optionalPool6(value):
    return inet6.pool6(value) if value else None


#: A tunnel method's IPv6 egress settings, server side: off by default.
_IPV6_EGRESS = {
    # NAT66 to the uplink, or, with nat6 = false, a prefix routed to this gateway.
    "pool6": Field(str, "", _optionalPool6),
    "nat6": Field(bool, True),
}


def _openvpnOffer(entry):
    checked = _endpoint(entry)
    if entry.get("proto", "udp") not in ("udp", "tcp"):
        raise ValueError("proto must be udp or tcp")
    return _withPool6(_pinned(checked, "ca_sha256"), entry)


def _softetherOffer(entry):
    return _pinned(_endpoint(entry), "cert_sha256")


def _cjdnsOffer(entry):
    # A public key is all a client needs to connect.
    key = entry.get("public_key")
    if not (isinstance(key, str) and len(key) <= 64):
        raise ValueError("public_key must be text of at most 64 characters")
    if unprintable(key) is not None:
        raise ValueError(f"public_key has a character that is not printable: {unprintable(key)}")
    return dict(entry)


def _softetherHub(value):
    from mnigs.softether.hub import checkHubName
    return checkHubName(value)


def _softetherBridge(value):
    from mnigs.softether.hub import checkBridgeName
    return checkBridgeName(value)


def _softetherNic(value):
    # SoftEther names its tap vpn_NIC: 11 characters at most.
    if not (value.isascii() and value.isalnum() and value.islower() and 0 < len(value) <= 11):
        raise ValueError(f"{value!r} is not a usable NIC name (1-11 of a-z 0-9)")
    return value


_IMPLEMENTATION = oneOf("auto", "kernel", "wireguard-go")

#: Per-packet overheads by outer IP version (see L{Method.overhead}).
#: WireGuard: IP (20/40) + UDP 8 + its data header 16 + the AEAD tag 16;
#: it pads what it carries to a multiple of 16 bytes.
WIREGUARD_OVERHEAD = {4: 60, 6: 80}
#: OpenVPN 2.6 over UDP with its default AES-256-GCM data channel: IP
#: (20/40) + UDP 8 + opcode and peer id 4 + packet id 4 + tag 16; 8 more
#: bytes of margin for a compression framing byte and CBC ciphers' padding.
OPENVPN_OVERHEAD = {4: 60, 6: 80}

register(Method(
    "forward", "mnigs.methods.forward.buildGateway", "mnigs.methods.forward.buildClient",
    _forwardOffer,
    serverSettings={
        "dns": Field(list, [], _resolvers),
    },
    clientSettings={}))
register(Method(
    "wireguard", "mnigs.methods.wireguard.buildGateway", "mnigs.methods.wireguard.buildClient",
    _wireguardOffer,
    serverSettings={
        "interface": Field(str, "mnigs-wg0", ifname),
        "port": Field(int, 51820, port),
        "pool": Field(str, "100.64.0.0/22", _pool),
        **_IPV6_EGRESS,
        "endpoint": Field(list, [], addresses),
        "implementation": Field(str, "auto", _IMPLEMENTATION),
        "dns": Field(list, [], _resolvers),
        "handshake_timeout": Field(float, 60.0, between(0, 86400)),
    },
    clientSettings={
        "interface": Field(str, "mnigs-c0", ifname),
        "implementation": Field(str, "auto", _IMPLEMENTATION),
        "keepalive": Field(int, 5, between(0, 3600)),
        "ipv6": Field(bool, True),
    },
    overhead=WIREGUARD_OVERHEAD, padding=16))
register(Method(
    "openvpn", "mnigs.methods.openvpn.buildGateway", "mnigs.methods.openvpn.buildClient",
    _openvpnOffer,
    serverSettings={
        "interface": Field(str, "mnigs-ovpn0", ifname),
        "port": Field(int, 1194, port),
        "proto": Field(str, "udp", oneOf("udp", "tcp")),
        "pool": Field(str, "100.65.0.0/22", _pool),
        **_IPV6_EGRESS,
        "endpoint": Field(list, [], addresses),
        "dns": Field(list, [], _resolvers),
    },
    clientSettings={
        "interface": Field(str, "mnigs-ovpnc0", ifname),
        "ipv6": Field(bool, True),
    },
    overhead=OPENVPN_OVERHEAD))
register(Method(
    "softether", "mnigs.methods.softether.buildGateway", "mnigs.methods.softether.buildClient",
    _softetherOffer,
    serverSettings={
        "port": Field(int, 5555, port),
        "hub": Field(str, "mnigs", _softetherHub),
        "bridge": Field(str, "mnigs", _softetherBridge),
        "pool": Field(str, "100.66.0.0/22", _pool),
        "endpoint": Field(list, [], addresses),
        "dns": Field(list, [], _resolvers),
    },
    clientSettings={
        "nic": Field(str, "mnigs", _softetherNic),
    },
    # Carried in a TCP (TLS) stream, which cuts it to the path's size:
    # no outer packet outgrows the path, so the tap keeps its MTU.
    overhead=None))
register(Method(
    "cjdns", "mnigs.methods.cjdns.buildGateway", "mnigs.methods.cjdns.buildClient",
    _cjdnsOffer,
    serverSettings={
        "pool": Field(str, "100.67.0.0/22", _pool),
        "dns": Field(list, [], _resolvers),
    },
    # The client's cjdns settings are the shared [cjdns] section's.
    clientSettings=None,
    # cjdns sizes its own tun (1304 bytes) for its crypto and route
    # headers; the IP tunnel inside it adds nothing the client can size.
    overhead=None,
    serverCheck=lambda config: _needsNodeKey(config, "is required with [methods.cjdns]"),
    clientCheck=lambda config: _needsNodeKey(config, "is required when methods.order has cjdns")))
