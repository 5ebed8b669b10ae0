"""
Why a session ended, in words for people and in one bounded word for
counting (the failover metric's C{reason} label).  A L{Reason} is the text
the log, the trace and C{mnigsctl status} show, carrying its C{kind}; the
watchers of a session (L{mnigs.client.machine.ISessionReports}) report
one, and it travels through the machine's inputs unchanged.
"""

from __future__ import annotations

#: The kinds of reasons to leave a gateway.
PROBES = "probes_unanswered"  # the health probes through the tunnel
TUNNEL = "tunnel_lost"  # the tunnel (its process or device) went away
ROUTE = "route_lost"  # the mesh no longer routes to the gateway
UNAVAILABLE = "gateway_unavailable"  # its signed offer says so
LEASE = "lease_lost"  # it no longer knows our lease
SWITCH = "switch"  # a better gateway, or the policy moved us
OTHER = "other"

KINDS = (PROBES, TUNNEL, ROUTE, UNAVAILABLE, LEASE, SWITCH, OTHER)

#: The words of an UNAVAILABLE reason, whoever noticed it (the offer
#: watch, a rescan).
SAYS_UNAVAILABLE = "the gateway says it is unavailable"


class Reason(str):
    """
    Text with a C{kind} (one of L{KINDS}); anywhere else it is plain text.
    """

    kind: str

    def __new__(cls, kind: str, text: str) -> "Reason":
        if kind not in KINDS:
            raise ValueError(f"unknown kind of reason {kind!r}")
        reason = super().__new__(cls, text)
        reason.kind = kind
        return reason


def kindOf(reason, default: str = OTHER) -> str:
    "The kind of C{reason}: its own if it is a L{Reason}, else C{default}."
    return getattr(reason, "kind", default)
