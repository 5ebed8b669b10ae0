# -*- test-case-name: tests.unit.test_softether -*-
"""
What the gateway's vpnserver is told, as L{mnigs.softether.vpncmd.Command}s
built from checked values, and what is read back from its tables.  Pure.

One virtual hub, bridged to a kernel tap interface (C{tap_BRIDGE}); no
SecureNAT.  The gateway's kernel routes and NATs the tap's traffic through
the same nftables gate as every other method, so "only lease holders get
through" is decided in one place and the hub's own rules only make sure
each session speaks with its lease's address.  A user per lease:

  - a password (asked by vpncmd's prompt, so it is on vpncmd's stdin,
    never on a command line);
  - policies: one session at a time, no talking to other sessions (privacy
    filter), no IPv6 (the gate is IPv4), no DHCP server;
  - access rules tagged with the memo C{mnigs:USER}: IPv4 from the user's
    session passes only with the lease's source address, and IPv4 to it
    only with that destination, so a lease holder can neither send as
    another one nor receive what is meant for another one.  (A rule whose
    addresses are all wildcards becomes an Ethernet rule that would also
    drop ARP, hence the two half-space rules instead of one 0.0.0.0/0.)
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass, field

from mnigs.softether.vpncmd import Command, command

DEFAULT_HUB = "DEFAULT"
MEMO_PREFIX = "mnigs:"
PASS_PRIORITY = "100"
DISCARD_PRIORITY = "101"
HALVES = ("0.0.0.0/1", "128.0.0.0/1")
# Ports the vpnserver listens on when it starts without a configuration.
BOOTSTRAP_PORTS = (5555, 992, 443, 1194)
USER_NAME = re.compile(r"^m[0-9a-f]{24}$")
HUB_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
BRIDGE_NAME = re.compile(r"^[a-z0-9]{1,11}$")
POLICIES = (("MultiLogins", "1"), ("PrivacyFilter", "yes"), ("FilterIPv6", "yes"),
            ("DHCPNoServer", "yes"))


def userName(leaseId: str) -> str:
    """
    The hub user of a lease: derived from the lease id, so that it is the
    same after a restart, and made of nothing the client chose.
    """
    return "m" + hashlib.sha256(leaseId.encode("utf-8")).hexdigest()[:24]


def checkHubName(name: str) -> str:
    if not HUB_NAME.match(name) or name.upper() == DEFAULT_HUB:
        raise ValueError(f"{name!r} is not a usable hub name (1-32 of A-Z a-z 0-9 _ -, "
                         "not DEFAULT)")
    return name


def checkBridgeName(name: str) -> str:
    """
    The bridge device's name; the kernel interface is C{tap_NAME}.
    """
    if not BRIDGE_NAME.match(name):
        raise ValueError(f"{name!r} is not a usable bridge name (1-11 of a-z 0-9)")
    return name


def tapInterface(bridge: str) -> str:
    return "tap_" + bridge


@dataclass(frozen=True)
class HubUser:
    name: str
    password: str = field(repr=False)
    address: ipaddress.IPv4Address

    def __post_init__(self):
        if not USER_NAME.match(self.name):
            raise ValueError(f"{self.name!r} is not a hub user name made by userName()")
        if not isinstance(self.address, ipaddress.IPv4Address):
            raise TypeError("a hub user's address is an IPv4Address")

    @property
    def memo(self) -> str:
        return MEMO_PREFIX + self.name


def _rule(action: str, priority: str, user: HubUser, sending: bool, ip: str) -> Command:
    # Every parameter is given: vpncmd prompts for those left out.
    return command("AccessAdd", action, MEMO=user.memo, PRIORITY=priority,
                   SRCUSERNAME=user.name if sending else "",
                   DESTUSERNAME="" if sending else user.name,
                   SRCMAC="", DESTMAC="",
                   SRCIP=ip if sending else "0.0.0.0/0",
                   DESTIP="0.0.0.0/0" if sending else ip,
                   PROTOCOL="ip", SRCPORT="", DESTPORT="", TCPSTATE="")


def accessRules(user: HubUser) -> list[Command]:
    own = f"{user.address}/32"
    rules = []
    for sending in (True, False):
        rules.append(_rule("pass", PASS_PRIORITY, user, sending, own))
        rules += [_rule("discard", DISCARD_PRIORITY, user, sending, half) for half in HALVES]
    return rules


def addUserCommands(user: HubUser) -> list[Command]:
    """
    Create the user with its password, policies and rules (hub admin mode).
    """
    return ([command("UserCreate", user.name, GROUP="none", REALNAME="none", NOTE="none"),
             command("UserPasswordSet", user.name, prompts=(user.password, user.password))]
            + [command("UserPolicySet", user.name, NAME=name, VALUE=value)
               for name, value in POLICIES]
            + accessRules(user))


def removeUserCommands(name: str, sessions: list[str], ruleIds: list[str]) -> list[Command]:
    """
    The user first, so that it cannot log in again; then its sessions and
    its rules (by their unique ids, which do not shift when others go).
    """
    return ([command("UserDelete", name)]
            + [command("SessionDisconnect", session) for session in sessions]
            + [command("AccessDelete", rule) for rule in ruleIds])


def sessionsOf(sessionTable: list[dict], name: str) -> list[str]:
    """
    The session names of user C{name} in a C{SessionList} table (user
    names are case-insensitive in SoftEther).
    """
    return [row["Session Name"] for row in sessionTable
            if row.get("User Name", "").lower() == name.lower() and row.get("Session Name")]


def sessionsByUser(sessionTable: list[dict], names) -> list[tuple[str, str]]:
    """
    (user name, session name) of every session in a C{SessionList} table
    whose user is one of C{names} (lower case).
    """
    wanted = {name.lower() for name in names}
    return [(row["User Name"].lower(), row["Session Name"]) for row in sessionTable
            if row.get("User Name", "").lower() in wanted and row.get("Session Name")]


def _size(items: dict, key: str) -> int | None:
    digits = "".join(c for c in items.get(key, "") if c.isdigit())  # "1,234 bytes"
    return int(digits) if digits else None


def sessionBytes(items: dict) -> tuple[int, int] | None:
    """
    C{(bytes to the client, bytes from the client)} of one session, from
    the server's C{SessionGet} answer (C{Item,Value}).  The names are the
    client's: a session's "incoming" data went to its client, its
    "outgoing" data came from it (measured: a 2 MB download grew
    "Incoming Data Size" by 2.1 MB in tests/mesh/test_softether.py).
    C{None} when the answer lacks either.
    """
    toClient, fromClient = _size(items, INCOMING_DATA), _size(items, OUTGOING_DATA)
    if toClient is None or fromClient is None:
        return None
    return toClient, fromClient


OUTGOING_DATA, INCOMING_DATA = "Outgoing Data Size", "Incoming Data Size"


def rulesByUser(accessTable: list[dict]) -> dict[str, list[str]]:
    """
    User name -> unique ids of the rules mnigs made for it, from an
    C{AccessList} table; rules without an mnigs memo are left out.
    """
    rules: dict[str, list[str]] = {}
    for row in accessTable:
        memo = row.get("Memo", "")
        if memo.startswith(MEMO_PREFIX) and row.get("Unique ID", "").isdigit():
            rules.setdefault(memo[len(MEMO_PREFIX):], []).append(row["Unique ID"])
    return rules


def mnigsUsers(userTable: list[dict]) -> set[str]:
    """
    The users in a C{UserList} table that look like mnigs's.
    """
    return {row["User Name"].lower() for row in userTable
            if USER_NAME.match(row.get("User Name", "").lower())}


def listenerPorts(listenerTable: list[dict]) -> set[int]:
    """
    TCP ports from a C{ListenerList} table (C{"TCP 5555"}).
    """
    ports = set()
    for row in listenerTable:
        kind, _, number = row.get("Port Number", "").partition(" ")
        if kind == "TCP" and number.isdigit():
            ports.add(int(number))
    return ports


def hubNames(hubTable: list[dict]) -> set[str]:
    return {row["Virtual Hub Name"] for row in hubTable if row.get("Virtual Hub Name")}


def bridges(bridgeTable: list[dict]) -> set[tuple[str, str]]:
    """
    (hub, device) pairs from a C{BridgeList} table.
    """
    return {(row.get("Virtual Hub Name", ""), row.get("Network Adapter or Tap Device Name", ""))
            for row in bridgeTable}


def serverSettingsCommands(port: int, listening: set[int], hubs: set[str], hub: str,
                           hubPassword: str, bridged: set[tuple[str, str]], bridge: str,
                           certificateFile: str) -> list[Command]:
    """
    Everything server-wide, idempotent given what is there: our listener,
    no UDP listeners, no OpenVPN or SSTP emulation (the openvpn method may
    want UDP 1194), no keep-alive pings to softether.org, our
    hub and its tap bridge, no DEFAULT hub, and the certificate exported.
    (VPN Azure is off in a fresh configuration and cannot be switched on
    once NAT traversal is off: VpnAzureSetEnable then answers error 33.)
    """
    commands = []
    if port not in listening:
        commands.append(command("ListenerCreate", str(port)))
    commands += [command("PortsUDPSet", "0"),
                 command("ProtoOptionsSet", "OpenVPN", NAME="Enabled", VALUE="false"),
                 command("ProtoOptionsSet", "SSTP", NAME="Enabled", VALUE="false"),
                 command("KeepDisable")]
    if hub not in hubs:
        commands.append(command("HubCreate", hub, prompts=(hubPassword, hubPassword)))
    if DEFAULT_HUB in hubs:
        commands.append(command("HubDelete", DEFAULT_HUB))
    if (hub, bridge) not in bridged:
        commands.append(command("BridgeCreate", hub, DEVICE=bridge, TAP="yes"))
    commands.append(command("ServerCertGet", certificateFile))
    return commands


# Settings that no vpncmd command changes, only the whole configuration
# (ConfigGet, edit, ConfigSet, after which the vpnserver restarts itself):
# no dynamic DNS registration with softether.net, no NAT traversal through
# SoftEther's servers, no JSON-RPC admin API over HTTPS, no keep-alive
# pings, no TLS 1.0/1.1.  (key, value wanted, value of a fresh server)
HARDENING = (("DisableNatTraversal", "true", "false"),
             ("DisableJsonRpcWebApi", "true", "false"),
             ("UseKeepConnect", "false", "true"),
             ("Tls_Disable1_0", "true", "false"),
             ("Tls_Disable1_1", "true", "false"))
_DDNS_DISABLED = re.compile(r"(declare DDnsClient\r?\n\s*\{[^}]*?\bbool Disabled )false\b")


def hardenedConfig(text: str):
    """
    The vpnserver configuration C{text} (from C{ConfigGet}) with the
    settings of L{HARDENING} and dynamic DNS off, or C{None} if it has them
    already.  Only those exact lines are touched.
    """
    changed = _DDNS_DISABLED.sub(r"\1true", text, count=1)
    for key, wanted, default in HARDENING:
        changed = re.sub(rf"(^\s*bool {key} ){default}(?=\r?$)", rf"\g<1>{wanted}", changed,
                         count=1, flags=re.MULTILINE)
    return None if changed == text else changed


def listenerCleanupCommands(port: int, listening: set[int]) -> list[Command]:
    return [command("ListenerDelete", str(other)) for other in sorted(listening - {port})]
