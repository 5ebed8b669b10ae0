"""
Exec a program under a seccomp filter built the way systemd builds one for
C{SystemCallFilter=} (an allow list), C{SystemCallErrorNumber=},
C{SystemCallArchitectures=native} and C{RestrictAddressFamilies=} (an
allow list), so that tests can run the daemons under their units' filters
without systemd::

    python -m tests.mesh.seccompexec ERRNO SYSCALL,... FAMILY,... PROGRAM [ARGUMENT...]

System calls not allowed fail with ERRNO; C{socket()} succeeds only for
the numbered address families (systemd answers other families with
EAFNOSUPPORT, this filter with ERRNO).  Names this architecture does not
know are skipped, as systemd skips them.  Needs no_new_privs (setpriv
--no-new-privs) or CAP_SYS_ADMIN; talks to libseccomp through ctypes.
"""

import ctypes
import ctypes.util
import os
import sys

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ = 4
NR_SCMP_ERROR = -1


def SCMP_ACT_ERRNO(errno):
    return 0x00050000 | (errno & 0xFFFF)


class ArgumentComparison(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


def libseccomp():
    name = ctypes.util.find_library("seccomp")
    if name is None:
        raise OSError("libseccomp is not installed")
    lib = ctypes.CDLL(name, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(ArgumentComparison)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    return lib


def _check(result, what):
    if result < 0:
        raise OSError(-result, f"{what}: {os.strerror(-result)}")


def loadFilter(errno, syscalls, families):
    lib = libseccomp()
    context = lib.seccomp_init(SCMP_ACT_ERRNO(errno))
    if not context:
        raise OSError("seccomp_init failed")
    socketNumber = lib.seccomp_syscall_resolve_name(b"socket")
    for name in syscalls:
        number = lib.seccomp_syscall_resolve_name(name.encode("ascii"))
        if number == NR_SCMP_ERROR or number == socketNumber:
            continue
        _check(lib.seccomp_rule_add_array(context, SCMP_ACT_ALLOW, number, 0, None),
               f"allowing {name}")
    if "socket" in syscalls:
        for family in families:
            comparison = ArgumentComparison(0, SCMP_CMP_EQ, family, 0)
            _check(lib.seccomp_rule_add_array(context, SCMP_ACT_ALLOW, socketNumber, 1,
                                              ctypes.byref(comparison)),
                   f"allowing socket() for family {family}")
    _check(lib.seccomp_load(context), "seccomp_load")


def main(argv):
    if len(argv) < 4:
        sys.stderr.write(__doc__)
        return 2
    errno, syscalls, families, *program = argv
    loadFilter(int(errno), [s for s in syscalls.split(",") if s],
               [int(f) for f in families.split(",") if f])
    os.execv(program[0], program)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
