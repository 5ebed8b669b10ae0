# -*- test-case-name: tests.unit.test_nftnetlink,tests.mesh.test_nft -*-
"""
Adding and deleting nftables set elements over one long-lived netlink
socket: the gateway's hot path (every registration and every release
changes the access list), without running C{nft}.

Why: an C{nft -f} run costs ~2-4 ms of fork, exec and cache loading, and
~15 ms when it deletes an element, most of it in C{nft} closing its netlink
socket; this costs ~0.2 ms.  Whole-table work (install, remove) stays with
C{nft -f}, whose scripts are easier to read than netlink messages.

One L{NftSetElements.apply} is one nf_tables transaction (a netlink batch),
all or nothing, with the same meaning as L{mnigs.system.nft.changesScript}: every
touched element is added, then the denied ones deleted, so that denying an
element that is not there is no error.

An element's key is the concatenation of its parts (L{elementKey}), each
padded to a multiple of four bytes as nf_tables lays out concatenations
in its 32-bit registers: an IPv4 address is 4 bytes, IPv6 16, an interface
name 16 (IFNAMSIZ, NUL-padded, what C{meta iifname} loads) and a MAC 6
plus 2 of padding; C{100.64.0.2 . "wg0"} is 20 bytes.

Message layout (linux/netfilter/nf_tables.h, nfnetlink.h)::

    nlmsghdr | nfgenmsg(family, version 0, res_id)
             | NFTA_SET_ELEM_LIST_TABLE "table\\0"
             | NFTA_SET_ELEM_LIST_SET   "set\\0"
             | NFTA_SET_ELEM_LIST_ELEMENTS [ NFTA_LIST_ELEM [ NFTA_SET_ELEM_KEY
                                             [ NFTA_DATA_VALUE address bytes ] ] ... ]

framed by NFNL_MSG_BATCH_BEGIN / NFNL_MSG_BATCH_END.  Every element message
asks for an ack; the kernel answers each with an NLMSG_ERROR (0 or -errno)
before C{send} returns, as nfnetlink handles batches in the sender's context.
"""

from __future__ import annotations

import errno as errnos
import ipaddress
import os
import socket
import struct
from typing import Iterable, Optional

from twisted.logger import Logger

log = Logger()

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN = 0x10
NFNL_MSG_BATCH_END = 0x11
NFT_MSG_NEWSETELEM = 12
NFT_MSG_DELSETELEM = 14
NFPROTO_INET = 1

SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)  # Linux; Python does not name it
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_CREATE = 0x400
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLA_F_NESTED = 0x8000

NFTA_SET_ELEM_LIST_TABLE = 1
NFTA_SET_ELEM_LIST_SET = 2
NFTA_SET_ELEM_LIST_ELEMENTS = 3
NFTA_LIST_ELEM = 1
NFTA_SET_ELEM_KEY = 1
NFTA_DATA_VALUE = 1

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_NFGEN = struct.Struct("!BBH")      # nfgenmsg: family, version, res_id (big endian)
_ATTR = struct.Struct("=HH")        # nlattr: len, type
# The elements of one message sit in one attribute, whose length is 16 bits
# (1000 of the largest, an IPv6 link binding, take about 52 KB).
MAX_ELEMENTS_PER_MESSAGE = 1000
IFNAMSIZ = 16


class NetlinkUnavailable(Exception):
    """No nfnetlink socket could be opened here (no permission, no kernel
    support): use C{nft} instead."""


def attribute(kind: int, payload: bytes) -> bytes:
    length = _ATTR.size + len(payload)
    return _ATTR.pack(length, kind) + payload + b"\0" * (-length % 4)


def nested(kind: int, payload: bytes) -> bytes:
    return attribute(kind | NLA_F_NESTED, payload)


def message(kind: int, flags: int, seq: int, family: int, payload: bytes = b"",
            resId: int = 0) -> bytes:
    body = _NFGEN.pack(family, 0, resId) + payload
    return _HEADER.pack(_HEADER.size + len(body), kind, flags, seq, 0) + body


