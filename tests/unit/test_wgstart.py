"""
How soon a WireGuard start notices that a step is done (the client's start
waits for each): a spawned wireguard-go's control socket answering, and
the first handshake with the gateway; and the device's modules imported
while the start waits for other things.  On a L{Clock}; the device and
the control socket are fakes (no wireguard-go runs here).
"""

import importlib
import shutil
import tempfile
from types import SimpleNamespace

from twisted.internet import defer
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from mnigs.methods import ClientContext, wireguard
from mnigs.methods.wireguard import HandshakeTimeout, WireGuardClient, importDeviceMeanwhile
from mnigs.wireguard.daemon import READY_POLL, SpawnedDaemon
from mnigs.wireguard.uapi import generatePrivateKey
from tests.unit.fakeprocess import FakeSpawner


class FakeDevice:
    """A device whose peer has shaken hands from C{handshakeAt} on."""

    def __init__(self, clock, handshakeAt=None):
        self.clock = clock
        self.handshakeAt = handshakeAt
        self.asked = []

    def get(self):
        now = self.clock.seconds()
        self.asked.append(round(now, 6))
        done = self.handshakeAt is not None and now >= self.handshakeAt
        return defer.succeed({"peers": [{"last_handshake_time_sec": 1700000000 if done else 0}]})


class HandshakeWaitTests(SynchronousTestCase):
    """
    L{WireGuardClient._handshake} asks the device after 10 ms, then at
    doubling intervals up to 50 ms, until the handshake or the timeout.
    """

    def setUp(self):
        self.clock = Clock()
        self.client = WireGuardClient(self.clock, "mwunit", generatePrivateKey(), None,
                                      handshakeTimeout=5.0)

    def advanceUntil(self, d, limit=10.0, step=0.001):
        while not d.called and self.clock.seconds() < limit:
            self.clock.advance(step)

    def test_meshHandshakeSeenWithin10ms(self):
        device = FakeDevice(self.clock, handshakeAt=0.004)
        d = self.client._handshake(device)
        self.advanceUntil(d)
        self.successResultOf(d)
        self.assertEqual(device.asked, [0.0, 0.01])

    def test_silentGatewayAskedAtDoublingIntervalsUpTo50ms(self):
        device = FakeDevice(self.clock)
        d = self.client._handshake(device)
        self.advanceUntil(d)
        self.failureResultOf(d, HandshakeTimeout)
        self.assertEqual(device.asked[:7], [0.0, 0.01, 0.03, 0.07, 0.12, 0.17, 0.22])
        # At most 20 a second once the pause has grown: a dead gateway is
        # not asked a hundred times a second for the whole timeout.
        self.assertLessEqual(len(device.asked), 5.0 / 0.05 + 5)
        self.assertGreaterEqual(device.asked[-1], 5.0)


class WireGuardGoReadinessTests(SynchronousTestCase):
    """
    A spawned wireguard-go is ready once its control socket answers, which
    is tried every L{READY_POLL} (10 ms) from the spawn on.
    """

    def test_readyWithin10msOfTheSocketAnswering(self):
        clock = Clock()
        ready = []
        core = SimpleNamespace(reactor=clock, ifname="mwunit", sockdir="/nonexistent",
                               netns=None, wireguardGo="wireguard-go", launchTimeout=5.0,
                               logPath=None, spawn=FakeSpawner())
        machine = SimpleNamespace(daemonReady=lambda: ready.append(clock.seconds()),
                                  daemonDied=lambda reason: None)
        daemon = SpawnedDaemon(core, machine)
        asked = []

        def answers():
            asked.append(round(clock.seconds(), 6))
            return defer.succeed(clock.seconds() >= 0.025)

        daemon.control.answers = answers
        daemon.start()
        clock.advance(0)  # the first try, at once
        for _ in range(100):
            if ready:
                break
            clock.advance(0.001)
        self.assertEqual(READY_POLL, 0.01)
        self.assertEqual(asked, [0.0, 0.01, 0.02, 0.03])
        self.assertEqual([round(t, 6) for t in ready], [0.03])


@implementer(IReactorThreads)
class ThreadsReactor(Clock):
    """A clock whose threads only record what they were given."""

    def __init__(self):
        super().__init__()
        self.inThreads = []

    def callInThread(self, f, *args, **kwargs):
        self.inThreads.append((f, args, kwargs))

    def callFromThread(self, f, *args, **kwargs):
        raise NotImplementedError()

    def getThreadPool(self):
        raise NotImplementedError()

    def suggestThreadPoolSize(self, size):
        pass


class ImportDeviceMeanwhileTests(SynchronousTestCase):
    """
    A client with the wireguard method imports L{mnigs.wireguard.device}
    in a thread from its start on, not only when it first connects.
    """

    def test_importedInAThread(self):
        reactor = ThreadsReactor()
        importDeviceMeanwhile(reactor)
        self.assertEqual(reactor.inThreads,
                         [(importlib.import_module, ("mnigs.wireguard.device",), {})])

    def test_aReactorWithoutThreadsImportsOnConnect(self):
        importDeviceMeanwhile(Clock())  # nothing to do, nothing raised

    def test_buildClientStartsTheImport(self):
        stateDir = tempfile.mkdtemp(prefix="mnigs-wgstart-")
        self.addCleanup(shutil.rmtree, stateDir)
        reactor, asked = ThreadsReactor(), []
        self.patch(wireguard, "importDeviceMeanwhile", asked.append)
        config = SimpleNamespace(methods=SimpleNamespace(connect_timeout=5.0))
        section = SimpleNamespace(interface="mwunit", implementation="auto", keepalive=5,
                                  ipv6=True)
        client = wireguard.buildClient(
            ClientContext(reactor, config, stateDir, routing=None, netlink=None), section)
        self.assertIsInstance(client, WireGuardClient)
        self.assertEqual(asked, [reactor])
