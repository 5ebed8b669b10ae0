"""
The gateway server's configuration file: see docs/configuration.md and
etc/mnigs-server.toml.

C{loadServerConfig(path)} reads and checks the file and returns its
L{Section}, or raises L{ConfigError} naming file, key and reason.  Given a
list as C{warnings}, it appends a L{ConfigWarning} for each thing worth
saying that does not stop the server (none yet on this side).  It does no
I/O beyond reading the file: whether the interfaces named in
L{EXISTING_INTERFACES} exist on this machine is asked by
L{mnigs.daemon.configcheck.checkServer}, which the daemon and C{mnigsctl
check-config} both use.
"""

from __future__ import annotations


from mnigs.daemon.config import (
    decimalAmount,
    ConfigError,
    ConfigWarning,
    Field,
    Table,
    absolutePath,
    addresses,
    between,
    executable,
    ifname,
    ifnames,
    loadTOML,
    network,
    oneOf,
    port,
    strings,
    text,
)
from mnigs.cjdns.settings import SCHEMA as CJDNS_SCHEMA
from mnigs.daemon.daemonlog import SCHEMA as LOG_SCHEMA
from mnigs.daemon.hooks import DEFAULT_MAX_RUNNING
from mnigs.protocol import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_PORT,
    DEFAULT_REQUEST_TIMEOUT,
    MAX_LEASE_SECONDS,
)


def _amount(value):
    decimalAmount(value)
    return value  # offers carry the amount as the operator wrote it


def _pool(value):
    net = network(value)
    if net.num_addresses < 4:
        raise ValueError("pool is too small: it needs room for the gateway and clients")
    return net


def _optionalExecutable(value):
    return executable(value) if value else ""


def _softetherHub(value):
    from mnigs.softether.hub import checkHubName
    return checkHubName(value)


def _softetherBridge(value):
    from mnigs.softether.hub import checkBridgeName
    return checkBridgeName(value)


