# -*- test-case-name: tests.unit.test_reload -*-
"""
SIGHUP (C{systemctl reload}): read the config file again and apply what
may change while the daemon runs.  A file that does not load, or that
changes anything else, is refused as a whole with a log line naming the
file and each key, and the running configuration stays in force.

L{changedKeys} and L{refusedKeys} are pure; L{Reloader} does the reading
and logging; L{handleSIGHUP} ties it to the signal.
"""

from __future__ import annotations

import signal
from typing import Callable, Iterable

from twisted.logger import Logger

from mnigs.daemon.config import ConfigError

log = Logger()


def changedKeys(old, new, prefix: str = "") -> list[str]:
    """
    The dotted keys whose values differ between two read configs (a key
    only one of them has counts as changed), sorted.
    """
    changed = []
    for name in sorted(set(old) | set(new)):
        key = f"{prefix}.{name}" if prefix else name
        if name not in old or name not in new:
            changed.append(key)
        elif isinstance(old[name], dict) and isinstance(new[name], dict):
            changed.extend(changedKeys(old[name], new[name], key))
        elif old[name] != new[name]:
            changed.append(key)
    return changed


def refusedKeys(changed: Iterable[str], live: Iterable[str]) -> list[str]:
    """
    The keys in C{changed} that are not under one of the C{live} keys or
    sections (C{"terms"} covers C{"terms.fee.amount"}).
    """
    live = tuple(live)
    return [key for key in changed
            if not any(key == prefix or key.startswith(prefix + ".") for prefix in live)]


class Reloader:
    """
    @param load: reads the file into a config (raises L{ConfigError}).
    @param current: the config in force now.
    @param apply: C{apply(new, changedKeys)} puts an accepted config in
        force.
    @param live: the keys and sections that may change while running.
    """

    def __init__(self, path: str, load: Callable, current: Callable, apply: Callable,
                 live: Iterable[str]):
        self.path = path
        self.load = load
        self.current = current
        self.apply = apply
        self.live = tuple(live)

    def reload(self) -> bool:
        """
        Returns whether the file is now in force.
        """
        try:
            new = self.load(self.path)
        except ConfigError as e:
            log.error("reload refused: {error}; the running configuration stays",
                      error=str(e))
            return False
        changed = changedKeys(self.current(), new)
        if not changed:
            log.info("reload: {path} has no changes", path=self.path)
            return True
        refused = refusedKeys(changed, self.live)
        for key in refused:
            log.error("reload refused: {path}: {key} cannot change while running "
                      "(restart to apply it); the running configuration stays",
                      path=self.path, key=key)
        if refused:
            return False
        self.apply(new, changed)
        log.info("reloaded {path}: {keys}", path=self.path, keys=", ".join(changed))
        return True


def handleSIGHUP(reactor, callback: Callable[[], object]) -> Callable[[], None]:
    """
    Call C{callback} in the reactor thread on each SIGHUP (which would
    otherwise end the process).  Returns what puts the previous handler
    back.
    """
    def handler(signum, frame):
        reactor.callFromThread(callback)

    previous = signal.signal(signal.SIGHUP, handler)
    return lambda: signal.signal(signal.SIGHUP, previous)