def _address(part) -> bytes:
    if not isinstance(part, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        raise TypeError(f"expected an address, not {part!r}")
    return part.packed


def _interfaceName(part) -> bytes:
    name = part.encode("ascii") if isinstance(part, str) else None
    if name is None or not 0 < len(name) < IFNAMSIZ or b"\0" in name:
        raise ValueError(f"bad interface name: {part!r}")
    return name.ljust(IFNAMSIZ, b"\0")


def _linkAddress(part) -> bytes:
    if not isinstance(part, bytes) or len(part) != 6:
        raise TypeError(f"expected a MAC's six bytes, not {part!r}")
    return part + b"\0\0"


_PARTS = (_address, _interfaceName, _linkAddress)


def elementKey(key: tuple) -> bytes:
    """
    The bytes of a set element key: an address, then optionally an
    interface name, then optionally a MAC (L{mnigs.system.admission.Admission.key}).
    """
    if not isinstance(key, tuple) or not 0 < len(key) <= len(_PARTS):
        raise TypeError(f"not a gate set element: {key!r}")
    return b"".join(encode(part) for encode, part in zip(_PARTS, key))


def elementsMessage(kind: int, flags: int, seq: int, table: str, setName: str,
                    keys) -> bytes:
    elements = b"".join(
        nested(NFTA_LIST_ELEM, nested(NFTA_SET_ELEM_KEY, attribute(NFTA_DATA_VALUE, elementKey(k))))
        for k in keys)
    payload = (attribute(NFTA_SET_ELEM_LIST_TABLE, table.encode("ascii") + b"\0")
               + attribute(NFTA_SET_ELEM_LIST_SET, setName.encode("ascii") + b"\0")
               + nested(NFTA_SET_ELEM_LIST_ELEMENTS, elements))
    return message((NFNL_SUBSYS_NFTABLES << 8) | kind, flags, seq, NFPROTO_INET, payload)


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def changesBatch(table: str, changes: dict, firstSeq: int) -> tuple[bytes, list[int]]:
    """
    The batch for C{changes} ((set name, element key) -> add?) and the
    sequence numbers of the messages that will be acked.
    """
    parts = []
    acked = []
    seq = firstSeq

    def add(data):
        nonlocal seq
        parts.append(data)
        seq += 1

    add(message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, socket.AF_UNSPEC,
                resId=NFNL_SUBSYS_NFTABLES))
    for setName in dict.fromkeys(name for name, _ in changes):  # in their first order
        touched = [key for name, key in changes if name == setName]
        denied = [key for key in touched if not changes[(setName, key)]]
        for kind, flags, keys in (
                (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE, touched),
                (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK, denied)):
            for chunk in _chunks(keys, MAX_ELEMENTS_PER_MESSAGE):
                acked.append(seq)
                add(elementsMessage(kind, flags, seq, table, setName, chunk))
    add(message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq, socket.AF_UNSPEC,
                resId=NFNL_SUBSYS_NFTABLES))
    return b"".join(parts), acked


def parseAcks(data: bytes) -> list[tuple[int, int]]:
    """
    (sequence number, error) of each NLMSG_ERROR in C{data}; error is 0
    for an ack, else a negative errno.
    """
    acks = []
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, kind, _, seq, _ = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size:
            raise ValueError("malformed netlink message")
        if kind == NLMSG_ERROR:
            (error,) = struct.unpack_from("=i", data, offset + _HEADER.size)
            acks.append((seq, error))
        offset += (length + 3) & ~3
    return acks


def _openSocket(netns: Optional[str]) -> socket.socket:
    if netns is None:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    from mnigs.system.pyroute import netns as pyroute2Netns
    return pyroute2Netns.create_socket(netns, socket.AF_NETLINK, socket.SOCK_RAW,
                                       NETLINK_NETFILTER, flags=0)


class NftSetElements:
    """
    Applies access-list changes to the sets of an C{inet} table through one nfnetlink socket, opened at first use (in
    network namespace C{netns}, tests only, else in ours).  Blocking, but
    each call is one short exchange with the kernel.
    """

    def __init__(self, netns: Optional[str] = None, timeout: float = 5.0,
                 openSocket=_openSocket) -> None:
        self.netns = netns
        self.timeout = timeout
        self._open = openSocket
        self._socket = None
        self._sendBuffer = 0
        self._seq = 1

    def _connected(self):
        if self._socket is None:
            try:
                sock = self._open(self.netns)
                sock.settimeout(self.timeout)
                sock.bind((0, 0))
            except OSError as e:
                raise NetlinkUnavailable(str(e)) from e
            self._socket = sock
            self._sendBuffer = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        return self._socket

    def _room(self, sock, size: int) -> None:
        """
        A batch goes out in one send, which fails (EMSGSIZE) beyond the
        socket's send buffer (about 200 KB by default; a few thousand
        changes of the largest elements): grow it to fit, past
        C{net.core.wmem_max} when we may (CAP_NET_ADMIN, which changing
        nf_tables needs anyway).
        """
        if size <= self._sendBuffer:
            return
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, size)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
        self._sendBuffer = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)

    def apply(self, table: str, changes: dict) -> None:
        """
        Apply C{changes} ((set name, element key) -> add?, see
        L{mnigs.system.nft.NftAccess}) in one transaction.

        @raise NetlinkUnavailable: no socket could be opened.
        @raise mnigs.system.nft.NftError: the kernel refused the transaction
            (nothing of it was applied).
        """
        from mnigs.system.nft import NftError

        if not changes:
            return
        sock = self._connected()
        batch, acked = changesBatch(table, changes, self._seq)
        self._seq = (acked[-1] + 2) % 0x7FFFFFFF or 1
        waiting = set(acked)
        failed = None
        try:
            self._room(sock, len(batch))
            sock.sendto(batch, (0, 0))
            while waiting:
                for seq, error in parseAcks(sock.recv(65536)):
                    if seq in waiting:
                        waiting.discard(seq)
                        if error and failed is None:
                            failed = -error
        except (OSError, ValueError) as e:
            # The socket's state is unknown now: start afresh next time.
            self.close()
            raise NftError(["netlink", "nf_tables"], None, f"netlink exchange failed: {e}") from e
        if failed is not None:
            raise NftError(["netlink", "nf_tables", table], None,
                           f"{errnos.errorcode.get(failed, failed)}: {os.strerror(failed)}")

    def close(self) -> None:
        if self._socket is not None:
            sock, self._socket = self._socket, None
            sock.close()
