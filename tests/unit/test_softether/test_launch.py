"""
Tests for L{mnigs.softether.launch} with a recording libc and exec (the
real thing, which needs root, is in tests.mesh.test_softether).
"""

import os
import shutil
import signal
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from mnigs.softether import launch


class FakeLibc:
    def __init__(self, failing=()):
        self.calls = []
        self.failing = failing

    def unshare(self, flags):
        self.calls.append(("unshare", flags))
        return -1 if "unshare" in self.failing else 0

    def mount(self, source, target, fstype, flags, data):
        self.calls.append(("mount", source, target, flags))
        return -1 if "mount" in self.failing else 0

    def prctl(self, option, arg, *rest):
        self.calls.append(("prctl", option, arg))
        return 0


class LaunchTests(SynchronousTestCase):
    def setUp(self):
        self.top = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.top)
        self.paths = {name: os.path.join(self.top, "compiled", name) for name in
                      ("lib", "log", "run")}
        self.patch(launch, "COMPILED_PATHS", self.paths)
        self.nsswitch = os.path.join(self.top, "nsswitch.conf")
        with open(self.nsswitch, "w") as f:
            f.write("passwd: files systemd\nhosts:          files dns\nnetworks: files\n")
        self.patch(launch, "NSSWITCH", self.nsswitch)
        self.libc = FakeLibc()
        self.patch(launch, "_libc", lambda: self.libc)
        if hasattr(os, "unshare"):  # Python 3.12+ would not go through libc
            self.patch(os, "unshare", lambda flags: self.libc.unshare(flags))
        self.execs = []
        self.patch(launch.os, "execv", lambda path, argv: self.execs.append((path, argv)))
        self.errors = []
        self.patch(launch.sys.stderr, "write", self.errors.append)

    def test_argv(self):
        self.assertEqual(launch.launchArgv("/py", "/state/root", "/usr/bin/x", "start", "--fg"),
                         ["/py", "-m", "mnigs.softether.launch", "/state/root", "/usr/bin/x",
                          "start", "--fg"])
        self.assertRaises(ValueError, launch.launchArgv, "py", "/r", "/x")
        self.assertRaises(ValueError, launch.launchArgv, "/py", "root", "/x")

    def test_privateMountsThenBindsThenDeathSignalThenExec(self):
        root = os.path.join(self.top, "root")
        launch.main([root, "/usr/bin/vpnserver", "start", "--foreground"])
        self.assertEqual(self.libc.calls, [
            ("unshare", launch.CLONE_NEWNS),
            ("mount", b"none", b"/", launch.MS_REC | launch.MS_PRIVATE),
            ("mount", os.fsencode(os.path.join(root, "lib")), os.fsencode(self.paths["lib"]),
             launch.MS_BIND),
            ("mount", os.fsencode(os.path.join(root, "log")), os.fsencode(self.paths["log"]),
             launch.MS_BIND),
            ("mount", os.fsencode(os.path.join(root, "run")), os.fsencode(self.paths["run"]),
             launch.MS_BIND),
            ("mount", os.fsencode(os.path.join(root, "etc", "nsswitch.conf")),
             os.fsencode(self.nsswitch), launch.MS_BIND),
            ("prctl", launch.PR_SET_PDEATHSIG, signal.SIGKILL),
        ])
        self.assertEqual(self.execs, [("/usr/bin/vpnserver",
                                       ["/usr/bin/vpnserver", "start", "--foreground"])])
        for name in ("lib", "log", "run"):
            self.assertEqual(os.stat(os.path.join(root, name)).st_mode & 0o777, 0o700)
            self.assertTrue(os.path.isdir(self.paths[name]))
        with open(os.path.join(root, "etc", "nsswitch.conf")) as f:
            self.assertEqual(f.read(), "passwd: files systemd\nnetworks: files\nhosts: files\n")

    def test_withoutDNSWhateverTheHostsLineWas(self):
        self.assertEqual(launch.withoutDNS(""), "hosts: files\n")
        self.assertEqual(launch.withoutDNS("hosts: dns files mdns4\n#hosts: x\n"),
                         "#hosts: x\nhosts: files\n")

    def test_aFailureStopsBeforeExecAndSaysWhat(self):
        self.libc.failing = ("mount",)
        self.assertEqual(launch.main([os.path.join(self.top, "root"), "/usr/bin/x"]), 1)
        self.assertEqual(self.execs, [])
        self.assertIn("making / private", "".join(self.errors))

    def test_usage(self):
        self.assertEqual(launch.main([]), 2)
        self.assertEqual(launch.main(["relative", "/x"]), 2)
        self.assertEqual(launch.main(["/root", "x"]), 2)
        self.assertEqual(self.libc.calls, [])
