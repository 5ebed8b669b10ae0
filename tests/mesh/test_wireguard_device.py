"""
L{mnigs.wireguard.device.WireGuardDevice} and the WireGuard clients against real
wireguard-go daemons in two network namespaces of this test's own, joined by
a veth.

Run as a module (C{python -m tests.mesh.test_wireguard_device owner ...}) it
is the stand-in "previous mnigs run" that the adoption test SIGKILLs.
"""

import os
import signal
import sys

from twisted.internet import defer
from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from mnigs.system.command import runCommand
from mnigs.system.process import SupervisedProcess
from mnigs.wireguard.device import DeviceError, WireGuardDevice
from mnigs.wireguard.uapi import (
    DEFAULT_SOCKDIR,
    Peer,
    UAPIClient,
    UAPIError,
    WgToolClient,
    generatePrivateKey,
    publicKey,
)
from tests.mesh._netns import makeNamespace, requireRoot, uniqueName, veth
from tests.mesh.commands import waitFor

log = Logger()

HERE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def wireguardGoPids(ifname):
    """Live wireguard-go processes serving C{ifname}."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"wireguard-go") and ifname.encode() in argv:
            pids.append(int(entry))
    return pids


def forgetWireGuard(ifname):
    """Cleanup: kill what still serves C{ifname} and remove its socket."""
    for pid in wireguardGoPids(ifname):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.unlink(os.path.join(DEFAULT_SOCKDIR, ifname + ".sock"))
    except FileNotFoundError:
        pass


class Side:
    def __init__(self, ns, ifname, key, inner, outer):
        self.ns, self.ifname, self.key = ns, ifname, key
        self.pub = publicKey(key)
        self.inner, self.outer = inner, outer


class WireGuardDeviceTests(TestCase):
    timeout = 120

    def setUp(self):
        requireRoot(self, "wireguard-go", "wg", "ping")
        from twisted.internet import reactor
        self.reactor = reactor
        nsA, nsB = makeNamespace(self), makeNamespace(self)
        ifA, ifB = uniqueName("mw", 6), uniqueName("mw", 6)
        for ifname in (ifA, ifB):
            self.addCleanup(forgetWireGuard, ifname)
            log.info("using wireguard interface {ifname}", ifname=ifname)
        veth(nsA, "va", "10.77.0.1/24", nsB, "vb", "10.77.0.2/24")
        self.a = Side(nsA, ifA, generatePrivateKey(), "100.64.7.1", "10.77.0.1")
        self.b = Side(nsB, ifB, generatePrivateKey(), "100.64.7.2", "10.77.0.2")

    def device(self, side, **kw):
        device = WireGuardDevice(self.reactor, side.ifname, side.key, listenPort=51820,
                                 address=side.inner + "/24", netns=side.ns, **kw)
        self.addCleanup(device.stop)
        return device

    def peerOf(self, side):
        return Peer(side.pub, [side.inner + "/32"], endpoint=side.outer + ":51820")

    @defer.inlineCallbacks
    def bothUp(self):
        devA, devB = self.device(self.a), self.device(self.b)
        yield defer.gatherResults([devA.start(), devB.start()])
        yield UAPIClient(self.reactor, self.a.ifname).setPeers(add=[self.peerOf(self.b)])
        yield UAPIClient(self.reactor, self.b.ifname).setPeers(add=[self.peerOf(self.a)])
        return devA, devB

    def ping(self, src, dst):
        d = runCommand(self.reactor, ["ip", "netns", "exec", src.ns, "ping", "-n", "-c", "1",
                                      "-W", "1", dst.inner])
        return d.addCallback(lambda result: result.exitCode == 0)

    def pingWorks(self, src, dst):
        return waitFor(self.reactor, lambda: self.ping(src, dst), timeout=15,
                       message=f"ping {src.inner} -> {dst.inner}")

    @defer.inlineCallbacks
    def test_pingThroughTheTunnelUntilThePeerIsRemoved(self):
        devA, devB = yield self.bothUp()
        info = devA.describe()
        self.assertEqual((info["implementation"], info["adopted"]), ("userspace", False))
        self.assertEqual(wireguardGoPids(self.a.ifname), [info["pid"]])
        yield self.pingWorks(self.a, self.b)

        state = yield devA.get()
        self.assertEqual(state["public_key"], self.a.pub)
        self.assertEqual(state["listen_port"], 51820)
        [peer] = state["peers"]
        self.assertEqual(peer["public_key"], self.b.pub)
        self.assertEqual(peer["allowed_ips"], ["100.64.7.2/32"])
        self.assertEqual(peer["endpoint"], "10.77.0.2:51820")
        self.assertGreater(peer["last_handshake_time_sec"], 0)
        self.assertGreater(peer["rx_bytes"], 0)

        yield devA.setPeers(remove=[self.b.pub])
        self.assertEqual((yield devA.get())["peers"], [])
        for attempt in range(2):
            self.assertFalse((yield self.ping(self.a, self.b)))

        yield defer.gatherResults([devA.stop(), devB.stop()])
        self.assertEqual(wireguardGoPids(self.a.ifname), [])
        self.assertFalse(os.path.exists(os.path.join(DEFAULT_SOCKDIR, self.a.ifname + ".sock")))

    @defer.inlineCallbacks
    def test_wgToolClientSeesAndSetsTheSameState(self):
        devA, devB = yield self.bothUp()
        tool = WgToolClient(self.reactor, self.a.ifname, netns=self.a.ns)
        viaTool, viaUAPI = yield defer.gatherResults([tool.get(), devA.get()])
        for state in (viaTool, viaUAPI):
            state["peers"][0].pop("last_handshake_time_nsec")
            state["peers"][0].pop("protocol_version", None)
        self.assertEqual(viaTool, viaUAPI)

        extra = generatePrivateKey()
        yield tool.setPeers(add=[Peer(publicKey(extra), ["10.99.0.0/24"], keepalive=25),
                                 Peer(self.b.pub, ["100.64.9.0/24"], replace_allowed_ips=False)])
        peers = {p["public_key"]: p for p in (yield devA.get())["peers"]}
        self.assertEqual(peers[publicKey(extra)]["persistent_keepalive_interval"], 25)
        self.assertEqual(sorted(peers[self.b.pub]["allowed_ips"]),
                         ["100.64.7.2/32", "100.64.9.0/24"])
        yield tool.setPeers(remove=[publicKey(extra)])
        self.assertEqual(len((yield devA.get())["peers"]), 1)
        yield self.pingWorks(self.a, self.b)

    @defer.inlineCallbacks
    def test_deadDaemonIsRelaunchedAndReconfigured(self):
        devA, devB = yield self.bothUp()
        yield self.pingWorks(self.a, self.b)
        died, restored = defer.Deferred(), defer.Deferred()
        devA.onDeath(lambda reason: died.callback(reason.value))
        devA.onRestored(lambda: restored.callback(None))
        oldPid = devA.describe()["pid"]
        os.kill(oldPid, signal.SIGKILL)
        reason = yield died
        self.assertEqual(reason.signal, signal.SIGKILL)
        yield restored
        newPid = devA.describe()["pid"]
        self.assertNotEqual(newPid, oldPid)
        state = yield devA.get()
        self.assertEqual((state["public_key"], state["peers"]), (self.a.pub, []))
        yield devA.setPeers(add=[self.peerOf(self.b)])
        yield self.pingWorks(self.a, self.b)

    @defer.inlineCallbacks
    def test_nameTakenInAnotherNamespaceIsRefused(self):
        devA, devB = yield self.bothUp()
        clash = WireGuardDevice(self.reactor, self.a.ifname, generatePrivateKey(),
                                netns=self.b.ns)
        yield self.assertFailure(clash.start(), DeviceError)
        yield clash.stop()
        self.assertEqual(wireguardGoPids(self.a.ifname), [devA.describe()["pid"]])
        yield self.pingWorks(self.a, self.b)

    @defer.inlineCallbacks
    def test_adoptsTheDaemonOfAKilledOwner(self):
        devB = self.device(self.b)
        yield devB.start()
        yield UAPIClient(self.reactor, self.b.ifname).setPeers(add=[self.peerOf(self.a)])

        # A previous run owns A's device; it configures the peer, then dies.
        gone = defer.Deferred()
        env = dict(os.environ, PYTHONPATH=HERE)
        owner = SupervisedProcess(
            self.reactor, [sys.executable, "-m", "tests.mesh.test_wireguard_device", "owner",
                           self.a.ns, self.a.ifname, self.a.key, self.a.inner + "/24",
                           self.b.pub, self.b.inner + "/32", self.b.outer + ":51820"],
            "owner", env=env, readiness=lambda line: line == b"up", restart=False,
            onExit=lambda reason: gone.callback(reason.value))
        self.addCleanup(owner.stop)
        yield owner.start()
        yield self.pingWorks(self.a, self.b)
        [orphan] = wireguardGoPids(self.a.ifname)
        os.kill(owner.pid, signal.SIGKILL)
        yield gone
        # Its output does not go to the dead owner's pipe: an error it logs
        # now does not kill it with SIGPIPE.
        yield self.assertFailure(
            UAPIClient(self.reactor, self.a.ifname)._set(b"set=1\nbogus=1\n\n"), UAPIError)
        self.assertEqual(wireguardGoPids(self.a.ifname), [orphan])

        devA = self.device(self.a, watchInterval=0.2)
        yield devA.start()
        info = devA.describe()
        self.assertEqual((info["implementation"], info["adopted"]), ("userspace", True))
        self.assertEqual(wireguardGoPids(self.a.ifname), [orphan])
        self.assertEqual([p["public_key"] for p in (yield devA.get())["peers"]], [self.b.pub])
        yield self.pingWorks(self.a, self.b)

        # The adopted daemon dies: a supervised one replaces it.
        died, restored = defer.Deferred(), defer.Deferred()
        devA.onDeath(lambda reason: died.callback(reason.value))
        devA.onRestored(lambda: restored.callback(None))
        os.kill(orphan, signal.SIGKILL)
        yield died
        yield restored
        info = devA.describe()
        self.assertEqual((info["adopted"], wireguardGoPids(self.a.ifname)), (False, [info["pid"]]))
        yield devA.setPeers(add=[self.peerOf(self.b)])
        yield self.pingWorks(self.a, self.b)

        yield devA.stop()
        self.assertEqual(wireguardGoPids(self.a.ifname), [])

    @defer.inlineCallbacks
    def test_stopOfAnAdoptedDeviceEndsTheOrphan(self):
        owner = SupervisedProcess(
            self.reactor, [sys.executable, "-m", "tests.mesh.test_wireguard_device", "owner",
                           self.a.ns, self.a.ifname, self.a.key, self.a.inner + "/24"],
            "owner", env=dict(os.environ, PYTHONPATH=HERE),
            readiness=lambda line: line == b"up", restart=False)
        self.addCleanup(owner.stop)
        yield owner.start()
        os.kill(owner.pid, signal.SIGKILL)
        yield waitFor(self.reactor, lambda: owner.pid is None, message="owner gone")
        devA = self.device(self.a)
        yield devA.start()
        self.assertTrue(devA.describe()["adopted"])
        yield devA.stop()
        # stop() fires once the orphan stopped answering; it is not our
        # child, so its exit is only seen here.
        yield waitFor(self.reactor, lambda: not wireguardGoPids(self.a.ifname),
                      message="the orphan to exit")
        self.assertFalse((yield UAPIClient(self.reactor, self.a.ifname).answers()))


@defer.inlineCallbacks
def _owner(reactor, ns, ifname, key, address, *peer):
    device = WireGuardDevice(reactor, ifname, key, listenPort=51820, address=address,
                             netns=ns)
    yield device.start()
    if peer:
        pub, allowed, endpoint = peer
        yield device.setPeers(add=[Peer(pub, [allowed], endpoint=endpoint)])
    print("up", flush=True)
    yield defer.Deferred()  # until killed


if __name__ == "__main__" and sys.argv[1:2] == ["owner"]:
    from twisted.internet import task
    task.react(_owner, sys.argv[2:])
