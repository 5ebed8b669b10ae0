# -*- test-case-name: tests.unit.test_openvpn.test_management -*-
"""
The OpenVPN 2.6 management protocol, pure: lines in, events out, and the
commands mnigs sends, built from checked values.  No I/O here; the Twisted
side is L{mnigs.openvpn.channel}.

What openvpn 2.6.14 writes (captured, see tests/unit/data/openvpn/):

  - real-time messages start with C{>}: C{>INFO:...}, C{>HOLD:Waiting for
    hold release:0}, C{>STATE:1795559807,CONNECTED,SUCCESS,100.65.0.2,
    10.251.9.1,1194,,}, C{>BYTECOUNT:in,out} (client),
    C{>BYTECOUNT_CLI:cid,in,out} (server), C{>NOTIFY:info,...},
    C{>PASSWORD:...}, C{>FATAL:...};
  - C{>CLIENT:CONNECT,cid,kid}, C{>CLIENT:REAUTH,cid,kid},
    C{>CLIENT:ESTABLISHED,cid} and C{>CLIENT:DISCONNECT,cid} are each
    followed by C{>CLIENT:ENV,name=value} lines up to C{>CLIENT:ENV,END}
    (the block comes out whole); C{>CLIENT:ADDRESS,cid,addr,primary} stands
    alone.  The ENV of CONNECT and REAUTH holds the client's C{username}
    and C{password}: events keep them but never show the password;
  - every command gets exactly one reply, in order: a C{SUCCESS: ...} or
    C{ERROR: ...} line, or for commands with a multi-line answer
    (C{status}, C{state}, C{version}, C{help}) lines up to C{END} (or a
    single C{ERROR:} line).  Real-time messages may come between replies.
"""

from __future__ import annotations

import ipaddress
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Optional, Union

MAX_ENV = 256  # ENV lines in one block; openvpn sends about 40


class ManagementProtocolError(ValueError):
    """openvpn said something that does not fit the protocol."""


# -- events -----------------------------------------------------------------

@dataclass(frozen=True)
class Info:
    text: str


@dataclass(frozen=True)
class Hold:
    text: str


@dataclass(frozen=True)
class State:
    """
    One C{>STATE:} line: C{name} is CONNECTING, WAIT, AUTH, GET_CONFIG,
    ASSIGN_IP, ADD_ROUTES, CONNECTED, RECONNECTING, EXITING...;
    C{description} is SUCCESS/ERROR for CONNECTED, the reason otherwise.
    """

    time: int
    name: str
    description: str
    localAddress: str
    remoteAddress: str
    remotePort: str
    #: The tunnel's IPv6 address (openvpn 2.4+: the ninth field), if any.
    localAddress6: str = ""

    @property
    def connected(self) -> bool:
        return self.name == "CONNECTED" and self.description == "SUCCESS"


@dataclass(frozen=True)
class ByteCount:
    """C{>BYTECOUNT:} on a client: bytes received and sent by the tunnel."""

    bytesIn: int
    bytesOut: int


@dataclass(frozen=True)
class ClientByteCount:
    """C{>BYTECOUNT_CLI:} on a server: bytes received from and sent to C{cid}."""

    cid: int
    bytesIn: int
    bytesOut: int


class Environment(dict):
    """A client's ENV block; its repr never shows the password."""

    def __repr__(self) -> str:
        shown = {k: ("<hidden>" if k == "password" else v) for k, v in self.items()}
        return f"Environment({shown!r})"

    __str__ = __repr__


@dataclass(frozen=True)
class ClientConnect:
    """A client asks to connect; answer with client-auth or client-deny."""

    cid: int
    kid: int
    env: Environment


@dataclass(frozen=True)
class ClientReauth:
    """A connected client renegotiates; answer as for L{ClientConnect}."""

    cid: int
    kid: int
    env: Environment


@dataclass(frozen=True)
class ClientEstablished:
    cid: int
    env: Environment


@dataclass(frozen=True)
class ClientDisconnect:
    cid: int
    env: Environment


@dataclass(frozen=True)
class ClientAddress:
    cid: int
    address: str
    primary: bool


@dataclass(frozen=True)
class Notice:
    """Any other real-time message: C{kind} is what stands between > and :."""

    kind: str
    text: str


@dataclass(frozen=True)
class Reply:
    """The answer to one command: C{ok}, its text, and for multi-line ones the lines."""

    ok: bool
    text: str
    lines: tuple = ()


