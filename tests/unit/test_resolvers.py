"""
The resolvers a lease names, from the gateway's config to the system's
resolver configuration: the protocol's check (hostile values), the
server's C{dns} keys with C{"tunnel"}, and each backend of
L{mnigs.system.resolvers}.  systemd-resolved and resolvconf cannot run
here (no systemd as PID 1; installing resolvconf would rewrite this
machine's own /etc/resolv.conf): their argument vectors are checked
against a recording runner instead.  The file backend works on a real
file in a temporary directory.
"""

import errno
import os
import stat

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mnigs.interfaces import IResolverBackend
from mnigs.methods import TUNNEL_RESOLVER, _resolvers, resolversFor
from mnigs.protocol import MAX_RESOLVERS, checkResolvers
from mnigs.system import resolvers
from mnigs.system.resolvers import (
    ResolvedLink,
    Resolvconf,
    ResolverHook,
    ResolvFile,
    checkRecord,
    detectMode,
    makeBackend,
    renderResolvConf,
)


class CheckResolversTests(SynchronousTestCase):
    def test_addressesAreNormalised(self):
        self.assertEqual(checkResolvers(["198.51.100.7", "2001:DB8::0:1"]),
                         ("198.51.100.7", "2001:db8::1"))
        self.assertEqual(checkResolvers([]), ())

    def test_hostileValuesAreRefused(self):
        hostile = [
            "not a list",
            {"a": 1},
            [1],
            [None],
            ["dns.example"],
            ["198.51.100.7\nnameserver 203.0.113.66"],
            ["198.51.100.7; rm -rf /"],
            ["-x"],
            ["127.0.0.53"],
            ["::1"],
            ["0.0.0.0"],
            ["::"],
            ["224.0.0.251"],
            ["ff02::fb"],
            ["169.254.1.1"],
            ["fe80::1"],
            ["fe80::1%eth0"],
            ["2001:db8::1%eth0"],
            ["::ffff:198.51.100.7"],
            ["240.0.0.1"],
            ["198.51.100.7", "198.51.100.7"],
            ["1" * 1000],
            [f"198.51.100.{n}" for n in range(MAX_RESOLVERS + 1)],
        ]
        for value in hostile:
            with self.assertRaises(ValueError, msg=repr(value)[:80]) as caught:
                checkResolvers(value)
            self.assertLess(len(str(caught.exception)), 200)
            self.assertNotIn("\n", str(caught.exception))

    def test_theMostAllowedPass(self):
        self.assertEqual(len(checkResolvers([f"198.51.100.{n}" for n in range(MAX_RESOLVERS)])),
                         MAX_RESOLVERS)


class ServerResolversTests(SynchronousTestCase):
    def test_tunnelStandsForTheGatewayAddress(self):
        configured = _resolvers(["tunnel", "198.51.100.7"])
        self.assertEqual(configured, [TUNNEL_RESOLVER, "198.51.100.7"])
        self.assertEqual(resolversFor(configured, "100.64.0.1"), ["100.64.0.1", "198.51.100.7"])
        self.assertEqual(resolversFor([], "100.64.0.1"), [])

    def test_aGatewayAddressListedTwiceIsNamedOnce(self):
        self.assertEqual(resolversFor(["100.64.0.1", "tunnel"], "100.64.0.1"), ["100.64.0.1"])

    def test_theServerRefusesWhatClientsWould(self):
        for value in (["127.0.0.1"], ["tunnel", "tunnel"], ["dns.example"],
                      ["198.51.100.1"] * 2, [f"198.51.100.{n}" for n in range(9)]):
            self.assertRaises(ValueError, _resolvers, value)

    def test_leasesOfEveryMethodCarryThem(self):
        from mnigs.methods.forward import ForwardGateway

        class Netlink:
            def connectedInterface(self, address):
                return "m0"

            def isEthernet(self, interface):
                return False

            def addresses(self, interface):
                import ipaddress
                return [ipaddress.ip_interface("10.99.0.1/24")]

        class Lease:
            clientHost = "10.99.0.2"
            origin = None

        gateway = ForwardGateway(None, Netlink(), dns=["tunnel", "198.51.100.7"])
        config = gateway.allocate(Lease(), [], "10.251.0.1")
        self.assertEqual(config["dns"], ["10.99.0.1", "198.51.100.7"])


