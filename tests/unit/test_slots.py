"""
A client method's connections at once (L{mnigs.methods.slots}): the
devices' names, the lowest free slot, and WireGuard and OpenVPN holding a
standby beside the serving connection without taking mnigs's default
route until it is activated.  Recording fakes for the routing, the
WireGuard device and the openvpn daemon (no tunnel can run in a unit test).
"""

import shutil
import tempfile

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mnigs.methods import wireguard
from mnigs.methods.openvpn import OpenVPNClient
from mnigs.methods.slots import MAX_SLOTS, NoFreeSlot, Slots, slotName
from mnigs.wireguard.uapi import generatePrivateKey, publicKey
from tests.unit.test_openvpn.test_method import TOKEN_A, FakeClientDaemon, goodConfig


class Routing:
    def __init__(self):
        self.calls = []

    def install(self, interface, gateway=None, source=None, source6=None):
        self.calls.append(("install", interface))

    def withdraw(self, interface=None):
        self.calls.append(("withdraw", interface))


class SlotNameTests(SynchronousTestCase):
    def test_slotZeroIsTheConfiguredName(self):
        self.assertEqual(slotName("mnigs-c0", 0), "mnigs-c0")
        self.assertEqual(slotName("wg", 0), "wg")

    def test_theTrailingNumberIsRaised(self):
        self.assertEqual([slotName("mnigs-c0", n) for n in (1, 2, 3)],
                         ["mnigs-c1", "mnigs-c2", "mnigs-c3"])
        self.assertEqual(slotName("tun9", 2), "tun11")

    def test_aNameWithoutANumberGetsOne(self):
        self.assertEqual(slotName("wg", 1), "wg1")

    def test_theNameIsCutToFifteenCharacters(self):
        self.assertEqual(slotName("abcdefghijklmno", 1), "abcdefghijklmn1")
        self.assertEqual(slotName("abcdefghijklm99", 1), "abcdefghijkl100")

    def test_lowestFreeSlotFirst(self):
        slots = Slots("mnigs-c0", 3)
        self.assertEqual([slots.take() for _ in range(3)],
                         [(0, "mnigs-c0"), (1, "mnigs-c1"), (2, "mnigs-c2")])
        self.assertRaises(NoFreeSlot, slots.take)
        slots.free(0)
        self.assertEqual(slots.take(), (0, "mnigs-c0"))


class FakeDevice:
    made = []

    def __init__(self, reactor, ifname, privateKey, address=None, address6=None,
                 implementation=None, logPath=None):
        self.ifname, self.logPath = ifname, logPath
        self.peers = []
        self.stopped = 0
        FakeDevice.made.append(self)

    def onDeath(self, callback):
        self.died = callback

    def start(self):
        return defer.succeed(None)

    def setPeers(self, add=()):
        self.peers += add
        return defer.succeed(None)

    def get(self):
        return defer.succeed({"peers": [{"last_handshake_time_sec": 1}]})

    def stop(self):
        self.stopped += 1
        return defer.succeed(None)


GW_KEY = publicKey(generatePrivateKey())
LEASE = {"id": "L", "token": "T", "config": {
    "address": "100.64.0.2/32", "gateway_address": "100.64.0.1",
    "endpoint": "10.99.0.5:51820", "peer_public_key": GW_KEY}}


class WireGuardSlotTests(SynchronousTestCase):
    def setUp(self):
        FakeDevice.made = []
        self.patch(wireguard, "kernelHasIPv6", lambda: False)
        import mnigs.wireguard.device
        self.patch(mnigs.wireguard.device, "WireGuardDevice", FakeDevice)
        self.routing = Routing()
        self.client = wireguard.WireGuardClient(Clock(), "mnigs-c0", generatePrivateKey(),
                                                self.routing, logPath="/state/mnigs-c0.log")

    def test_aStandbyComesUpOnItsOwnDeviceWithoutTheRoute(self):
        serving = self.successResultOf(self.client.connect(None, LEASE))
        standby = self.successResultOf(self.client.connect(None, LEASE, route=False))
        self.assertEqual((serving.device, standby.device), ("mnigs-c0", "mnigs-c1"))
        self.assertEqual([d.logPath for d in FakeDevice.made],
                         ["/state/mnigs-c0.log", "/state/mnigs-c1.log"])
        self.assertEqual(self.routing.calls, [("install", "mnigs-c0")])
        standby.activate()
        self.assertEqual(self.routing.calls[-1], ("install", "mnigs-c1"))

    def test_aDeviceIsFreeAgainOnceItsConnectionIsDown(self):
        serving = self.successResultOf(self.client.connect(None, LEASE))
        self.successResultOf(self.client.connect(None, LEASE, route=False))
        self.successResultOf(serving.disconnect())
        self.assertEqual(self.routing.calls[-1], ("withdraw", "mnigs-c0"))
        again = self.successResultOf(self.client.connect(None, LEASE, route=False))
        self.assertEqual(again.device, "mnigs-c0")

    def test_everySlotTaken(self):
        for _ in range(MAX_SLOTS):
            self.successResultOf(self.client.connect(None, LEASE, route=False))
        self.failureResultOf(self.client.connect(None, LEASE, route=False), NoFreeSlot)


class OpenVPNSlotTests(SynchronousTestCase):
    def setUp(self):
        self.stateDir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.stateDir)
        self.routing = Routing()
        self.daemons = []
        self.client = OpenVPNClient(Clock(), "mp0", self.routing, self.stateDir,
                                    daemonFactory=self.makeDaemon)
        self.lease = {"id": "0123abcd", "token": TOKEN_A, "config": goodConfig()}

    def makeDaemon(self, *args, **kw):
        daemon = FakeClientDaemon(*args, **kw)
        self.daemons.append(daemon)
        return daemon

    def connect(self, route=True):
        d = self.client.connect(None, self.lease, route=route)
        self.daemons[-1].up()
        return self.successResultOf(d)

    def test_aStandbyRunsItsOwnOpenVPN(self):
        serving = self.connect()
        standby = self.connect(route=False)
        self.assertEqual((serving.device, standby.device), ("mp0", "mp1"))
        self.assertEqual([d.socketPath for d in self.daemons],
                         [f"{self.stateDir}/openvpn-mp0/management.sock",
                          f"{self.stateDir}/openvpn-mp1/management.sock"])
        self.assertEqual(self.routing.calls, [("install", "mp0")])
        standby.activate()
        self.assertEqual(self.routing.calls[-1], ("install", "mp1"))
        self.successResultOf(serving.disconnect())
        self.assertEqual(self.routing.calls[-1], ("withdraw", "mp0"))
        self.assertEqual(self.connect(route=False).device, "mp0")

    def test_aFailedConnectGivesItsSlotBack(self):
        d = self.client.connect(None, self.lease, route=False)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertEqual(self.connect(route=False).device, "mp0")
