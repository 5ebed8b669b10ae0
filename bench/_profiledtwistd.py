"""
twistd under cProfile, imports included, for bench/startup.py --profile:

    python bench/_profiledtwistd.py STATS-FILE TWISTD-ARGUMENTS...

The statistics are written when twistd ends.  twistd ends a run stopped by
a signal by sending that signal to itself again (so that its exit status
says so), which would kill the process before any C{finally} or C{atexit}:
that C{os.kill} writes the statistics first.
"""

import cProfile
import os
import sys

statsPath = sys.argv.pop(1)
profile = cProfile.Profile()
_kill = os.kill


def dumpThenKill(pid, signum):
    if pid == os.getpid():
        profile.disable()
        profile.dump_stats(statsPath)
    _kill(pid, signum)


os.kill = dumpThenKill
profile.enable()
from twisted.scripts.twistd import run  # noqa: E402

run()
profile.disable()
profile.dump_stats(statsPath)
