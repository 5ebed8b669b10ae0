"""
Files in the state directory: written atomically (temp file, fsync,
rename, fsync of the directory), so a crash at any instant leaves the old or
the new contents; a file that cannot be read is moved aside, never lost.
"""

from __future__ import annotations

import json
import os
import time


class StateFileCorrupt(Exception):
    """
    A state file could not be read; it was moved to C{keptAs}.
    """

    def __init__(self, path: str, keptAs: str, reason: str):
        super().__init__(f"{path}: unreadable ({reason}); kept as {keptAs}")
        self.path = path
        self.keptAs = keptAs
        self.reason = reason


def atomicWrite(path: str, data: bytes, mode: int = 0o600) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dirfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def keepAside(path: str, clock=time.time) -> str:
    keptAs = f"{path}.corrupt-{int(clock())}"
    n = 0
    while os.path.exists(keptAs):
        n += 1
        keptAs = f"{path}.corrupt-{int(clock())}-{n}"
    os.replace(path, keptAs)
    return keptAs


def readJSON(path: str, default, validate=None, clock=time.time):
    """
    Read a JSON state file.  A missing file gives C{default}; a file that
    does not parse, or that C{validate} (a callable raising ValueError)
    refuses, is moved aside and L{StateFileCorrupt} is raised.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return default
    try:
        value = json.loads(raw)
        if validate is not None:
            validate(value)
    except (ValueError, TypeError, KeyError) as e:
        keptAs = keepAside(path, clock)
        raise StateFileCorrupt(path, keptAs, str(e) or type(e).__name__) from None
    return value


def writeJSON(path: str, value) -> None:
    atomicWrite(path, json.dumps(value, separators=(",", ":"), sort_keys=True).encode("utf-8"))


def ensureStateDir(path: str) -> str:
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path