Event = Union[Info, Hold, State, ByteCount, ClientByteCount, ClientConnect, ClientReauth,
              ClientEstablished, ClientDisconnect, ClientAddress, Notice, Reply]

_BLOCKS = {"CONNECT": 2, "REAUTH": 2, "ESTABLISHED": 1, "DISCONNECT": 1}


def _int(text: str, what: str) -> int:
    if not text.isdigit() or len(text) > 19:
        raise ManagementProtocolError(f"{what} is not a number: {text[:32]!r}")
    return int(text)


@dataclass
class _Block:
    kind: str
    ids: tuple
    env: Environment = field(default_factory=Environment)

    def event(self):
        if self.kind == "CONNECT":
            return ClientConnect(self.ids[0], self.ids[1], self.env)
        if self.kind == "REAUTH":
            return ClientReauth(self.ids[0], self.ids[1], self.env)
        if self.kind == "ESTABLISHED":
            return ClientEstablished(self.ids[0], self.env)
        return ClientDisconnect(self.ids[0], self.env)


class ManagementParser:
    """
    Turns the lines openvpn writes (without their line ends) into events.
    The caller says, for each command it sends, whether its answer is
    multi-line (L{expectReply}), so that replies are told apart from one
    another.  Raises L{ManagementProtocolError} on lines that fit nothing:
    the connection should then be dropped.
    """

    def __init__(self) -> None:
        self._expected: deque[bool] = deque()
        self._block: Optional[_Block] = None
        self._lines: Optional[list] = None

    def expectReply(self, multiline: bool = False) -> None:
        self._expected.append(multiline)

    def feed(self, line: str) -> list:
        if self._block is not None:
            return self._blockLine(line)
        if line.startswith(">"):
            event = self._realtime(line)
            return [] if event is None else [event]
        return self._replyLine(line)

    def _blockLine(self, line: str) -> list:
        if not line.startswith(">CLIENT:ENV,"):
            raise ManagementProtocolError(f"expected >CLIENT:ENV in a client block, got {line[:40]!r}")
        entry = line[len(">CLIENT:ENV,"):]
        if entry == "END":
            block, self._block = self._block, None
            return [block.event()]
        if len(self._block.env) >= MAX_ENV:
            raise ManagementProtocolError("client ENV block too long")
        name, sep, value = entry.partition("=")
        if not sep:
            raise ManagementProtocolError(f"ENV line without '=': {entry[:40]!r}")
        self._block.env[name] = value
        return []

    def _realtime(self, line: str):
        kind, sep, rest = line[1:].partition(":")
        if not sep:
            raise ManagementProtocolError(f"real-time message without ':': {line[:40]!r}")
        if kind == "CLIENT":
            return self._client(rest)
        if kind == "STATE":
            f = rest.split(",")
            f += [""] * (9 - len(f))
            return State(_int(f[0], "state time"), f[1], f[2], f[3], f[4], f[5], f[8])
        if kind == "BYTECOUNT":
            f = rest.split(",")
            if len(f) != 2:
                raise ManagementProtocolError(f"bad BYTECOUNT: {rest[:40]!r}")
            return ByteCount(_int(f[0], "bytes in"), _int(f[1], "bytes out"))
        if kind == "BYTECOUNT_CLI":
            f = rest.split(",")
            if len(f) != 3:
                raise ManagementProtocolError(f"bad BYTECOUNT_CLI: {rest[:40]!r}")
            return ClientByteCount(_int(f[0], "cid"), _int(f[1], "bytes in"),
                                   _int(f[2], "bytes out"))
        if kind == "INFO":
            return Info(rest)
        if kind == "HOLD":
            return Hold(rest)
        return Notice(kind, rest)

    def _client(self, rest: str):
        f = rest.split(",")
        kind = f[0]
        if kind in _BLOCKS:
            if len(f) != 1 + _BLOCKS[kind]:
                raise ManagementProtocolError(f"bad >CLIENT:{kind}: {rest[:40]!r}")
            ids = tuple(_int(x, "client id") for x in f[1:])
            self._block = _Block(kind, ids)
            return None  # the event comes with the block's last line
        if kind == "ADDRESS" and len(f) == 4:
            return ClientAddress(_int(f[1], "cid"), f[2], f[3] == "1")
        return Notice("CLIENT", rest)

    def _replyLine(self, line: str) -> list:
        if not self._expected:
            raise ManagementProtocolError(f"reply with no command waiting: {line[:40]!r}")
        multiline = self._expected[0]
        if self._lines is None:
            if line.startswith("SUCCESS:") or line.startswith("ERROR:"):
                self._expected.popleft()
                ok = line.startswith("SUCCESS:")
                return [Reply(ok, line.partition(":")[2].strip())]
            if not multiline:
                raise ManagementProtocolError(f"expected SUCCESS: or ERROR:, got {line[:40]!r}")
            self._lines = []
        if line == "END":
            lines, self._lines = tuple(self._lines), None
            self._expected.popleft()
            return [Reply(True, "", lines)]
        self._lines.append(line)
        return []


