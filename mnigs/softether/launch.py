# -*- test-case-name: tests.unit.test_softether -*-
"""
Start a SoftEther daemon in a mount namespace of its own::

    python -m mnigs.softether.launch ROOT PROGRAM [ARGUMENT...]

SoftEther's state, log and pid directories are compiled in
(L{mnigs.softether.COMPILED_PATHS}), so two instances on one machine would
share them.  This launcher makes a private mount namespace (unshare
CLONE_NEWNS, then every mount private so nothing propagates back), bind
mounts C{ROOT/lib}, C{ROOT/log} and C{ROOT/run} over them, takes DNS away
from the daemon (below), asks the kernel
to kill the daemon when the process that started it dies
(PR_SET_PDEATHSIG: a SoftEther daemon never outlives its mnigs), and execs
C{PROGRAM} with the arguments as given.  No shell anywhere.

Why SIGKILL and not SIGTERM: TERM does not always end a SoftEther daemon.
They handle it by setting a flag that their main thread waits for in
pause(), and the kernel may hand a process-directed signal to any of their
threads.  Seen here: a vpnclient sent TERM 0.2 s after it started was
still running after a second TERM, 10 s later.  Nothing of value is lost
with KILL: mnigs reconfigures a vpnserver from its lease book when it
starts one, and a vpnclient's directory is thrown away.

No DNS: a copy of /etc/nsswitch.conf with C{hosts: files} is bound over
the real one.  mnigs gives SoftEther only address literals, and what a
vpnserver looks names up for is phoning home (dynamic DNS and NAT
traversal through softether.net, keep-alive pings, update checks), which
mnigs switches off.  Where DNS is a black hole (the namespace tests) those
lookups also held a fresh vpnserver's in-process restart for 18 s.

Python 3.11 has no C{os.unshare} (3.12 does): on 3.11 the calls go
through libc with ctypes.  Needs CAP_SYS_ADMIN (root).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

from mnigs.softether import COMPILED_PATHS

CLONE_NEWNS = 0x00020000
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1
NSSWITCH = "/etc/nsswitch.conf"


class LaunchError(Exception):
    pass


def _libc():
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                           ctypes.c_ulong, ctypes.c_void_p]
    libc.unshare.argtypes = [ctypes.c_int]
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                           ctypes.c_ulong]
    return libc


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise LaunchError(f"{what}: {os.strerror(errno)} (errno {errno})")


def unshareMounts(libc) -> None:
    if hasattr(os, "unshare"):  # Python 3.12+
        os.unshare(CLONE_NEWNS)
    else:
        _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    # The new namespace starts as a copy whose mounts may be "shared" with
    # the old one (systemd makes / shared): make everything private first,
    # or our bind mounts would appear in the parent namespace.
    _check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None),
           "making / private (mount --make-rprivate /)")


def bindDirectories(libc, root: str) -> None:
    for name, target in sorted(COMPILED_PATHS.items()):
        source = os.path.join(root, name)
        os.makedirs(source, mode=0o700, exist_ok=True)
        # The mount point itself has to exist on the real file system.
        os.makedirs(target, mode=0o755, exist_ok=True)
        _check(libc.mount(os.fsencode(source), os.fsencode(target), None, MS_BIND, None),
               f"bind mount {source} on {target}")


def withoutDNS(text: str) -> str:
    """
    C{nsswitch.conf} C{text} with host names from files only.
    """
    lines = [line for line in text.splitlines() if not line.split(":")[0].strip() == "hosts"]
    return "\n".join(lines + ["hosts: files"]) + "\n"


def bindNoDNS(libc, root: str) -> None:
    try:
        with open(NSSWITCH) as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    etc = os.path.join(root, "etc")
    os.makedirs(etc, mode=0o700, exist_ok=True)
    path = os.path.join(etc, "nsswitch.conf")
    with open(path, "w") as f:
        f.write(withoutDNS(text))
    if not os.path.exists(NSSWITCH):
        with open(NSSWITCH, "a"):
            pass  # a mount point; glibc's defaults without it would use DNS
    _check(libc.mount(os.fsencode(path), os.fsencode(NSSWITCH), None, MS_BIND, None),
           f"bind mount {path} on {NSSWITCH}")


def dieWithParent(libc, parent: int) -> None:
    _check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:
        # The parent died before the request took effect.
        raise LaunchError("the process that launched us is gone")


def launchArgv(python: str, root: str, program: str, *arguments: str) -> list[str]:
    """
    The argument list that runs C{program} through this launcher.
    """
    for value in (python, root, program):
        if not os.path.isabs(value):
            raise ValueError(f"{value!r} must be an absolute path")
    return [python, "-m", "mnigs.softether.launch", root, program, *arguments]


def main(argv: list[str]) -> int:
    if len(argv) < 2 or not os.path.isabs(argv[0]) or not os.path.isabs(argv[1]):
        sys.stderr.write("usage: python -m mnigs.softether.launch ROOT PROGRAM [ARGUMENT...]\n")
        return 2
    root, program, *arguments = argv
    parent = os.getppid()
    try:
        libc = _libc()
        unshareMounts(libc)
        bindDirectories(libc, root)
        bindNoDNS(libc, root)
        dieWithParent(libc, parent)
        os.execv(program, [program, *arguments])
    except (LaunchError, OSError) as e:
        sys.stderr.write(f"mnigs.softether.launch: {e}\n")
        return 1
    return 1  # not reached: execv does not return


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
