"""
The gateway machine's transitions and the registry's lease operations,
with a Clock, a recording fake method and an in-memory store: every RPC
error code the server can give is produced here.
"""

import ipaddress

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from mnigs import protocol
from mnigs.system.admission import Admission
from mnigs.interfaces import IGatewayMethod, ILeaseStore
from mnigs.methods.traffic import Traffic
from mnigs.protocol import RegisterRequest
from mnigs.server.leases import LeaseBook
from mnigs.server.leasestore import GroupCommit
from mnigs.server.machine import GatewayCore, makeGateway
from mnigs.server.registry import Registry


@implementer(IGatewayMethod)
class RecordingMethod:
    name = "fake"

    def __init__(self, events, failGrant=False):
        self.events = events
        self.failGrant = failGrant
        self.slowRevokes = None  # a list: revoke hands out Deferreds the test fires
        self.neverConnected = []  # leases unconfirmed() answers
        self.counts = {}  # client id -> (bytes in, bytes out, last handshake)
        self.granted = {}

    def udpPorts(self):
        return ()

    def tunnelPools(self):
        return ()

    def tunnelInterfaces(self):
        return ("fake0",)

    def admissions(self, lease):
        return (Admission(ipaddress.ip_interface(lease.config["address"]).ip, "fake0"),)

    def offerEntry(self, localHost):
        return {"type": self.name}

    def checkParams(self, params):
        if set(params) - {"key"}:
            raise protocol.invalidParams("only key")
        return dict(params)

    def checkClient(self, clientHost, localHost):
        if clientHost == "10.0.0.99":
            raise protocol.RPCError(protocol.METHOD_UNAVAILABLE, "not for you")

    def allocate(self, lease, others, localHost):
        used = {o.config["address"] for o in others}
        for n in range(2, 6):  # one more than max_clients: a replacement's
            if f"100.64.0.{n}/32" not in used:
                return {"address": f"100.64.0.{n}/32"}
        raise protocol.RPCError(protocol.GATEWAY_FULL, "pool exhausted")

    def start(self, leases):
        self.events.append(("start", sorted(lease.clientId for lease in leases)))

    def grant(self, lease):
        self.events.append(("grant", lease.clientId, lease.config["address"]))
        self.granted[lease.id] = lease
        if isinstance(self.failGrant, Exception):
            return defer.fail(self.failGrant)
        if self.failGrant:
            return defer.fail(RuntimeError("nft said no"))
        return defer.succeed(None)

    def revoke(self, lease):
        self.events.append(("revoke", lease.clientId, lease.config["address"]))
        self.granted.pop(lease.id, None)
        if self.slowRevokes is not None:
            self.slowRevokes.append(defer.Deferred())
            return self.slowRevokes[-1]

    def unconfirmed(self):
        return list(self.neverConnected)

    def traffic(self):
        return defer.succeed({lease.id: Traffic(*self.counts[lease.clientId])
                              for lease in self.granted.values() if lease.clientId in self.counts})

    def stop(self):
        self.events.append(("stop",))

    def leave(self):
        self.events.append(("leave",))

    def describe(self):
        return {}


@implementer(ILeaseStore)
class MemoryStore:
    def __init__(self, events):
        self.events = events
        self.saved = None

    def load(self):
        return self.saved

    def save(self, records):
        self.saved = records
        self.events.append(("save", len(records["leases"])))


class Hooks:
    """
    Records hook events; C{verdicts} (a list): the register hook is
    configured, and each ask gets the next Deferred the test fires.
    """

    def __init__(self, events, verdicts=None, release=False):
        self.events = events
        self.verdicts = verdicts
        self.release = release
        self.args = []

    def has(self, event):
        return event == "release" and self.release

    def run(self, event, *args):
        self.events.append(("hook", event) + args[1:3])
        self.args.append((event,) + args)

    def ask(self, event, timeout, *args):
        if self.verdicts is None:
            return None
        self.events.append(("ask", event) + args[1:3])
        self.args.append((event,) + args)
        self.verdicts.append(defer.Deferred())
        return self.verdicts[-1]


