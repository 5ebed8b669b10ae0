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
    Computed,
    Field,
    Table,
    absolutePath,
    addresses,
    between,
    executable,
    ifname,
    ifnames,
    loadTOML,
    oneOf,
    port,
    strings,
    text,
)
from mnigs.cjdns.settings import SCHEMA as CJDNS_SCHEMA
from mnigs.daemon.daemonlog import SCHEMA as LOG_SCHEMA
from mnigs.daemon.hooks import DEFAULT_MAX_RUNNING
from mnigs.methods import METHODS, serverSections
from mnigs.server.registry import DEFAULT_REGISTER_TIMEOUT
from mnigs.server.traffic import DEFAULT_INTERVAL as DEFAULT_TRAFFIC_INTERVAL
from mnigs.server.prevhops import MAX_HOPS as REPLY_TABLES
from mnigs.protocol import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_PORT,
    DEFAULT_REQUEST_TIMEOUT,
    MAX_LEASE_SECONDS,
)


def _amount(value):
    decimalAmount(value)
    return value  # offers carry the amount as the operator wrote it


def _optionalExecutable(value):
    return executable(value) if value else ""


SCHEMA = {
    "server": {
        "name": Field(str, "mnigs-gateway", text(64)),
        "state_dir": Field(str, "/var/lib/mnigs-server", absolutePath),
        "sweep_interval": Field(float, 5.0, between(0.1, 3600)),
        "drain_timeout": Field(float, 600.0, between(0, 86400)),
        "traffic_interval": Field(float, DEFAULT_TRAFFIC_INTERVAL, between(1, 3600)),
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
    # One [methods.NAME] table per registered method (mnigs.methods).
    "methods": Table(Computed(serverSections)),
    "cjdns": CJDNS_SCHEMA,
    "nft": {
        "table": Field(str, "mnigs", text(32)),
    },
    "routing": {
        "table": Field(int, 8152, between(1, 2**31 - 1)),
        "rule_priority": Field(int, 8148, between(1, 32765)),
        # Replies to mesh traffic leave the way it came (mnigs.server.arrival):
        # one table per previous hop, REPLY_TABLES from reply_table on.
        "reply_by_arrival": Field(bool, True),
        "reply_table": Field(int, 8160, between(1, 2**31 - 1 - REPLY_TABLES)),
        "reply_rule_priority": Field(int, 8149, between(1, 32765)),
    },
    "log": LOG_SCHEMA,
    "manhole": {
        "enabled": Field(bool, False),
        "socket": Field(str, "/run/mnigs-server/manhole.sock", absolutePath),
    },
    "admin": {
        "socket": Field(str, "/run/mnigs-server/admin.sock", absolutePath),
    },
    # The status listener (mnigs.web): the status page and /metrics.
    "web": {
        "enabled": Field(bool, False),
        "listen": Field(list, ["127.0.0.1", "::1"], addresses),
        "port": Field(int, 8151, port),
        # One series per lease (its id and client name as labels) on top
        # of the per-method sums: unbounded, so off unless asked for.
        "metrics_per_lease": Field(bool, False),
    },
    "hooks": {
        "register": Field(str, "", _optionalExecutable),
        "release": Field(str, "", _optionalExecutable),
        "register_timeout": Field(float, DEFAULT_REGISTER_TIMEOUT, between(0.1, 300)),
        "on_register_timeout": Field(str, "refuse", oneOf("refuse", "allow")),
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
        raise ConfigError(path, "methods", f"no method is configured: add a [methods.NAME] table "
                                           f"({', '.join(METHODS)})")
    if not any(m.enabled for m in config.methods.values()):
        raise ConfigError(path, "methods", "every method is disabled")
    for name, section in config.methods.items():
        check = METHODS[name].serverCheck
        problem = check(config) if check is not None and section.enabled else None
        if problem is not None:
            raise ConfigError(path, *problem)
    # Every pool-using method's pool is IPv4 and apart from the others'.
    pooled = [(name, config.methods[name]) for name in METHODS
              if name in config.methods and "pool" in config.methods[name]]
    for index, (name, section) in enumerate(pooled):
        if section.pool.version != 4:
            raise ConfigError(path, f"methods.{name}.pool", "must be an IPv4 network")
        for otherName, other in pooled[:index]:
            if section.pool.overlaps(other.pool):
                raise ConfigError(path, f"methods.{name}.pool", f"overlaps methods.{otherName}.pool")
    # IPv6 pools (checked as IPv6 by their field) are apart from each other too.
    pooled6 = [(name, section.pool6) for name, section in pooled
               if section.get("pool6") is not None]
    for index, (name, pool6) in enumerate(pooled6):
        for otherName, other in pooled6[:index]:
            if pool6.overlaps(other):
                raise ConfigError(path, f"methods.{name}.pool6", f"overlaps methods.{otherName}.pool6")
    routing = config.routing
    if routing.reply_table <= routing.table < routing.reply_table + REPLY_TABLES:
        raise ConfigError(path, "routing.reply_table",
                          f"its {REPLY_TABLES} tables would include routing.table ({routing.table})")
    return config


def routedPools6(config) -> list:
    """
    The IPv6 pools of enabled methods that are routed to this gateway
    (C{nat6 = false}): their sources leave by the uplink unmasqueraded.
    """
    return [section.pool6 for section in config.methods.values()
            if section.enabled and section.get("pool6") is not None and not section.nat6]


__all__ = ["loadServerConfig", "routedPools6", "SCHEMA", "EXISTING_INTERFACES", "ConfigError", "strings"]
