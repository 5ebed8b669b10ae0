"""
What a method's counters say about one lease or one session.  Directions
are always the client's: I{in} went to the client, I{out} came from it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Traffic:
    """
    One lease's counters on the gateway: C{bytesIn}, C{bytesOut} (C{None}:
    not counted), and C{lastHandshake}, the wall-clock time of its
    tunnel's last handshake (WireGuard), or C{None}.
    """
    bytesIn: int | None = None
    bytesOut: int | None = None
    lastHandshake: float | None = None