# -- commands ---------------------------------------------------------------

_REASON = re.compile(r"^[A-Za-z0-9 .,:;()_/+-]{0,200}$")
_PUSH_OPTION = re.compile(r"^[A-Za-z0-9 .:_/-]{1,200}$")


def _id(value: int) -> str:
    if type(value) is not int or not 0 <= value < 2 ** 63:
        raise ValueError(f"bad client or key id {value!r}")
    return str(value)


def _quoted(text: str) -> str:
    if not _REASON.match(text):
        raise ValueError(f"text not allowed in a management command: {text!r}")
    return f'"{text}"'


def stateOn() -> str:
    return "state on"


def bytecount(interval: int) -> str:
    if type(interval) is not int or not 0 <= interval <= 3600:
        raise ValueError("bytecount interval must be 0-3600 s")
    return f"bytecount {interval}"


def holdRelease() -> str:
    return "hold release"


def ifconfigPush(address, netmask) -> str:
    """The config line that gives a client exactly C{address}."""
    address = ipaddress.IPv4Address(address)
    netmask = ipaddress.IPv4Address(netmask)
    return f"ifconfig-push {address} {netmask}"


def ifconfigPush6(address, gateway, prefixlen: int) -> str:
    """The config line that gives a client exactly the IPv6 C{address}."""
    address, gateway = ipaddress.IPv6Address(address), ipaddress.IPv6Address(gateway)
    if type(prefixlen) is not int or not 0 < prefixlen <= 128:
        raise ValueError(f"bad prefix length {prefixlen!r}")
    return f"ifconfig-ipv6-push {address}/{prefixlen} {gateway}"


def clientAuth(cid: int, kid: int, config=()) -> str:
    """
    C{client-auth}: admit the client with the given config lines (what a
    client-config-dir file would hold).
    """
    lines = list(config)
    for line in lines:
        if not _PUSH_OPTION.match(line) or line.strip() == "END":
            raise ValueError(f"config line not allowed: {line!r}")
    return "\n".join([f"client-auth {_id(cid)} {_id(kid)}", *lines, "END"])


def clientAuthNoConfig(cid: int, kid: int) -> str:
    return f"client-auth-nt {_id(cid)} {_id(kid)}"


def clientDeny(cid: int, kid: int, reason: str, clientReason: str) -> str:
    """C{reason} goes to openvpn's log, C{clientReason} to the client."""
    return f"client-deny {_id(cid)} {_id(kid)} {_quoted(reason)} {_quoted(clientReason)}"


def clientKill(cid: int, message: str = "HALT") -> str:
    """
    End a client's session; with C{HALT} the client is told to exit
    rather than reconnect (openvpn's default message is RESTART).
    """
    if message not in ("HALT", "RESTART"):
        raise ValueError("client-kill message must be HALT or RESTART")
    return f"client-kill {_id(cid)} {message}"


MULTILINE_COMMANDS = frozenset({"status", "state", "version", "help", "log", "echo"})


def isMultiline(command: str) -> bool:
    """
    Whether C{command}'s answer runs to C{END}: C{state}, C{log}, C{echo}
    only when they show history (not C{on}/C{off}).
    """
    words = command.split()
    if not words or words[0] not in MULTILINE_COMMANDS:
        return False
    if words[0] in ("state", "log", "echo") and len(words) > 1 and words[1] in ("on", "off"):
        if len(words) > 2:
            # "state on all" answers SUCCESS and then history up to END:
            # two replies in one, which nothing here needs.
            raise ValueError(f"unsupported command form: {command!r}")
        return False
    if words[0] == "version" and len(words) > 1:
        return False  # "version N" sets the client's version: one line
    return True
