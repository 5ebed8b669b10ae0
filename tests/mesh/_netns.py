"""
Small network-namespace fixtures for the wrapper tests (netlink, nft,
wireguard).  Deliberately independent of L{tests.mesh.harness}.

Setup runs synchronously with argument lists (no shell); every namespace is
registered for deletion before it is created.  Waiting is
L{tests.mesh.commands.waitFor}.
"""

import os
import secrets
import shutil
import signal
import subprocess

from twisted.logger import Logger

log = Logger()


def requireRoot(testcase, *binaries):
    """
    Skip (fail when $CI is set) unless we are root and C{binaries} exist.
    """
    missing = [b for b in ("ip",) + binaries if shutil.which(b) is None]
    reason = None
    if os.geteuid() != 0:
        reason = "needs root to create network namespaces"
    elif missing:
        reason = "needs " + ", ".join(missing) + " on PATH"
    if reason is not None:
        if os.environ.get("CI"):
            testcase.fail(reason)
        from twisted.trial.unittest import SkipTest
        raise SkipTest(reason)


def run(argv, **kw):
    return subprocess.run(argv, check=True, capture_output=True, timeout=30, **kw)


def nsrun(ns, argv, **kw):
    return run(["ip", "netns", "exec", ns] + list(argv), **kw)


def uniqueName(prefix, hexChars=8):
    return prefix + secrets.token_hex(hexChars // 2)


def makeNamespace(testcase):
    name = uniqueName("mnigs-")
    testcase.addCleanup(deleteNamespace, name)
    log.info("creating namespace {netns}", netns=name)
    run(["ip", "netns", "add", name])
    nsrun(name, ["ip", "link", "set", "lo", "up"])
    for knob in ("all", "default"):
        nsrun(name, ["sysctl", "-qw", f"net.ipv6.conf.{knob}.accept_dad=0"])
    return name


def namespacePids(name):
    result = subprocess.run(["ip", "netns", "pids", name], capture_output=True, timeout=30)
    return [int(p) for p in result.stdout.split()]


def deleteNamespace(name):
    """Kill what our test left running inside, then delete the namespace."""
    for pid in namespacePids(name):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def veth(nsA, nameA, addrA, nsB, nameB, addrB):
    """A veth pair from nsA to nsB, addressed and up."""
    run(["ip", "link", "add", nameA, "netns", nsA, "type", "veth", "peer", "name", nameB,
         "netns", nsB])
    for ns, name, addr in ((nsA, nameA, addrA), (nsB, nameB, addrB)):
        nsrun(ns, ["ip", "addr", "add", addr, "dev", name])
        nsrun(ns, ["ip", "link", "set", name, "up"])

