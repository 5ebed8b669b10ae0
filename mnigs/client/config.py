"""
The client's configuration file: see docs/configuration.md and
etc/mnigs-client.toml.

C{loadClientConfig(path)} reads and checks the file and returns its
L{Section}, or raises L{ConfigError} naming file, key and reason.  Given a
list as C{warnings}, it appends a L{ConfigWarning} for each thing worth
saying that does not stop the client: today the old spelling
C{[method.NAME]} of a method's table.  Either spelling ends up in one
place, C{config.methods.NAME} (every method there, with its defaults when
the file has no table for it).  The loader does no I/O beyond reading the
file: whether the interfaces named in L{EXISTING_INTERFACES} exist is
asked by L{mnigs.daemon.configcheck.checkClient}, which the daemon and
C{mnigsctl check-config} both use.
"""

from __future__ import annotations

import ipaddress

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
    ifnames,
    network,
    oneOf,
    port,
    readSection,
    readTOML,
    strings,
    text,
)
from mnigs.cjdns.settings import SCHEMA as CJDNS_SCHEMA
from mnigs.daemon.daemonlog import SCHEMA as LOG_SCHEMA
from mnigs.daemon.hooks import DEFAULT_MAX_RUNNING
from mnigs.methods import METHODS, clientSections
from mnigs.methods.slots import MAX_SLOTS, MAX_STANDBYS, slotName
from mnigs.protocol import DEFAULT_PORT
from mnigs.routing import routeSources, scans, sections as sourceSections


def _ports(value):
    if not value:
        raise ValueError("needs at least one port")
    return [port(v) if type(v) is int else _notInt(v) for v in value]


def _notInt(value):
    raise ValueError(f"{value!r} is not a port number")


def _subset(known):
    """
    A list of distinct words out of C{known()}, which is asked when a
    file is read (the registries may have grown).
    """
    def check(value):
        value = strings(value)
        choices = known()
        for item in value:
            if item not in choices:
                raise ValueError(f"{item!r} is not one of {', '.join(choices)}")
        if len(set(value)) != len(value):
            raise ValueError("lists an item twice")
        return value
    return check


#: Where no forwarded packet comes from: never a LAN to share.
_NOT_LAN = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/3",
    "::/8", "fe80::/10", "ff00::/8"))


def _prefixes(value):
    """
    Distinct, disjoint IPv4 or IPv6 networks, none of them every address
    (a /0) or one no forwarded packet comes from (loopback, link-local,
    multicast).
    """
    nets = []
    for item in strings(value):
        net = network(item)
        if net.prefixlen == 0:
            raise ValueError(f"{item} is every address: the mesh's own traffic forwarded through "
                             f"this node would take the tunnel; list the LAN's prefixes")
        for special in _NOT_LAN:
            if net.version == special.version and net.overlaps(special):
                raise ValueError(f"{item} is not a LAN's: it overlaps {special} (loopback, "
                                 f"link-local, multicast or reserved)")
        for other in nets:
            if net.version == other.version and net.overlaps(other):
                raise ValueError(f"lists a prefix twice ({other} and {item} overlap)")
        nets.append(net)
    return nets


def _nftTable(value):
    from mnigs.client.datapath import checkTableName
    return checkTableName(value)


def _amount(value):
    return None if value == "" else decimalAmount(value)


def _gatewayIds(value):
    value = strings(value)
    for gid in value:
        if not gid.startswith("ed25519:"):
            raise ValueError(f"{gid!r} is not a gateway id (ed25519:...)")
    return frozenset(value)


def _optionalExecutable(value):
    return executable(value) if value else ""


def _methods():
    return {
        "order": Field(list, ["wireguard", "forward"], _subset(lambda: tuple(METHODS))),
        "connect_timeout": Field(float, 5.0, between(0.5, 120)),
        # Each method's own settings, [methods.NAME] (mnigs.methods).
        **clientSections(),
    }


