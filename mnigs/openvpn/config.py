# -*- test-case-name: tests.unit.test_openvpn.test_config -*-
"""
openvpn command lines and configuration files, built only from checked
values; and the checks of what a lease from the network says.

Choices, both sides:

  - C{--disable-dco}: the data path stays in openvpn's tun device, the same
    on every kernel (this one has no ovpn-dco), with openvpn's check that
    a client only sends from the address pushed to it.
  - No C{--user}/C{--group}: a client's tunnel restart would need root
    again; mnigs drops a connection whose tunnel restarts instead.
  - Keepalive: the server pings every L{PING} s and drops a silent client
    after twice L{PING_EXIT} s; clients ignore the pushed timers and exit
    (C{--ping-exit}) after L{PING_EXIT} s of silence, which mnigs sees as
    the process ending.  The health probes usually notice first.

Server: C{--verify-client-cert none} with C{--management-client-auth}.
Clients carry no certificate; each connection is decided live by mnigs
from its username and password, which are the lease id and token (128+
bits from the gateway's CSPRNG, delivered over the same RPC a per-lease
client certificate would be, so a certificate would add a signing step
and nothing else).  C{--username-as-common-name} makes the lease id the
client's common name, so without C{--duplicate-cn} a second session of
the same lease replaces the first rather than sharing its address.

Client: C{--route-noexec} and pull filters: openvpn sets the tunnel's
address and nothing else; the default route goes into mnigs's own table
(L{mnigs.client.routes.PolicyRouting}), never openvpn's.
"""

from __future__ import annotations

import ipaddress
import re

from mnigs.methods.inet6 import gatewayAddress6
from mnigs.openvpn.pki import checkCACertificate
from mnigs.protocol import formatEndpoint, parseEndpoint

PING = 1
PING_EXIT = 5
PROTOCOLS = ("udp", "tcp")
# Linux interface names: 15 bytes; nothing openvpn or a shell would read
# as anything but a name.
_IFNAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$")
# Lease ids and tokens become openvpn's username and password: one line
# each in the credentials file.
_CREDENTIAL = re.compile(r"^[A-Za-z0-9._~+/=-]{1,128}$")


class LeaseConfigRejected(ValueError):
    """A lease's openvpn config that must not be used; the message says why."""


def checkInterfaceName(name: str) -> str:
    if not isinstance(name, str) or not _IFNAME.match(name):
        raise ValueError(f"bad interface name {name!r}")
    return name


def serverArgv(openvpn: str, ifname: str, proto: str, port: int, pool, pki,
               maxClients: int = 1024, pool6=None) -> list[str]:
    """
    The gateway's openvpn (without the management options, which
    L{mnigs.openvpn.daemon} adds).  It listens on every address, IPv6 and
    IPv4 (C{udp6}/C{tcp6-server} sockets take both), and with
    C{--multihome} answers UDP from the address the client called.  With
    C{pool6} (IPv6 egress) its tun carries the pool's first address too;
    each client's IPv6 address is pushed with its IPv4 one.
    """
    checkInterfaceName(ifname)
    if proto not in PROTOCOLS:
        raise ValueError("proto must be udp or tcp")
    if not 0 < port < 65536:
        raise ValueError("bad port")
    pool = ipaddress.IPv4Network(pool)
    gateway = next(pool.hosts())
    argv = [openvpn,
            "--mode", "server", "--tls-server",
            "--dev", ifname, "--dev-type", "tun", "--topology", "subnet",
            "--port", str(port),
            "--ifconfig", str(gateway), str(pool.netmask),
            "--push", "topology subnet", "--push", f"route-gateway {gateway}",
            "--ca", pki.ca, "--cert", pki.cert, "--key", pki.key, "--dh", "none",
            "--verify-client-cert", "none", "--username-as-common-name",
            "--management-client-auth",
            "--keepalive", str(PING), str(PING_EXIT),
            "--max-clients", str(maxClients),
            "--disable-dco", "--verb", "3", "--suppress-timestamps"]
    if pool6 is not None:
        pool6 = ipaddress.IPv6Network(pool6)
        gateway6 = gatewayAddress6(pool6)
        # The second address is only a p2p peer's; openvpn wants one.
        argv += ["--ifconfig-ipv6", f"{gateway6}/{pool6.prefixlen}", str(gateway6 + 1)]
    if proto == "udp":
        argv += ["--proto", "udp6", "--multihome", "--explicit-exit-notify", "1"]
    else:
        argv += ["--proto", "tcp6-server"]
    return argv


