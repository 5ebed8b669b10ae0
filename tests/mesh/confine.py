"""
Running a daemon under the restrictions of its systemd unit without
systemd (these machines have none running): the restrictions are read from
the unit file in C{etc/systemd/}, never copied into the tests.

What is reproduced, and how:
  - C{CapabilityBoundingSet=}: C{setpriv --bounding-set}; as root the
    daemon then gets exactly that set as permitted and effective
    capabilities, as a root service does under systemd; no inheritable or
    ambient ones (the units set no C{AmbientCapabilities=}).
  - C{NoNewPrivileges=}: C{setpriv --no-new-privs}.
  - C{UMask=}: the umask the daemon is started with.
  - C{SystemCallFilter=} (an allow list of names and C{@groups}, expanded
    with C{systemd-analyze syscall-filter}), C{SystemCallErrorNumber=},
    C{SystemCallArchitectures=native} and C{RestrictAddressFamilies=} (an
    allow list): a seccomp filter (L{tests.mesh.seccompexec}).
Not reproduced: the mount namespace (C{ProtectSystem=}, C{PrivateTmp=},
C{ProtectHome=}...), the device cgroup and C{RestrictNamespaces=}.
"""

import errno
import os
import socket
import subprocess
import sys
from dataclasses import dataclass

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNITS = os.path.join(TOP, "etc", "systemd")

# Linux capability numbers (linux/capability.h): the index is the bit.
CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE")


def unitPath(name):
    return os.path.join(UNITS, name)


def readSection(path, section="Service"):
    """
    The C{KEY=VALUE} lines of one section of a unit file and its drop-ins
    (C{PATH.d/*.conf}, in name order), as C{KEY -> [VALUE, ...]} in file
    order.  Enough of systemd's syntax for our units: comments, blank
    lines, backslash continuations.
    """
    files = [path]
    dropins = path + ".d"
    if os.path.isdir(dropins):
        files += [os.path.join(dropins, n) for n in sorted(os.listdir(dropins))
                  if n.endswith(".conf")]
    entries = {}
    for name in files:
        with open(name) as f:
            text = f.read().replace("\\\n", " ")
        current = None
        for line in text.splitlines():
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                current = line.strip("[]")
            elif current == section:
                key, _, value = line.partition("=")
                entries.setdefault(key.strip(), []).append(value.strip())
    return entries


def _words(values):
    return [word for value in values for word in value.split()]


def _yes(values):
    return bool(values) and values[-1].lower() in ("yes", "true", "on", "1")


def syscallGroups():
    """
    systemd's system call groups, C{@name -> [member, ...]} (members may be
    groups), as C{systemd-analyze syscall-filter} lists them.
    """
    output = subprocess.run(["systemd-analyze", "syscall-filter"], check=True,
                            capture_output=True, text=True).stdout
    groups, current = {}, None
    for line in output.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif line.strip() and not line.strip().startswith("#") and current is not None:
            current.append(line.strip())
    return groups


def expandSyscalls(names, groups):
    found, pending = set(), list(names)
    while pending:
        name = pending.pop()
        if name.startswith("@"):
            pending.extend(groups[name])
        else:
            found.add(name)
    return found


@dataclass
class UnitRestrictions:
    capabilities: list  # e.g. ["CAP_NET_ADMIN", ...]
    noNewPrivileges: bool
    umask: int
    syscallFilter: list  # names and @groups, an allow list
    syscallErrno: int
    nativeOnly: bool
    addressFamilies: list  # e.g. ["AF_UNIX", ...], an allow list

    @classmethod
    def fromUnit(cls, path):
        entries = readSection(path)
        for key in ("CapabilityBoundingSet", "SystemCallFilter", "RestrictAddressFamilies"):
            if any(word.startswith("~") for word in _words(entries.get(key, []))):
                raise ValueError(f"{path}: {key}: deny lists are not reproduced here")
        errnoName = (entries.get("SystemCallErrorNumber") or ["EPERM"])[-1]
        return cls(capabilities=_words(entries.get("CapabilityBoundingSet", [])),
                   noNewPrivileges=_yes(entries.get("NoNewPrivileges")),
                   umask=int((entries.get("UMask") or ["0022"])[-1], 8),
                   syscallFilter=_words(entries.get("SystemCallFilter", [])),
                   syscallErrno=getattr(errno, errnoName),
                   nativeOnly=(entries.get("SystemCallArchitectures") or [""])[-1] == "native",
                   addressFamilies=_words(entries.get("RestrictAddressFamilies", [])))

    def capabilityMask(self):
        """The capability set as the bit mask /proc/PID/status shows."""
        return sum(1 << CAPABILITIES.index(name.upper()) for name in self.capabilities)

    def wrapper(self):
        """
        The argv prefix that runs a program under these restrictions
        (all but the umask: see L{umask}).
        """
        if not self.nativeOnly or not self.syscallFilter or not self.addressFamilies:
            raise ValueError("the units are expected to filter system calls and address families")
        bounding = ",".join(["-all"] + ["+" + c.lower().removeprefix("cap_")
                                        for c in self.capabilities])
        argv = ["setpriv", "--bounding-set", bounding, "--inh-caps", "-all",
                "--ambient-caps", "-all"]
        if self.noNewPrivileges:
            argv.append("--no-new-privs")
        syscalls = sorted(expandSyscalls(self.syscallFilter, syscallGroups()))
        families = [str(int(getattr(socket, name))) for name in self.addressFamilies]
        return argv + ["--", sys.executable, "-m", "tests.mesh.seccompexec",
                       str(self.syscallErrno), ",".join(syscalls), ",".join(families)]
