# -*- test-case-name: tests.unit.test_daemonlog -*-
"""
The daemons' C{[log] level}: what twistd's log observer writes, and a
level that can change while the daemon runs (a config reload calls
L{LevelFilter.setLevel}).

twistd has no log-level option, and a tap's C{makeService} runs before
twistd begins logging.  Its C{AppLogger.start} does take an
L{ILogObserver} component from the application, though: L{Levelled}, the
service a tap hands twistd, gives the application one as twistd makes it
its parent.  That observer writes where twistd would have written
(C{--logfile}, C{--syslog}, stdout with C{--nodaemon}), through a
L{FilteringLogObserver} holding the L{LevelFilter}.
"""

from __future__ import annotations

import signal
import sys

from twisted.application.service import MultiService
from twisted.logger import (
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LegacyLogObserverWrapper,
    LogLevel,
    PredicateResult,
    textFileLogObserver,
)
from twisted.python.components import Componentized
from twisted.python.logfile import LogFile
from zope.interface import implementer

from mnigs.daemon.config import Field, oneOf

LEVELS = ("debug", "info", "warn", "error")

# The [log] section, the same in both daemons' files.
SCHEMA = {
    "level": Field(str, "info", oneOf(*LEVELS)),
}


@implementer(ILogFilterPredicate)
class LevelFilter:
    """
    Lets through events at C{level} or above.  Events without a level
    (none that twisted.logger makes) pass: a daemon's log should not lose
    a line because of how it was made.
    """

    def __init__(self, level: str = "info") -> None:
        self.setLevel(level)

    def setLevel(self, level: str) -> None:
        """
        From now on, let through C{level} ("debug", "info", "warn",
        "error") and above.
        """
        if level not in LEVELS:
            raise ValueError(f"unknown log level {level!r} (known: {', '.join(LEVELS)})")
        self.level = level
        self._threshold = LogLevel.levelWithName(level)

    def __call__(self, event: dict) -> PredicateResult:
        eventLevel = event.get("log_level")
        if eventLevel is not None and eventLevel < self._threshold:
            return PredicateResult.no
        return PredicateResult.maybe


def twistdDestination(twistdOptions) -> ILogObserver:
    """
    The observer twistd itself would make from its options (its
    C{UnixAppLogger}): syslog with C{--syslog}, stdout for C{--logfile=-}
    or C{--nodaemon} without a log file, else the log file (default
    C{twistd.log}), rotated on SIGUSR1 unless that signal is taken.
    """
    if twistdOptions.get("syslog"):
        from twisted.python import syslog

        return LegacyLogObserverWrapper(syslog.SyslogObserver(twistdOptions.get("prefix", "")).emit)
    name = twistdOptions.get("logfile") or ""
    nodaemon = twistdOptions.get("nodaemon", False)
    if name == "-" and not nodaemon:
        sys.exit("Daemons cannot log to stdout, exiting!")
    if name == "-" or (not name and nodaemon):
        return textFileLogObserver(sys.stdout)
    logFile = LogFile.fromFullPath(name or "twistd.log")
    if not signal.getsignal(signal.SIGUSR1):
        def rotate(signum, frame):
            from twisted.internet import reactor

            reactor.callFromThread(logFile.rotate)

        signal.signal(signal.SIGUSR1, rotate)
    return textFileLogObserver(logFile)


class Levelled(MultiService):
    """
    The daemon's service as twistd gets it from C{makeService}: made part
    of twistd's application, it gives the application C{observer} as its
    L{ILogObserver}, which twistd then logs to instead of making its own.
    C{levelFilter} is the level in force, for a config reload to change.
    """

    def __init__(self, service, observer: ILogObserver | None, levelFilter: LevelFilter) -> None:
        super().__init__()
        self.observer = observer
        self.levelFilter = levelFilter
        self.daemon = service
        service.setServiceParent(self)

    def setServiceParent(self, parent) -> None:
        if self.observer is not None and isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self.observer)
        super().setServiceParent(parent)


def levelled(service, tapOptions, levelFilter: LevelFilter) -> Levelled:
    """
    Wrap a daemon's service so that twistd logs at C{levelFilter}'s level
    (the service keeps the filter, for a reload to change).  C{tapOptions}
    are the tap's options; their C{parent} is twistd's own (none when a
    test calls C{makeService} itself: then nothing is installed).  twistd's
    C{--logger} takes precedence over any application observer, and then
    no level applies.
    """
    twistdOptions = getattr(tapOptions, "parent", None)
    observer = None
    if twistdOptions is not None:
        observer = FilteringLogObserver(twistdDestination(twistdOptions), [levelFilter])
    return Levelled(service, observer, levelFilter)