SCHEMA = {
    "client": {
        # Protocol version 1's free-text id: read, ignored, warned about.
        "id": Field(str, "", text(128)),
        "name": Field(str, "", text(64)),
        "state_dir": Field(str, "/var/lib/mnigs-client", absolutePath),
    },
    "discovery": {
        "ports": Field(list, [DEFAULT_PORT], _ports),
        "timeout": Field(float, 2.0, between(0.05, 60)),
        "concurrency": Field(int, 1024, between(1, 4096)),
        "settle": Field(float, 0.25, between(0, 60)),
        "rescan_interval": Field(float, 60.0, between(1, 86400)),
        "sources": Field(list, ["babel", "kernel"], _subset(routeSources)),
        "scan": Field(list, ["routes", "neighbours", "static"], _subset(scans)),
        "static": Field(list, [], addresses),
        "max_candidates": Field(int, 4096, between(1, 1_000_000)),
    },
    # Each route source's own settings, [sources.NAME] (mnigs.routing).
    "sources": Computed(sourceSections),
    "mesh": {
        "interfaces": Field(list, [], ifnames),
    },
    "methods": Computed(_methods),
    # The old spelling of the methods' tables: read, then moved into
    # "methods" by loadClientConfig with a warning.
    "method": Table(Computed(clientSections)),
    "cjdns": CJDNS_SCHEMA,
    "policy": {
        "accept_fees": Field(bool, False),
        "max_fee": Field(str, "", _amount),
        "currency": Field(str, "", text(8)),
        "pinned": Field(list, [], _gatewayIds),
        "blocked": Field(list, [], _gatewayIds),
        "switch_margin": Field(float, 0.2, between(0, 100)),
        "switch_hold": Field(float, 60.0, between(0, 86400)),
        "failure_cooldown": Field(float, 30.0, between(0, 86400)),
    },
    "health": {
        "targets": Field(list, [], addresses),
        "beyond": Field(list, [], addresses),
        "offer_probes": Field(bool, True),
        "interval": Field(float, 0.25, between(0.05, 60)),
        "timeout": Field(float, 0.75, between(0.05, 60)),
        "misses": Field(int, 5, between(1, 100)),
        "echoes": Field(int, 3, between(1, 5)),
        "offer_interval": Field(float, 10.0, between(1, 3600)),
        # Paced probes to the gateway and the dead-time rule (mnigs.client.pacing).
        "pacing": Field(bool, True),
        "min_interval": Field(float, 0.02, between(0.005, 60)),
        "min_timeout": Field(float, 0.05, between(0.005, 60)),
        "dead_probes": Field(int, 16, between(1, 1000)),
        "quality_window": Field(float, 4.0, between(0.5, 600)),
    },
    # Moving away from a gateway that works badly (mnigs.client.degrade).
    "degrade": {
        "enabled": Field(bool, True),
        "loss": Field(float, 0.1, between(0, 1)),
        "rtt_factor": Field(float, 4.0, between(1, 1000)),
        "rtt_margin": Field(float, 0.05, between(0, 60)),
        "hold": Field(float, 0.5, between(0, 3600)),
        "better_by": Field(float, 0.1, between(0, 1)),
        "better_ratio": Field(float, 0.5, between(0, 1)),
        "cooldown": Field(float, 30.0, between(0, 86400)),
        "history_age": Field(float, 30.0, between(0, 86400)),
    },
    # Hot standbys (mnigs.client.standby): the next-best gateways kept
    # registered and their tunnels up, so that a failover is a route change.
    "standby": {
        "count": Field(int, 1, between(0, MAX_STANDBYS)),
    },
    # The lease's resolvers, put in force while online (mnigs.client.dns).
    "dns": {
        "mode": Field(str, "auto", oneOf("auto", "resolved", "resolvconf", "file", "hook", "off")),
        "file": Field(str, "/etc/resolv.conf", absolutePath),
        "hook": Field(str, "", _optionalExecutable),
    },
    "routing": {
        "table": Field(int, 8150, between(1, 2**31 - 1)),
        "rule_priority": Field(int, 8150, between(1, 32765)),
        "fail_closed": Field(bool, False),
        # make-before-break (mnigs.client.pinning): how long at most a
        # planned move keeps the old gateway's connections; 0: moves break them
        "keep_old": Field(float, 600.0, between(0, 86400)),
    },
    # A mesh router's LAN (mnigs.client.datapath): what else uses the tunnel.
    "share": {
        "interfaces": Field(list, [], ifnames),
        "prefixes": Field(list, [], _prefixes),
        "table": Field(str, "mnigs_client", _nftTable),
    },
    "mtu": {
        "set_tunnel_mtu": Field(bool, True),
        "clamp_mss": Field(bool, True),
    },
    "admin": {
        "socket": Field(str, "/run/mnigs-client/admin.sock", absolutePath),
    },
    # The status listener (mnigs.web): the status page and /metrics.
    "web": {
        "enabled": Field(bool, False),
        "listen": Field(list, ["127.0.0.1", "::1"], addresses),
        "port": Field(int, 8152, port),
    },
    "log": LOG_SCHEMA,
    "manhole": {
        "enabled": Field(bool, False),
        "socket": Field(str, "/run/mnigs-client/manhole.sock", absolutePath),
    },
    "hooks": {
        "online": Field(str, "", _optionalExecutable),
        "offline": Field(str, "", _optionalExecutable),
        "failover": Field(str, "", _optionalExecutable),
        "degraded": Field(str, "", _optionalExecutable),
        "max_running": Field(int, DEFAULT_MAX_RUNNING, between(1, 1024)),
    },
}