SCHEMA = {
    "server": {
        "name": Field(str, "mnigs-gateway", text(64)),
        "state_dir": Field(str, "/var/lib/mnigs-server", absolutePath),
        "sweep_interval": Field(float, 5.0, between(0.1, 3600)),
        "drain_timeout": Field(float, 600.0, between(0, 86400)),
    },
    "rpc": {
        "listen": Field(list, ["::"], addresses),
        "port": Field(int, DEFAULT_PORT, port),
        "max_connections": Field(int, 512, between(1, 65536)),
        "max_connections_per_address": Field(int, 16, between(1, 65536)),
        "idle_timeout": Field(float, DEFAULT_IDLE_TIMEOUT, between(1, 3600)),
        "request_timeout": Field(float, DEFAULT_REQUEST_TIMEOUT, between(0.1, 3600)),
        "rate_limit": Field(float, 20.0, between(0, 1e6)),
        "rate_limit_addresses": Field(int, 10000, between(1, 10_000_000)),
    },
    "mesh": {
        "interfaces": Field(list, [], ifnames),
        "routing": Field(str, "babel", oneOf("babel", "olsr", "batman", "yggdrasil", "cjdns", "static", "none")),
    },
    "uplink": {
        "interface": Field(str, check=ifname),
        "check_interval": Field(float, 1.0, between(0.1, 60)),
        "probe": Field(list, [], addresses),
        "probe_timeout": Field(float, 1.0, between(0.1, 30)),
        "require_default_route": Field(bool, True),
    },
    "terms": {
        "max_clients": Field(int, 32, between(0, 1_000_000)),
        "max_leases_per_address": Field(int, 2, between(0, 1_000_000)),
        "lease_seconds": Field(int, 600, between(10, MAX_LEASE_SECONDS)),
        "contact": Field(str, "", text(256)),
        "notes": Field(str, "", text(256)),
        "bandwidth_kbps": {
            "down": Field(int, 0, between(0, 100_000_000)),
            "up": Field(int, 0, between(0, 100_000_000)),
        },
        "fee": {
            "amount": Field(str, "", lambda v: _amount(v) if v else v),
            "currency": Field(str, "", text(8)),
            "period": Field(str, "month", text(16)),
            "pay_to": Field(str, "", text(256)),
        },
    },
    "methods": Table({
        "forward": {
            "enabled": Field(bool, True),
        },
        "wireguard": {
            "enabled": Field(bool, True),
            "interface": Field(str, "mnigs-wg0", ifname),
            "port": Field(int, 51820, port),
            "pool": Field(str, "100.64.0.0/22", _pool),
            "endpoint": Field(list, [], addresses),
            "implementation": Field(str, "auto", oneOf("auto", "kernel", "wireguard-go")),
            "dns": Field(list, [], addresses),
            "handshake_timeout": Field(float, 60.0, between(0, 86400)),
        },
        "cjdns": {
            "enabled": Field(bool, True),
            "pool": Field(str, "100.67.0.0/22", _pool),
            "dns": Field(list, [], addresses),
        },
        "openvpn": {
            "enabled": Field(bool, True),
            "interface": Field(str, "mnigs-ovpn0", ifname),
            "port": Field(int, 1194, port),
            "proto": Field(str, "udp", oneOf("udp", "tcp")),
            "pool": Field(str, "100.65.0.0/22", _pool),
            "endpoint": Field(list, [], addresses),
            "dns": Field(list, [], addresses),
        },
        "softether": {
            "enabled": Field(bool, True),
            "port": Field(int, 5555, port),
            "hub": Field(str, "mnigs", _softetherHub),
            "bridge": Field(str, "mnigs", _softetherBridge),
            "pool": Field(str, "100.66.0.0/22", _pool),
            "endpoint": Field(list, [], addresses),
            "dns": Field(list, [], addresses),
        },
    }),
    "cjdns": CJDNS_SCHEMA,
    "nft": {
        "table": Field(str, "mnigs", text(32)),
    },
    "routing": {
        "table": Field(int, 8152, between(1, 2**31 - 1)),
        "rule_priority": Field(int, 8148, between(1, 32765)),
    },
    "log": LOG_SCHEMA,
    "manhole": {
        "enabled": Field(bool, False),
        "socket": Field(str, "/run/mnigs-server/manhole.sock", absolutePath),
    },
    "admin": {
        "socket": Field(str, "/run/mnigs-server/admin.sock", absolutePath),
    },
    "hooks": {
        "register": Field(str, "", _optionalExecutable),
        "release": Field(str, "", _optionalExecutable),
        "max_running": Field(int, DEFAULT_MAX_RUNNING, between(1, 1024)),
    },
}


# Keys naming interfaces that must already exist (not those mnigs makes).
EXISTING_INTERFACES = ("mesh.interfaces", "uplink.interface")


def loadServerConfig(path: str, warnings: list[ConfigWarning] | None = None):
    config = loadTOML(path, SCHEMA)
    if config.uplink.interface == "lo":
        raise ConfigError(path, "uplink.interface", "'lo' is the loopback interface, never an uplink")
    fee = config.terms.fee
    if fee.amount and not fee.currency:
        raise ConfigError(path, "terms.fee.currency", "is required when terms.fee.amount is set")
    if not config.methods:
        raise ConfigError(path, "methods", "no method is configured: add a [methods.NAME] table (forward, wireguard, openvpn, softether, cjdns)")
    if not any(m.enabled for m in config.methods.values()):
        raise ConfigError(path, "methods", "every method is disabled")
    cjdns = config.methods.get("cjdns")
    if cjdns is not None and cjdns.enabled and not config.cjdns.public_key:
        raise ConfigError(path, "cjdns.public_key", "is required with [methods.cjdns]")
    # Every pool-using method's pool is IPv4 and apart from the others'.
    order = ("wireguard", "openvpn", "softether", "cjdns")
    pooled = [(name, config.methods[name]) for name in order if name in config.methods]
    for index, (name, section) in enumerate(pooled):
        if section.pool.version != 4:
            raise ConfigError(path, f"methods.{name}.pool", "must be an IPv4 network")
        for otherName, other in pooled[:index]:
            if section.pool.overlaps(other.pool):
                raise ConfigError(path, f"methods.{name}.pool", f"overlaps methods.{otherName}.pool")
    return config


__all__ = ["loadServerConfig", "SCHEMA", "EXISTING_INTERFACES", "ConfigError", "strings"]