class Offers:
    gatewayId = "ed25519:test"
    name = "test"
    terms = {"max_clients": 10, "notes": "a test"}

    def offer(self, localHost, available, clients):
        return {"available": available, "clients": clients}


def request(clientId="c1", method="fake", **params):
    return RegisterRequest(clientId, "", method, params)


class RegistryTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.events = []
        self.method = RecordingMethod(self.events)
        self.store = MemoryStore(self.events)
        self.book = LeaseBook(maxClients=3, leaseSeconds=60)
        self.registry = Registry(self.clock, self.book, {"fake": self.method},
                                 GroupCommit(self.clock, self.store, self.book.records),
                                 Hooks(self.events))

    def register(self, req=None, host="10.0.0.1"):
        d = self.registry.register(req or request(), host, "10.0.0.254")
        self.clock.advance(0)
        return d

    def assertCode(self, d, code):
        self.clock.advance(0)
        f = self.failureResultOf(d, protocol.RPCError)
        self.assertEqual(f.value.code, code)

    def test_registerGrantsThenPersistsThenAnswers(self):
        verifyObject(IGatewayMethod, self.method)
        d = self.registry.register(request(), "10.0.0.1", "10.0.0.254")
        self.assertNoResult(d)  # not before the lease is on disk
        self.clock.advance(0)
        answer = self.successResultOf(d)["lease"]
        self.assertEqual(answer["config"], {"address": "100.64.0.2/32"})
        self.assertEqual(answer["expires_in"], 60)
        self.assertEqual(self.events, [("grant", "c1", "100.64.0.2/32"), ("save", 1)])

    def test_reRegisterReturnsSameLeaseRenewed(self):
        first = self.successResultOf(self.register())["lease"]
        self.clock.advance(30)
        second = self.successResultOf(self.register())["lease"]
        self.assertEqual((first["id"], first["token"]), (second["id"], second["token"]))
        self.assertEqual(second["expires_in"], 60)
        self.assertEqual(len(self.book), 1)
        self.assertEqual([e[0] for e in self.events], ["grant", "save", "save"])

    def test_reRegisterElsewhereGivesTheEndpointItReached(self):
        """
        The same client registering again, through another of the
        gateway's addresses (its node address had no route while babel
        relearned it; its address on a neighbour's link had), gets the
        same lease with the endpoint of the address it reached: the old
        one would send its tunnel where the mesh has no route.
        """
        self.method.offerEntry = lambda localHost: {"type": "fake",
                                                    "endpoint": f"{localHost}:51820"}
        self.method.allocate = lambda lease, others, localHost: {
            "address": "100.64.0.2/32", "endpoint": f"{localHost}:51820"}
        first = self.successResultOf(self.register())["lease"]
        self.assertEqual(first["config"]["endpoint"], "10.0.0.254:51820")
        d = self.registry.register(request(), "10.0.0.1", "10.99.2.2")
        self.clock.advance(0)
        second = self.successResultOf(d)["lease"]
        self.assertEqual((second["id"], second["token"]), (first["id"], first["token"]))
        self.assertEqual(second["config"], {"address": "100.64.0.2/32",
                                            "endpoint": "10.99.2.2:51820"})

    def test_reRegisterWithNewKeyGrantsTheNewBeforeRevokingTheOld(self):
        """
        Replace-then-revoke: the client's new grant is in place before its
        old one goes, so it is never without access; the new lease
        replaces the old one in the book (a full gateway has room for it).
        """
        first = self.successResultOf(self.register(request(key="a")))["lease"]
        for n in (2, 3):
            self.successResultOf(self.register(request(f"c{n}")))
        del self.events[:]
        second = self.successResultOf(self.register(request(key="b")))["lease"]
        self.assertEqual(self.events, [("grant", "c1", "100.64.0.5/32"),
                                       ("revoke", "c1", "100.64.0.2/32"),
                                       ("hook", "release", "fake", "10.0.0.1"), ("save", 3)])
        self.assertNotEqual(first["id"], second["id"])
        self.assertEqual(len(self.book), 3)
        self.assertEqual(self.book.find("c1", "fake").params, {"key": "b"})
        self.assertCode(self.registry.renew(first["id"], first["token"]), protocol.UNKNOWN_LEASE)

    def test_failedReplacementKeepsTheOldGrant(self):
        first = self.successResultOf(self.register(request(key="a")))["lease"]
        del self.events[:]
        self.method.failGrant = True
        self.assertCode(self.register(request(key="b")), protocol.INTERNAL_ERROR)
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual(self.events, [("grant", "c1", "100.64.0.3/32"),
                                       ("revoke", "c1", "100.64.0.3/32")])
        self.assertEqual(self.book.find("c1", "fake").id, first["id"])
        self.assertEqual(len(self.book), 1)
        self.method.failGrant = False
        d = self.registry.renew(first["id"], first["token"])
        self.clock.advance(0)
        self.successResultOf(d)

    def test_overlappingReRegistrationsTakeTurns(self):
        """
        A client that retries while its re-registration is still revoking
        the old grant waits for it, instead of two drafts racing into the
        book: each replaces the one before.
        """
        first = self.successResultOf(self.register(request(key="a")))["lease"]
        self.method.slowRevokes = []
        b = self.register(request(key="b"))
        c = self.register(request(key="c"))
        self.assertNoResult(b)
        self.assertNoResult(c)
        self.assertEqual(len(self.method.slowRevokes), 1)  # c waits its turn
        self.method.slowRevokes[0].callback(None)
        self.clock.advance(0)
        second = self.successResultOf(b)["lease"]
        self.assertNotEqual(second["id"], first["id"])
        self.assertEqual(len(self.method.slowRevokes), 2)  # now c revokes b's grant
        self.method.slowRevokes[1].callback(None)
        self.clock.advance(0)
        self.successResultOf(c)
        self.assertEqual(len(self.book), 1)
        self.assertEqual(self.book.find("c1", "fake").params, {"key": "c"})
        self.assertEqual(self.registry._locks, {})

    def test_otherClientsDoNotWait(self):
        self.successResultOf(self.register(request(key="a")))
        self.method.slowRevokes = []
        b = self.register(request(key="b"))
        other = self.register(request("c2"))
        self.assertNoResult(b)
        self.successResultOf(other)
        self.method.slowRevokes[0].callback(None)
        self.clock.advance(0)
        self.successResultOf(b)

    def test_full(self):
        for n in range(3):
            self.successResultOf(self.register(request(f"c{n}")))
        self.assertCode(self.register(request("c9")), protocol.GATEWAY_FULL)

    def test_methodNotOffered(self):
        self.assertCode(self.register(request(method="openvpn")), protocol.METHOD_UNAVAILABLE)

    def test_methodNotForThisClient(self):
        self.assertCode(self.register(host="10.0.0.99"), protocol.METHOD_UNAVAILABLE)

    def test_badMethodParams(self):
        self.assertCode(self.register(request(color="red")), protocol.INVALID_PARAMS)

    def test_grantFailureIsInternalErrorAndLeavesNoLease(self):
        self.method.failGrant = True
        self.assertCode(self.register(), protocol.INTERNAL_ERROR)
        self.assertEqual(len(self.book), 0)
        self.flushLoggedErrors(RuntimeError)

    def test_aMethodsRefusalIsAnsweredAsItIsWithoutAFault(self):
        """
        A method that cannot grant now (its daemon is being relaunched)
        fails with an RPCError: the client gets that code and message, no
        lease is left, and nothing is logged as a fault.
        """
        self.method.failGrant = protocol.RPCError(protocol.UNAVAILABLE,
                                                  "temporarily unavailable: restarting")
        failure = self.failureResultOf(self.register(), protocol.RPCError)
        self.assertEqual((failure.value.code, failure.value.message),
                         (protocol.UNAVAILABLE, "temporarily unavailable: restarting"))
        self.assertEqual(len(self.book), 0)
        self.assertEqual([e[0] for e in self.events], ["grant", "revoke"])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_renewAndErrors(self):
        lease = self.successResultOf(self.register())["lease"]
        self.clock.advance(50)
        d = self.registry.renew(lease["id"], lease["token"])
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(d), {"expires_in": 60})
        self.assertCode(self.registry.renew(lease["id"], "wrong"), protocol.WRONG_TOKEN)
        self.assertCode(self.registry.renew("unknown", lease["token"]), protocol.UNKNOWN_LEASE)

    def test_unregisterRevokes(self):
        lease = self.successResultOf(self.register())["lease"]
        del self.events[:]
        d = self.registry.unregister(lease["id"], lease["token"])
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(d), {"released": True})
        self.assertEqual(self.events, [("revoke", "c1", "100.64.0.2/32"),
                                       ("hook", "release", "fake", "10.0.0.1"), ("save", 0)])
        self.assertCode(self.registry.renew(lease["id"], lease["token"]), protocol.UNKNOWN_LEASE)

    def test_unregisterOfAClientThatHungUpRunsToItsEnd(self):
        """
        The RPC server cancels a call whose client hung up: the revoke
        under way finishes, the lease is released and saved, and nothing
        is logged as an error.
        """
        lease = self.successResultOf(self.register())["lease"]
        del self.events[:]
        self.method.slowRevokes = []
        d = self.registry.unregister(lease["id"], lease["token"])
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.method.slowRevokes[0].callback(None)
        self.clock.advance(0)
        self.assertEqual(self.events, [("revoke", "c1", "100.64.0.2/32"),
                                       ("hook", "release", "fake", "10.0.0.1"), ("save", 0)])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_registrationOfAClientThatHungUpIsKept(self):
        self.successResultOf(self.register(request(key="a")))
        self.method.slowRevokes = []
        d = self.register(request(key="b"))  # grants key "b", then revokes key "a"
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.method.slowRevokes[0].callback(None)
        self.clock.advance(0)
        self.assertEqual(self.book.find("c1", "fake").params, {"key": "b"})
        self.assertEqual(self.events[-4:], [("grant", "c1", "100.64.0.3/32"),
                                            ("revoke", "c1", "100.64.0.2/32"),
                                            ("hook", "release", "fake", "10.0.0.1"), ("save", 1)])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_sweepExpires(self):
        self.successResultOf(self.register(request("a")))
        self.clock.advance(30)
        self.successResultOf(self.register(request("b")))
        del self.events[:]
        self.clock.advance(30)
        d = self.registry.sweep()
        self.clock.advance(0)
        self.assertEqual([lease.clientId for lease in self.successResultOf(d)], ["a"])
        self.assertEqual(self.events, [("revoke", "a", "100.64.0.2/32"),
                                       ("hook", "release", "fake", "10.0.0.1"), ("save", 1)])

    def test_restartRestoresAndRestartsMethods(self):
        lease = self.successResultOf(self.register())["lease"]
        book = LeaseBook(3, 60)
        book.restore(self.store.saved, self.clock.seconds(), {"fake"})
        events = []
        registry = Registry(self.clock, book, {"fake": RecordingMethod(events)},
                            GroupCommit(self.clock, self.store, book.records), Hooks(events))
        self.successResultOf(registry.startMethods())
        self.assertEqual(events, [("start", ["c1"])])
        d = registry.renew(lease["id"], lease["token"])
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(d), {"expires_in": 60})


class GatewayMachineTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.events = []
        self.book = LeaseBook(3, 60)
        self.registry = Registry(self.clock, self.book, {"fake": RecordingMethod(self.events)},
                                 GroupCommit(self.clock, MemoryStore(self.events), self.book.records),
                                 Hooks(self.events))
        self.left = defer.Deferred()
        self.cleared = defer.Deferred()

        def leave():
            self.events.append(("leave data path",))
            return self.left

        @defer.inlineCallbacks
        def clear():
            yield self.registry.releaseAll("released: drained")
            self.events.append(("clear data path",))
            yield self.cleared

        self.gateway = makeGateway(GatewayCore(self.registry, Offers(), leave, clear, self.clock))

    def register(self):
        d = self.gateway.register(request(), "10.0.0.1", "10.0.0.254")
        self.clock.advance(0)
        return d

    def assertUnavailable(self, d):
        self.assertEqual(self.failureResultOf(d, protocol.RPCError).value.code, protocol.UNAVAILABLE)

    def test_startingRefuses(self):
        self.assertEqual(self.gateway.describe()["state"], "starting")
        self.assertFalse(self.gateway.info("x")["available"])
        self.assertUnavailable(self.register())

    def test_servingTakesRegistrations(self):
        self.gateway.started()
        self.assertEqual(self.gateway.describe()["state"], "serving")
        self.assertTrue(self.gateway.info("x")["available"])
        self.successResultOf(self.register())
        self.assertEqual(self.gateway.info("x")["clients"], 1)

    def test_statusSaysTheUptimeAndTheTermsAsOffered(self):
        self.clock.advance(30)
        self.gateway.started()
        self.clock.advance(12.25)
        status = self.gateway.describe()
        self.assertEqual(status["uptime_s"], 42.2)
        self.assertEqual(status["terms"], {"max_clients": 10, "notes": "a test"})

    def test_uplinkDownAndBack(self):
        self.gateway.started()
        lease = self.successResultOf(self.register())["lease"]
        self.gateway.uplinkDown("uplink up0 is down")
        status = self.gateway.describe()
        self.assertEqual((status["state"], status["uplink_problem"]), ("unavailable", "uplink up0 is down"))
        self.assertFalse(self.gateway.info("x")["available"])
        self.assertUnavailable(self.register())
        # A lease holder keeps its lease through the outage.
        d = self.gateway.renew(lease["id"], lease["token"])
        self.clock.advance(0)
        self.successResultOf(d)
        self.gateway.uplinkUp()
        self.assertEqual(self.gateway.describe()["state"], "serving")
        self.assertNotIn("uplink_problem", self.gateway.describe())
        self.assertTrue(self.gateway.info("x")["available"])

    def test_stopLeavesTheDataPathAndWaitsForThat(self):
        self.gateway.started()
        d1 = self.gateway.stop()
        d2 = self.gateway.stop()
        self.assertEqual(self.gateway.describe()["state"], "stopping")
        self.assertUnavailable(self.register())
        self.assertNoResult(d1)
        self.assertEqual(self.events, [("leave data path",)])
        self.left.callback(None)
        self.successResultOf(d1)
        self.successResultOf(d2)
        self.assertEqual(self.gateway.describe()["state"], "stopped")
        self.assertFalse(self.gateway.info("x")["available"])
        self.successResultOf(self.gateway.stop())
        self.gateway.uplinkUp()  # late monitor ticks are harmless
        self.assertEqual(self.gateway.describe()["state"], "stopped")


