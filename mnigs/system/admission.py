# -*- test-case-name: tests.unit.test_admission,tests.unit.test_nft -*-
"""
What the data-path gate admits for one lease (L{Admission}): packets whose
source is the lease's address I{and} that arrive where the lease lives,
its tunnel interface, or, for a lease without a tunnel (C{forward}), the
mesh interface and the link-layer address it registered from.

Every part is checked here, once, so that whatever builds nft scripts or
netlink messages from an admission only ever sees an L{ipaddress} address,
an interface name that the kernel could have, and a canonical MAC.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Optional, Union

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

#: What a Linux interface name may be here (IFNAMSIZ is 16 with the NUL);
#: nothing that could end a quoted nft string or start a new statement.
INTERFACE_NAME = re.compile(r"[A-Za-z0-9_.@+-]{1,15}")  # fullmatch: "$" allows a newline
_LINK_ADDRESS = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


def checkAddress(address: object) -> IPAddress:
    """Accept only L{ipaddress} address objects without an IPv6 zone."""
    if not isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        raise TypeError(f"expected an ipaddress address, not {address!r}")
    if getattr(address, "scope_id", None):
        raise ValueError(f"zoned address not allowed here: {address}")
    return address


def checkInterfaceName(name: object) -> str:
    if not isinstance(name, str) or not INTERFACE_NAME.fullmatch(name):
        raise ValueError(f"bad interface name: {name!r}")
    return name


def checkLinkAddress(mac: object) -> str:
    """
    An Ethernet (48-bit) address as six colon-separated hex bytes, in
    lower case; neither all zeros nor a group address.
    """
    if not isinstance(mac, str):
        raise TypeError(f"expected a MAC address as text, not {mac!r}")
    canonical = mac.lower()
    if not _LINK_ADDRESS.fullmatch(canonical):
        raise ValueError(f"bad link-layer address: {mac!r}")
    if canonical == "00:00:00:00:00:00" or int(canonical[:2], 16) & 1:
        raise ValueError(f"not a unicast link-layer address: {mac!r}")
    return canonical


@dataclass(frozen=True)
class Admission:
    """
    One lease's entry in the gate.

    @ivar address: the lease's source address (its C{config["address"]}).
    @ivar interface: the interface its packets must arrive on.
    @ivar linkAddress: for a lease bound to a link-layer address
        (C{forward}), the MAC its packets must come from; C{None} for a
        tunnel, whose interface is its own.
    """

    address: IPAddress
    interface: str
    linkAddress: Optional[str] = None

    def __post_init__(self):
        checkAddress(self.address)
        checkInterfaceName(self.interface)
        if self.linkAddress is not None:
            object.__setattr__(self, "linkAddress", checkLinkAddress(self.linkAddress))

    @property
    def family(self) -> int:
        return self.address.version

    def key(self) -> tuple:
        """
        The parts of this admission's set element, in the order of the
        set's type: (address, interface name) for a tunnel, and the MAC's
        six bytes after them for a link-layer binding.
        """
        if self.linkAddress is None:
            return (self.address, self.interface)
        return (self.address, self.interface, bytes.fromhex(self.linkAddress.replace(":", "")))

    def describe(self) -> str:
        where = f"{self.interface}" + (f" from {self.linkAddress}" if self.linkAddress else "")
        return f"{self.address} on {where}"
