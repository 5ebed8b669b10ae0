"""
Tests for L{mnigs.wireguard.device.WireGuardDevice}'s lifecycle without root: a
fake netlink, and a fake wireguard-go (a fake process whose "daemon" is a
real unix socket in a temporary directory answering like the UAPI).
"""

import os
import shutil
import tempfile

from pyroute2.netlink.exceptions import NetlinkError
from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mnigs.wireguard.device import (
    Choice,
    DeviceError,
    DeviceStopping,
    WireGuardDevice,
    chooseDevice,
)
from mnigs.wireguard.uapi import UAPIClient, WgToolClient, generatePrivateKey, keyToHex
from tests.mesh.commands import waitFor
from tests.unit.fakeprocess import FakeSpawner


class ChooseDeviceTests(SynchronousTestCase):
    """
    L{chooseDevice} over every combination of what can be found: no link,
    a kernel WireGuard link, a link of another kind; a control socket
    answering or not; each implementation asked for; kernel support or not.
    """

    KINDS = (None, "wireguard", "tun", "veth")
    IMPLEMENTATIONS = ("auto", "kernel", "userspace")

    @staticmethod
    def expected(kind, answers, implementation, kernel):
        """The rule written as a table, row by row."""
        if kind == "wireguard":
            return Choice.adoptKernel
        if kind is not None and answers:
            return Choice.adoptUserspace
        if kind is not None:
            return Choice.notWireGuard
        if answers:
            return Choice.takenElsewhere
        return {("auto", True): Choice.createKernel,
                ("auto", False): Choice.spawnUserspace,
                ("kernel", True): Choice.createKernel,
                ("kernel", False): Choice.createKernel,
                ("userspace", True): Choice.spawnUserspace,
                ("userspace", False): Choice.spawnUserspace}[implementation, kernel]

    def test_everyCombination(self):
        seen = set()
        for kind in self.KINDS:
            for answers in (False, True):
                for implementation in self.IMPLEMENTATIONS:
                    for kernel in (False, True):
                        asked = []

                        def kernelAvailable():
                            asked.append(True)
                            return kernel

                        case = (kind, answers, implementation, kernel)
                        choice = chooseDevice(kind, answers, implementation, kernelAvailable)
                        self.assertIs(choice, self.expected(*case), case)
                        seen.add(choice)
                        # Asking may load a kernel module: only when it decides.
                        self.assertEqual(bool(asked), kind is None and not answers
                                         and implementation == "auto", case)
        self.assertEqual(seen, set(Choice))

    def test_existingDeviceIsAdoptedWhateverWasAsked(self):
        for implementation in self.IMPLEMENTATIONS:
            self.assertIs(chooseDevice("wireguard", False, implementation, lambda: False),
                          Choice.adoptKernel)
            self.assertIs(chooseDevice("tun", True, implementation, lambda: True),
                          Choice.adoptUserspace)


class World:
    """What the fake kernel knows: links by name, and every call made."""

    def __init__(self):
        self.links = {}
        self.calls = []
        self.kernel = False


class FakeNetlink:
    def __init__(self, world, netns):
        self.world = world
        self.netns = netns

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def linkKind(self, name):
        return self.world.links.get(name)

    def addLink(self, name, kind):
        if kind == "wireguard" and not self.world.kernel:
            raise NetlinkError(95, "Operation not supported")
        self.world.links[name] = kind
        self.world.calls.append(("addLink", name, kind))

    def deleteLink(self, name):
        self.world.links.pop(name, None)
        self.world.calls.append(("deleteLink", name))

    def addAddress(self, name, address):
        self.world.calls.append(("addAddress", name, address))

    def setLinkUp(self, name):
        self.world.calls.append(("setLinkUp", name))


class UAPIAnswers(Protocol):
    def connectionMade(self):
        self.buffer = b""

    def dataReceived(self, data):
        self.buffer += data
        while b"\n\n" in self.buffer:
            request, self.buffer = self.buffer.split(b"\n\n", 1)
            self.factory.requests.append(request.decode())
            if request.startswith(b"get=1"):
                self.transport.write(b"listen_port=1234\nerrno=0\n\n")
            else:
                self.transport.write(b"errno=0\n\n")


