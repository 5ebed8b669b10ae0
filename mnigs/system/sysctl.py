"""
A sysctl that mnigs needs on (C{1}) while it runs: turned on by
L{SysctlSwitch.enable} if it is off, and put back by L{SysctlSwitch.restore}
only if this turned it on.  With C{marker} (a file in the state
directory), a run that crashed after turning it on is remembered: the next
run puts it back on stop.  The files are those of the network namespace
the daemon runs in (C{/proc/sys/net/...}).
"""

from __future__ import annotations

import os
from typing import Optional

from twisted.logger import Logger

log = Logger()


class SysctlSwitch:
    def __init__(self, path: str, what: str, marker: Optional[str] = None):
        self.path = path
        self.what = what
        self.marker = marker
        self.turnedOn = bool(marker and os.path.exists(marker))

    def _read(self) -> str:
        with open(self.path) as f:
            return f.read().strip()

    def _write(self, value: str) -> None:
        with open(self.path, "w") as f:
            f.write(value + "\n")

    def enable(self) -> None:
        if self._read() != "1":
            if self.marker:
                open(self.marker, "w").close()
            self._write("1")
            self.turnedOn = True
            log.info("{what} turned on (off again when mnigs stops)", what=self.what)

    def restore(self) -> None:
        if self.turnedOn:
            self._write("0")
            self.turnedOn = False
            if self.marker and os.path.exists(self.marker):
                os.unlink(self.marker)
            log.info("{what} turned off again", what=self.what)
