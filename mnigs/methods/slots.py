# -*- test-case-name: tests.unit.test_slots -*-
"""
A client method's connections at once, each on a device of its own: the
serving one and the hot standbys (L{mnigs.client.standby}).

Slot 0 is the configured interface name; slot C{n} is that name with its
trailing number raised by C{n} (C{mnigs-c0}: C{mnigs-c1}, C{mnigs-c2}...),
or, for a name without one, C{n} appended (C{wg}: C{wg1}), the name cut
short to fit the kernel's 15 characters.  A connection takes the lowest
free slot when it comes up and gives it back once it is down, so a client
with no standby only ever uses the configured name.
"""

from __future__ import annotations

import re

#: Connections a method with slots holds at once at most: the serving one,
#: up to L{MAX_STANDBYS} standbys, and one more coming up while another
#: goes down.
MAX_STANDBYS = 4
MAX_SLOTS = MAX_STANDBYS + 2

_TRAILING = re.compile(r"^(.*?)(\d*)$")
IFNAMSIZ = 15


class NoFreeSlot(Exception):
    """Every device of the method is in use."""


def slotName(ifname: str, slot: int) -> str:
    """The device name of C{slot} for the configured C{ifname} (see the module docstring)."""
    if slot == 0:
        return ifname
    base, digits = _TRAILING.match(ifname).groups()
    number = str(int(digits) + slot) if digits else str(slot)
    return base[:IFNAMSIZ - len(number)] + number


class Slots:
    """
    Which of a method's C{count} devices are in use.  L{take} gives the
    lowest free slot and its device name; L{free} gives it back.
    """

    def __init__(self, ifname: str, count: int = MAX_SLOTS):
        self.ifname = ifname
        self.count = count
        self.names = [slotName(ifname, slot) for slot in range(count)]
        if len(set(self.names)) != count:
            raise ValueError(f"{ifname!r} gives no {count} distinct slot names")
        self.used: set[int] = set()

    def take(self) -> tuple[int, str]:
        for slot in range(self.count):
            if slot not in self.used:
                self.used.add(slot)
                return slot, self.names[slot]
        raise NoFreeSlot(f"all {self.count} devices from {self.ifname} are in use")

    def free(self, slot: int) -> None:
        self.used.discard(slot)