class FakeWireGuardGo:
    """A UAPI socket plus a tun link, like one running wireguard-go."""

    def __init__(self, reactor, world, sockdir, ifname):
        self.factory = Factory.forProtocol(UAPIAnswers)
        self.factory.requests = []
        self.world, self.ifname = world, ifname
        world.links[ifname] = "tun"
        self.port = reactor.listenUNIX(os.path.join(sockdir, ifname + ".sock"), self.factory)

    def vanish(self):
        self.world.links.pop(self.ifname, None)
        return self.port.stopListening()


class DeviceTests(TestCase):
    timeout = 20

    def setUp(self):
        from twisted.internet import reactor
        self.reactor = reactor
        self.world = World()
        self.sockdir = tempfile.mkdtemp(prefix="mnigs-wgdev-")
        self.addCleanup(shutil.rmtree, self.sockdir)
        self.daemons = []
        self.spawner = FakeSpawner()
        self.spawner.hooks = []
        self.key = generatePrivateKey()

    def spawn(self, protocol, executable, args, env=None, childFDs=None):
        process = self.spawner(protocol, executable, args, env, childFDs)
        if "wireguard-go" in args:
            daemon = FakeWireGuardGo(self.reactor, self.world, self.sockdir, args[-1])
            self.daemons.append(daemon)
            self.addCleanup(daemon.vanish)
            realSignal = process.signalProcess

            def signalProcess(sig):
                realSignal(sig)
                daemon.vanish()
                self.reactor.callLater(0, process.end, 0, 15)

            process.signalProcess = signalProcess
        else:  # wg: succeeds at once
            self.reactor.callLater(0, process.end)
        return process

    def device(self, **kw):
        kw.setdefault("implementation", "userspace")
        device = WireGuardDevice(self.reactor, "mwunit", self.key, listenPort=51820,
                                 address="100.64.0.1/24", sockdir=self.sockdir,
                                 netlink=lambda netns: FakeNetlink(self.world, netns),
                                 spawn=self.spawn, logPath=os.path.join(self.sockdir, "log"),
                                 **kw)
        self.addCleanup(device.stop)
        return device

    @defer.inlineCallbacks
    def test_spawnsConfiguresAndStops(self):
        device = self.device(netns="mnigs-x")
        yield device.start()
        [call] = self.spawner.spawned
        self.assertEqual(call["args"], ["ip", "netns", "exec", "mnigs-x",
                                        "wireguard-go", "-f", "mwunit"])
        self.assertIsInstance(call["childFDs"][1], int)  # a file, not our pipe
        [daemon] = self.daemons
        self.assertIn(f"set=1\nprivate_key={keyToHex(self.key)}\nlisten_port=51820",
                      daemon.factory.requests)
        self.assertEqual(self.world.calls, [("addAddress", "mwunit", "100.64.0.1/24"),
                                            ("setLinkUp", "mwunit")])
        self.assertEqual(device.describe()["pid"], call["process"].pid)
        self.assertIsInstance(device.control, UAPIClient)
        yield device.stop()
        self.assertEqual(call["process"].signals, ["TERM"])
        self.assertEqual(self.world.calls[-1], ("deleteLink", "mwunit"))
        self.assertIsNone(device.describe()["pid"])

    @defer.inlineCallbacks
    def test_leaveKeepsDaemonAndLinkForTheNextStartToAdopt(self):
        device = self.device()
        yield device.start()
        [call] = self.spawner.spawned
        yield device.leave()
        self.assertEqual(call["process"].signals, [])
        self.assertNotIn(("deleteLink", "mwunit"), self.world.calls)
        # The next run finds it answering and adopts it without spawning.
        successor = self.device()
        yield successor.start()
        self.assertEqual(len(self.spawner.spawned), 1)
        self.assertTrue(successor.describe()["adopted"])

    @defer.inlineCallbacks
    def test_leaveWhileStartingTearsDown(self):
        device = self.device()
        d = device.start()
        left = device.leave()
        yield self.assertFailure(d, DeviceStopping)
        yield left
        self.assertIn(("deleteLink", "mwunit"), self.world.calls)

    @defer.inlineCallbacks
    def test_adoptsAnAnsweringDevice(self):
        old = FakeWireGuardGo(self.reactor, self.world, self.sockdir, "mwunit")
        self.addCleanup(old.vanish)
        device = self.device()
        yield device.start()
        self.assertEqual(self.spawner.spawned, [])
        self.assertTrue(device.describe()["adopted"])
        self.assertIn(f"set=1\nprivate_key={keyToHex(self.key)}\nlisten_port=51820",
                      old.factory.requests)
        stopping = device.stop()
        yield waitFor(self.reactor, lambda: ("deleteLink", "mwunit") in self.world.calls)
        yield old.vanish()  # the orphan goes once its link is deleted
        yield stopping

    @defer.inlineCallbacks
    def test_adoptedDaemonThatDiesIsReplaced(self):
        old = FakeWireGuardGo(self.reactor, self.world, self.sockdir, "mwunit")
        device = self.device(watchInterval=0.05)
        deaths, restored = [], defer.Deferred()
        device.onDeath(deaths.append)
        device.onRestored(lambda: restored.callback(None))
        yield device.start()
        yield old.vanish()
        yield restored
        self.assertEqual(len(deaths), 1)
        self.assertEqual(len(self.spawner.spawned), 1)
        self.assertFalse(device.describe()["adopted"])

    @defer.inlineCallbacks
    def test_relaunchedDaemonIsConfiguredAgain(self):
        device = self.device()
        deaths, restored = [], defer.Deferred()
        device.onDeath(deaths.append)
        device.onRestored(lambda: restored.callback(None))
        yield device.start()
        first = self.spawner.last
        yield self.daemons[0].vanish()
        first.end(0, 9)
        self.assertEqual(len(deaths), 1)
        yield restored
        self.assertEqual(len(self.spawner.spawned), 2)
        self.assertTrue(any(r.startswith("set=1\nprivate_key=")
                            for r in self.daemons[1].factory.requests))
        self.assertEqual(self.world.calls.count(("setLinkUp", "mwunit")), 2)

    @defer.inlineCallbacks
    def test_foreignLinkIsLeftAlone(self):
        self.world.links["mwunit"] = "veth"
        device = self.device()
        yield self.assertFailure(device.start(), DeviceError)
        yield device.stop()
        self.assertEqual(self.world.links, {"mwunit": "veth"})
        self.assertEqual(self.spawner.spawned, [])

    @defer.inlineCallbacks
    def test_nameTakenInAnotherNamespace(self):
        elsewhere = FakeWireGuardGo(self.reactor, self.world, self.sockdir, "mwunit")
        self.addCleanup(elsewhere.vanish)
        del self.world.links["mwunit"]
        device = self.device()
        error = yield self.assertFailure(device.start(), DeviceError)
        self.assertIn("taken elsewhere", str(error))
        self.assertEqual(self.spawner.spawned, [])

    @defer.inlineCallbacks
    def test_kernelWhenAvailable(self):
        self.world.kernel = True
        device = self.device(implementation="auto", netns="mnigs-x")
        yield device.start()
        self.assertEqual(self.world.links["mwunit"], "wireguard")
        self.assertIsInstance(device.control, WgToolClient)
        self.assertEqual(device.describe()["implementation"], "kernel")
        [wg] = self.spawner.spawned
        self.assertEqual(wg["args"][4:], ["wg", "set", "mwunit", "private-key", "/dev/stdin",
                                          "listen-port", "51820"])
        yield device.stop()
        self.assertNotIn("mwunit", self.world.links)

    @defer.inlineCallbacks
    def test_userspaceWhenNoKernelSupport(self):
        if os.path.isdir("/sys/module/wireguard"):
            self.skipTest("this kernel has WireGuard")
        device = self.device(implementation="auto")
        yield device.start()
        self.assertEqual(device.describe()["implementation"], "userspace")

    @defer.inlineCallbacks
    def test_stopWhileStarting(self):
        device = self.device()
        started, stopped = device.start(), device.stop()
        yield self.assertFailure(started, DeviceStopping)
        yield stopped
        self.assertNotIn("mwunit", self.world.links)
        self.assertEqual(self.spawner.last.signals, ["TERM"])

    def test_badArguments(self):
        for name in ["-help", "x" * 16, "a b", "", "a/b"]:
            self.assertRaises(ValueError, WireGuardDevice, self.reactor, name, self.key)
        self.assertRaises(ValueError, WireGuardDevice, self.reactor, "wg0", "nokey")
        self.assertRaises(ValueError, WireGuardDevice, self.reactor, "wg0", self.key,
                          implementation="boringtun")