class Runner:
    "Records each argv (and stdin); C{fail} names argv[1] words that fail."

    def __init__(self, fail=()):
        self.calls = []
        self.fail = set(fail)

    def __call__(self, argv, stdin=b""):
        self.calls.append((list(argv), stdin))
        if argv[1] in self.fail:
            return defer.fail(resolvers.CommandFailed(argv, _Result()))
        return defer.succeed(None)


class _Result:
    exitCode = 1
    stdout = b""
    stderr = b"Failed to resolve interface \"mnigs-c0\": No such device"


class CommandBackendTests(SynchronousTestCase):
    def test_resolvedSetsTheLinkAndRevertsIt(self):
        run = Runner()
        backend = ResolvedLink(run, "/usr/bin/resolvectl")
        verifyObject(IResolverBackend, backend)
        self.assertTrue(backend.needsOwnDevice)
        record = backend.plan("mnigs-c0", ["198.51.100.7", "2001:db8::53"], None)
        self.successResultOf(backend.put(record, None))
        self.successResultOf(backend.undo(record))
        self.assertEqual([argv for argv, _ in run.calls], [
            ["/usr/bin/resolvectl", "dns", "mnigs-c0", "198.51.100.7", "2001:db8::53"],
            ["/usr/bin/resolvectl", "domain", "mnigs-c0", "~."],
            ["/usr/bin/resolvectl", "revert", "mnigs-c0"],
        ])

    def test_resolvedOnANewDeviceRevertsTheOldOneAfter(self):
        run = Runner()
        backend = ResolvedLink(run)
        old = backend.plan("mnigs-c0", ["198.51.100.7"], None)
        new = backend.plan("mnigs-ovpnc0", ["198.51.100.8"], old)
        self.successResultOf(backend.put(new, old))
        self.assertEqual([argv[1:] for argv, _ in run.calls], [
            ["dns", "mnigs-ovpnc0", "198.51.100.8"], ["domain", "mnigs-ovpnc0", "~."],
            ["revert", "mnigs-c0"]])

    def test_resolvedRevertOfAGoneLinkIsNoError(self):
        backend = ResolvedLink(Runner(fail={"revert"}))
        self.successResultOf(backend.undo(backend.plan("mnigs-c0", ["198.51.100.7"], None)))

    def test_resolvconfRecordOnStdin(self):
        run = Runner()
        backend = Resolvconf(run, "/sbin/resolvconf")
        verifyObject(IResolverBackend, backend)
        record = backend.plan("mnigs-c0", ["198.51.100.7", "198.51.100.8"], None)
        self.successResultOf(backend.put(record, None))
        moved = backend.plan("m0", ["198.51.100.9"], record)
        self.successResultOf(backend.put(moved, record))
        self.successResultOf(backend.undo(moved))
        self.assertEqual(run.calls, [
            (["/sbin/resolvconf", "-a", "mnigs-c0.mnigs"],
             b"nameserver 198.51.100.7\nnameserver 198.51.100.8\n"),
            (["/sbin/resolvconf", "-a", "m0.mnigs"], b"nameserver 198.51.100.9\n"),
            (["/sbin/resolvconf", "-d", "mnigs-c0.mnigs", "-f"], b""),
            (["/sbin/resolvconf", "-d", "m0.mnigs", "-f"], b""),
        ])

    def test_hookGetsAnArgumentVector(self):
        run = Runner()
        backend = ResolverHook(run, "/usr/local/bin/dns-hook")
        verifyObject(IResolverBackend, backend)
        record = backend.plan("mnigs-c0", ["198.51.100.7"], None)
        self.successResultOf(backend.put(record, None))
        again = backend.plan("mnigs-c0", ["198.51.100.8", "198.51.100.9"], record)
        self.successResultOf(backend.put(again, record))
        self.successResultOf(backend.undo(again))
        self.assertEqual([argv for argv, _ in run.calls], [
            ["/usr/local/bin/dns-hook", "apply", "mnigs-c0", "198.51.100.7"],
            ["/usr/local/bin/dns-hook", "apply", "mnigs-c0", "198.51.100.8", "198.51.100.9"],
            ["/usr/local/bin/dns-hook", "restore", "mnigs-c0"],
        ])

    def test_aFailingHookFails(self):
        backend = ResolverHook(Runner(fail={"apply"}), "/usr/local/bin/dns-hook")
        record = backend.plan("d0", ["198.51.100.7"], None)
        failure = self.failureResultOf(backend.put(record, None))
        self.assertIn("exited with status 1", failure.getErrorMessage())

    def test_plansRefuseWhatDoesNotBelongOnACommandLine(self):
        for backend in (ResolvedLink(Runner()), Resolvconf(Runner()), ResolverHook(Runner(), "/h")):
            self.assertRaises(ValueError, backend.plan, "-rf", ["198.51.100.7"], None)
            self.assertRaises(ValueError, backend.plan, "d0", ["--help"], None)

    def test_autoPrefersResolvedThenResolvconf(self):
        def finder(*names):
            return lambda name: f"/usr/bin/{name}" if name in names else None

        running = lambda path: path == resolvers.RESOLVED_SOCKET  # noqa: E731
        self.assertEqual(detectMode(running, finder("resolvectl", "resolvconf")), "resolved")
        self.assertEqual(detectMode(lambda path: False, finder("resolvectl", "resolvconf")),
                         "resolvconf")
        self.assertEqual(detectMode(running, finder("resolvconf")), "resolvconf")
        self.assertIsNone(detectMode(lambda path: False, finder()))

    def test_makeBackend(self):
        find = lambda name: f"/x/{name}"  # noqa: E731
        self.assertEqual(makeBackend("resolved", None, find=find).command, "/x/resolvectl")
        self.assertEqual(makeBackend("resolvconf", None, find=find).command, "/x/resolvconf")
        self.assertEqual(makeBackend("file", None, file="/tmp/r").path, "/tmp/r")
        self.assertEqual(makeBackend("hook", None, hook="/h").command, "/h")
        self.assertRaises(ValueError, makeBackend, "off", None)