class GatewayDrainTests(GatewayMachineTests):
    """
    C{mnigsctl --server drain}: offers go unavailable, holders keep renewing
    and releasing, and the data path is cleared once the last lease is gone
    or the drain's time is up.
    """

    def registerClient(self, clientId):
        d = self.gateway.register(request(clientId), "10.0.0.1", "10.0.0.254")
        self.clock.advance(0)
        return self.successResultOf(d)["lease"]

    def unregister(self, lease):
        d = self.gateway.unregister(lease["id"], lease["token"])
        self.clock.advance(0)
        return self.successResultOf(d)

    def test_drainRefusesNewClientsAndClearsAfterTheLastLeaves(self):
        self.gateway.started()
        a, b = self.registerClient("a"), self.registerClient("b")
        self.assertEqual(self.gateway.drain(60), {"state": "draining", "leases": 2, "timeout": 60})
        self.assertEqual(self.gateway.describe()["state"], "draining")
        self.assertFalse(self.gateway.info("x")["available"])
        self.assertUnavailable(self.register())
        d = self.gateway.renew(a["id"], a["token"])
        self.clock.advance(0)
        self.successResultOf(d)
        self.unregister(a)
        self.assertNotIn(("clear data path",), self.events)
        self.unregister(b)
        self.assertIn(("clear data path",), self.events)
        self.assertEqual(self.gateway.describe()["state"], "clearing")
        self.cleared.callback(None)
        self.assertEqual(self.gateway.describe()["state"], "drained")
        self.assertFalse(self.gateway.info("x")["available"])
        self.assertUnavailable(self.register())
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # Stopping a drained gateway has no data path to leave, but asks anyway.
        d = self.gateway.stop()
        self.left.callback(None)
        self.successResultOf(d)

    def test_drainTimeoutReleasesWhatIsLeft(self):
        self.gateway.started()
        self.registerClient("a")
        self.gateway.drain(30)
        self.clock.advance(29)
        self.assertEqual(self.gateway.describe()["drain_timeout_in"], 1.0)
        self.assertNotIn(("clear data path",), self.events)
        self.clock.advance(1)
        self.assertIn(("revoke", "a", "100.64.0.2/32"), self.events)
        self.assertIn(("hook", "release", "fake", "10.0.0.1"), self.events)
        self.assertEqual(len(self.book), 0)
        self.cleared.callback(None)
        self.assertEqual(self.gateway.describe()["state"], "drained")

    def test_expiryOfTheLastLeaseEndsTheDrain(self):
        self.gateway.started()
        self.registerClient("a")
        self.gateway.drain(600)
        self.clock.advance(61)
        self.gateway.sweep()
        self.clock.advance(0)
        self.assertEqual(self.gateway.describe()["state"], "clearing")

    def test_drainWithNoLeasesClearsAtOnce(self):
        self.gateway.started()
        self.gateway.drain(600)
        self.assertEqual(self.gateway.describe()["state"], "clearing")
        self.cleared.callback(None)
        self.assertEqual(self.gateway.describe()["state"], "drained")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopWhileDrainingLeavesTheDataPathAndCancelsTheDeadline(self):
        self.gateway.started()
        self.registerClient("a")
        self.gateway.drain(600)
        d = self.gateway.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertNotIn(("clear data path",), self.events)
        self.left.callback(None)
        self.successResultOf(d)
        self.assertEqual(self.gateway.describe()["state"], "stopped")

    def test_stopWhileClearingWaitsForTheClearing(self):
        self.gateway.started()
        self.gateway.drain(0)
        d = self.gateway.stop()
        self.assertNotIn(("leave data path",), self.events)
        self.cleared.callback(None)
        self.assertIn(("leave data path",), self.events)
        self.left.callback(None)
        self.successResultOf(d)
        self.assertEqual(self.gateway.describe()["state"], "stopped")

    def test_drainOnlyFromServiceStates(self):
        self.assertEqual(self.gateway.drain(60), {"state": "starting", "leases": 0})
        self.gateway.started()
        self.gateway.uplinkDown("down")
        self.assertEqual(self.gateway.drain(60)["state"], "draining")
        self.assertEqual(self.gateway.describe()["uplink_problem"], "down")


class OfferMakerTests(SynchronousTestCase):
    def make(self, probe):
        from ipaddress import ip_address

        from nacl.signing import SigningKey

        from mnigs.server.offer import OfferMaker

        return OfferMaker(Clock(), SigningKey.generate(), "gw", {"max_clients": 4, "lease_seconds": 60},
                          [], probe=[ip_address(a) for a in probe])

    def test_offerCarriesTheUplinkProbeTargetsSigned(self):
        offer = self.make(["9.9.9.9", "2620:fe::fe"]).offer("10.0.0.254", True, 0)
        self.assertEqual(offer["probe"], ["9.9.9.9", "2620:fe::fe"])
        self.assertEqual(protocol.verifyOffer(offer).probe, ("9.9.9.9", "2620:fe::fe"))

    def test_noProbeTargetsNoMember(self):
        self.assertNotIn("probe", self.make([]).offer("10.0.0.254", True, 0))

    def test_atMostAsManyAsAClientAccepts(self):
        many = [f"9.9.9.{n}" for n in range(1, 12)]
        offer = self.make(many).offer("10.0.0.254", True, 0)
        self.assertEqual(offer["probe"], many[:protocol.MAX_PROBES])
        protocol.verifyOffer(offer)