def checkCredentials(leaseId, token) -> tuple[str, str]:
    for what, value in (("lease id", leaseId), ("lease token", token)):
        if not isinstance(value, str) or not _CREDENTIAL.match(value):
            raise LeaseConfigRejected(f"{what} is not usable as an openvpn credential")
    return leaseId, token


def checkLeaseConfig(config) -> dict:
    """
    The lease's config comes from the network: check every field before
    any of it reaches a file or a route.
    """
    if not isinstance(config, dict):
        raise LeaseConfigRejected("lease config is not an object")
    try:
        for name in ("address", "gateway_address"):
            if not isinstance(config.get(name), str):
                raise ValueError(f"{name} must be text")  # ipaddress takes integers too
        address = ipaddress.ip_interface(config.get("address"))
        if address.version != 4 or address.network.prefixlen != 32:
            raise ValueError("lease address must be an IPv4 /32")
        gateway = ipaddress.ip_address(config.get("gateway_address"))
        if gateway.version != 4 or gateway == address.ip:
            raise ValueError("gateway_address must be another IPv4 address")
        endpoint = parseEndpoint(config.get("endpoint"))
        proto = config.get("proto", "udp")
        if proto not in PROTOCOLS:
            raise ValueError("proto must be udp or tcp")
        ca = checkCACertificate(config.get("ca"))
        checked = {"address": str(address), "gateway_address": str(gateway),
                   "endpoint": endpoint, "proto": proto, "ca": ca}
        # IPv6 egress: checked against the offer's pool6 already
        # (OpenVPNClient.checkAgainstOffer).
        if config.get("address6") is not None:
            checked["address6"] = f"{ipaddress.ip_interface(config['address6']).ip}/128"
            checked["gateway_address6"] = str(ipaddress.ip_address(config["gateway_address6"]))
    except (ValueError, TypeError) as e:
        raise LeaseConfigRejected(str(e)) from None
    return checked


def clientConfig(config: dict, ifname: str, caPath: str, credentialsPath: str,
                 ipv6: bool = False) -> str:
    """
    The client's openvpn configuration file for a checked lease config
    (L{checkLeaseConfig}); every value in it is ours or was parsed.  With
    C{ipv6} (a lease with IPv6 egress that the client uses) the pushed
    IPv6 address is taken too; the caller checks it is the lease's.
    """
    checkInterfaceName(ifname)
    for path in (caPath, credentialsPath):
        if not path.startswith("/") or any(c in path for c in "\n\r\"'\\ \t#;"):
            raise ValueError(f"unsuitable path {path!r}")
    host, port = config["endpoint"]
    host = ipaddress.ip_address(host)
    proto = {"udp": "udp", "tcp": "tcp-client"}[config["proto"]]
    lines = [
        "client",
        f"dev {ifname}",
        "dev-type tun",
        f"proto {proto}",
        f"remote {host} {int(port)}",
        f"ca {caPath}",
        "remote-cert-tls server",
        f"auth-user-pass {credentialsPath}",
        "auth-retry none",
        "route-noexec",
        # First match wins, and matching is by prefix: keep route-gateway,
        # drop every route, redirect, DNS and IPv6 setting and the timers.
        'pull-filter accept "route-gateway "',
        'pull-filter ignore "route"',
        'pull-filter ignore "redirect-"',
        'pull-filter ignore "dhcp-option"',
        'pull-filter ignore "block-"',
        'pull-filter ignore "register-dns"',
        'pull-filter ignore "ping"',
        'pull-filter ignore "inactive"',
        f"ping {PING}",
        f"ping-exit {PING_EXIT}",
        "connect-retry-max 1",
        "disable-dco",
        "verb 3",
        "suppress-timestamps",
    ]
    if proto == "udp":
        lines.insert(5, "nobind")
    if not ipv6:
        lines.insert(lines.index('pull-filter ignore "ping"'), 'pull-filter ignore "ifconfig-ipv6"')
    return "".join(line + "\n" for line in lines)


def credentialsFile(leaseId: str, token: str) -> bytes:
    leaseId, token = checkCredentials(leaseId, token)
    return f"{leaseId}\n{token}\n".encode("ascii")


__all__ = ["serverArgv", "clientConfig", "checkLeaseConfig", "checkCredentials",
           "credentialsFile", "LeaseConfigRejected", "checkInterfaceName", "formatEndpoint"]