# Keys naming interfaces that must already exist (not those mnigs makes).
EXISTING_INTERFACES = ("mesh.interfaces", "share.interfaces")


def loadClientConfig(path: str, warnings: list[ConfigWarning] | None = None):
    data = readTOML(path)
    config = readSection(path, "", SCHEMA, data)
    warnings = [] if warnings is None else warnings
    _moveOldMethodTables(path, data, config, warnings)
    if config.client.id:
        warnings.append(ConfigWarning(
            path, "client.id", "is ignored: a client's id is now the public half of its key "
                               f"({config.client.state_dir}/identity.pem), which proves it; "
                               "remove client.id"))
    for name in config.methods.order:
        check = METHODS[name].clientCheck
        problem = check(config) if check is not None else None
        if problem is not None:
            raise ConfigError(path, *problem)
    if config.dns.mode == "hook" and not config.dns.hook:
        raise ConfigError(path, "dns.hook", 'is required with dns.mode = "hook"')
    if config.routing.table in (253, 254, 255):
        raise ConfigError(path, "routing.table", "must not be one of the kernel's own tables (253-255)")
    if config.health.pacing and config.health.min_interval > config.health.interval:
        raise ConfigError(path, "health.min_interval", "must not exceed health.interval")
    if config.health.pacing and config.health.min_timeout > config.health.timeout:
        raise ConfigError(path, "health.min_timeout", "must not exceed health.timeout")
    meshShared = sorted(set(config.share.interfaces) & set(config.mesh.interfaces))
    if meshShared:
        raise ConfigError(path, "share.interfaces",
                          f"{meshShared[0]} is also a mesh interface: the mesh's traffic "
                          f"forwarded through this node would take the tunnel")
    _checkSlotNames(path, config)
    if config.policy.max_fee is not None and not config.policy.accept_fees:
        raise ConfigError(path, "policy.max_fee", "is set but accept_fees is false")
    if config.policy.pinned & config.policy.blocked:
        raise ConfigError(path, "policy.blocked", "blocks a pinned gateway")
    if "static" in config.discovery.scan and not config.discovery.static and config.discovery.scan == ["static"]:
        raise ConfigError(path, "discovery.static", "scan is only 'static' but no address is listed")
    return config


def _checkSlotNames(path, config):
    """
    The devices of the methods that hold several connections (their
    slots, L{mnigs.methods.slots}) must not share a name: WireGuard on
    C{tun0} would take C{tun1} for a standby, OpenVPN's own name.
    """
    taken = {}
    for name in config.methods.order:
        section = config.methods.get(name)
        interface = getattr(section, "interface", None) if section is not None else None
        if interface is None:
            continue
        slots = MAX_SLOTS if config.standby.count else 1
        for slot in range(slots):
            device = slotName(interface, slot)
            if device in taken:
                raise ConfigError(path, f"methods.{name}.interface",
                                  f"{interface!r} shares the device name {device} with "
                                  f"methods.{taken[device]}.interface (standbys take the names "
                                  "after it: mnigs-c0, mnigs-c1...)")
            taken[device] = name


def _moveOldMethodTables(path, data, config, warnings):
    """
    Put what the file spells [method.NAME] where [methods.NAME] goes,
    warning for each; a file using both spellings is refused.
    """
    old = config.pop("method")
    if "method" not in data:
        return
    newSpelling = sorted(set(data.get("methods", {})) & set(clientSections()))
    if newSpelling:
        raise ConfigError(path, "method", f"the old spelling [method.NAME] and the new one "
                                          f"[methods.{newSpelling[0]}] are both used: "
                                          f"write every method's table as [methods.NAME]")
    for name, settings in old.items():
        warnings.append(ConfigWarning(path, f"method.{name}",
                                      f"[method.{name}] is deprecated: write [methods.{name}]"))
        config.methods[name] = settings
    if not old:
        warnings.append(ConfigWarning(path, "method", "[method] is deprecated: write [methods.NAME]"))


__all__ = ["loadClientConfig", "SCHEMA", "EXISTING_INTERFACES"]