ORIGINAL = b"# from DHCP\nnameserver 10.99.0.1\nsearch lan\noptions edns0 ndots:2\n"


class FileBackendTests(SynchronousTestCase):
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "resolv.conf")
        self.backend = ResolvFile(self.path)

    def write(self, data, mode=0o644):
        with open(self.path, "wb") as f:
            f.write(data)
        os.chmod(self.path, mode)

    def state(self):
        info = os.lstat(self.path)
        with open(self.path, "rb") as f:
            return f.read(), stat.S_IMODE(info.st_mode)

    def apply(self, servers, previous=None, device="mnigs-c0"):
        record = checkRecord(self.backend.plan(device, servers, previous))
        self.successResultOf(self.backend.put(record, previous))
        return record

    def test_replacedThenRestoredByteForByte(self):
        verifyObject(IResolverBackend, self.backend)
        self.write(ORIGINAL, 0o640)
        record = self.apply(["198.51.100.7", "2001:db8::53"])
        data, mode = self.state()
        self.assertEqual(data.decode().splitlines()[2:], [
            "nameserver 198.51.100.7", "nameserver 2001:db8::53", "search lan",
            "options edns0 ndots:2"])
        self.assertEqual(mode, 0o640)
        self.successResultOf(self.backend.undo(record))
        self.assertEqual(self.state(), (ORIGINAL, 0o640))
        self.assertEqual(os.listdir(self.dir), ["resolv.conf"])

    def test_aFailoverKeepsTheFirstOriginal(self):
        self.write(ORIGINAL)
        first = self.apply(["198.51.100.7"])
        second = self.apply(["198.51.100.8"], first)
        self.assertIn(b"nameserver 198.51.100.8\n", self.state()[0])
        self.assertNotIn(b"198.51.100.7", self.state()[0])
        self.successResultOf(self.backend.undo(second))
        self.assertEqual(self.state(), (ORIGINAL, 0o644))

    def test_onlyTheFirstThreeServersAreWritten(self):
        self.write(ORIGINAL)
        self.apply([f"198.51.100.{n}" for n in range(1, 6)])
        self.assertEqual(self.state()[0].count(b"nameserver"), 3)

    def test_aSymlinkComesBackAsTheSymlink(self):
        os.symlink("/run/resolvconf/resolv.conf", self.path)
        record = self.apply(["198.51.100.7"])
        self.assertFalse(os.path.islink(self.path))
        self.successResultOf(self.backend.undo(record))
        self.assertEqual(os.readlink(self.path), "/run/resolvconf/resolv.conf")

    def test_anAbsentFileIsAbsentAgain(self):
        record = self.apply(["198.51.100.7"])
        self.assertTrue(os.path.exists(self.path))
        self.successResultOf(self.backend.undo(record))
        self.assertFalse(os.path.lexists(self.path))

    def test_aFileRewrittenMeanwhileIsLeftAlone(self):
        self.write(ORIGINAL)
        record = self.apply(["198.51.100.7"])
        self.write(b"nameserver 10.0.0.1\n")
        self.successResultOf(self.backend.undo(record))
        self.assertEqual(self.state()[0], b"nameserver 10.0.0.1\n")

    def test_undoingTwiceIsHarmless(self):
        # A crash after the original came back, before the record went.
        self.write(ORIGINAL)
        record = self.apply(["198.51.100.7"])
        self.successResultOf(self.backend.undo(record))
        self.successResultOf(self.backend.undo(record))
        self.assertEqual(self.state(), (ORIGINAL, 0o644))

    def test_aMountPointIsRewrittenInPlace(self):
        # A bind-mounted resolv.conf (containers, ip netns exec) cannot be
        # renamed over: EBUSY.  The same inode is then rewritten.
        self.write(ORIGINAL, 0o600)
        inode = os.stat(self.path).st_ino
        realReplace = os.replace

        def busy(src, dst):
            if dst == self.path:
                raise OSError(errno.EBUSY, "Device or resource busy")
            return realReplace(src, dst)

        self.patch(os, "replace", busy)
        record = self.apply(["198.51.100.7"])
        self.assertEqual(os.stat(self.path).st_ino, inode)
        self.assertIn(b"nameserver 198.51.100.7", self.state()[0])
        self.successResultOf(self.backend.undo(record))
        self.assertEqual(self.state(), (ORIGINAL, 0o600))
        self.assertEqual(os.stat(self.path).st_ino, inode)
        self.assertEqual(os.listdir(self.dir), ["resolv.conf"])

    def test_renderKeepsOnlyLocalSettings(self):
        original = {"kind": "file", "data": "bmFtZXNlcnZlciAxLjEuMS4xCnNvcnRsaXN0IDEwLjAuMC4wCg==",
                    "mode": 0o644, "uid": 0, "gid": 0}
        self.assertEqual(renderResolvConf("d0", ["198.51.100.7"], original).splitlines()[2:],
                         [b"nameserver 198.51.100.7"])


class CheckRecordTests(SynchronousTestCase):
    def test_recordsFromDiskAreCheckedAgain(self):
        good = {"mode": "hook", "device": "mnigs-c0", "servers": ["198.51.100.7"], "hook": "/h"}
        self.assertEqual(checkRecord(good), good)
        for bad in ({}, [], dict(good, mode="shell"), dict(good, device="-rf"),
                    dict(good, device="a b"), dict(good, servers=["x; y"]),
                    dict(good, hook="relative"),
                    {"mode": "resolvconf", "device": "d0", "servers": [], "name": "other.mnigs"},
                    {"mode": "file", "device": "d0", "servers": [], "path": "/r", "written": "x",
                     "original": {"kind": "file", "data": "!!", "mode": 1, "uid": 0, "gid": 0}},
                    {"mode": "file", "device": "d0", "servers": [], "path": "/r", "written": "x",
                     "original": {"kind": "fifo"}}):
            self.assertRaises(ValueError, checkRecord, bad)
