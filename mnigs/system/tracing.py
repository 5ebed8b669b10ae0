"""
Tracing an Automat machine's transitions (magic-wormhole's C{set_trace}):
what the client's L{mnigs.client.machine.Trace} and the gateway's metrics
listen with.
"""

from __future__ import annotations


def setTrace(machine, tracer) -> None:
    """
    Give a machine built by a C{TypeMachineBuilder} a tracer, called with
    (old state, input name, new state) as each input is taken.  The typed
    API has no public way to do this yet; its transitioner has.
    """
    machine.__automat_transitioner__.setTrace(tracer)
