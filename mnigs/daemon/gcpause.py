# -*- test-case-name: tests.unit.test_gcpause -*-
"""
Python's cyclic garbage collector paused while the client starts.

A start creates tens of thousands of objects that live as long as the
process (modules, classes, functions, Automat machines) and hardly any
garbage cycles; meanwhile the collector runs about fifty times, walking
more of them each time (some 20 to 60 ms of a start of about a second on
a busy 2-core machine; bench/startup.py).  Paused from C{makeService} on,
it is resumed L{START_SECONDS} later with everything alive at that moment
frozen (C{gc.freeze}): the collections that follow no longer walk what
the start built.  Reference counting frees everything else meanwhile.
"""

from __future__ import annotations

import gc

#: How long the collector stays paused: a start is online within a few
#: seconds, a slow one (a dead gateway first) within some more.
START_SECONDS = 10.0


def pauseWhileStarting(clock, seconds: float = START_SECONDS, collector=None):
    """
    Disable C{collector} (default: this module's C{gc}, which a test that
    calls a tap's C{makeService} with a fake reactor replaces) now and
    schedule on C{clock} its freeze and re-enabling C{seconds} from now;
    return that delayed call.  A collector already disabled (by whoever
    runs us) is left as it is: returns C{None}.
    """
    if collector is None:
        collector = gc
    if not collector.isenabled():
        return None
    collector.disable()

    def resume():
        collector.freeze()
        collector.enable()

    return clock.callLater(seconds, resume)
