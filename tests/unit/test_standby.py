"""
Hot standbys (L{mnigs.client.standby}): a slot's exact events from
registering to ready, going bad and being released; the pool keeping the
count, without the serving gateway, replacing a standby that went bad
after a backoff; and, with the real client machine and agent, a failover
that is a promotion: the standby's route, no registration on the way,
then a new standby.  Clock and the recording effects of the machine's
tests.
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mnigs import protocol
from mnigs.client.agent import ClientAgent
from mnigs.client.history import QualityHistory
from mnigs.client.machine import Backoff, Session, Trace
from mnigs.client.plan import buildPlan
from mnigs.client.ranking import SwitchPolicy
from mnigs.client.reasons import PROBES, Reason
from mnigs.client.standby import StandbyCore, StandbyMachine, Standbys
from tests.unit.test_agent import AgentEffects, goOnline, ranked
from tests.unit.test_client_machine import LEASE, Connection


class StandbyEffects(AgentEffects):
    """The machine's recording effects, and what standbys need of them."""

    def connectStandby(self, step, lease):
        return self._op("connectStandby", step.gatewayId, step.method)

    def watch(self, session):
        self.events.append(("watch", session.step.gatewayId))

    def activate(self, session):
        self.events.append(("activate", session.step.gatewayId))
        return defer.succeed(None)

    def disconnect(self, session):
        self.events.append(("disconnect", session.step.gatewayId, session.step.method))
        return defer.succeed(None)

    def watchGateway(self, gatewayId):
        self.watched = getattr(self, "watched", []) + [(gatewayId, defer.Deferred())]
        return self.watched[-1][1]

    def planStandby(self, exclude, fresh=()):
        self.fresh = fresh
        return buildPlan(self.rerank(), exclude=exclude)


class SlotTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.effects = StandbyEffects()
        self.told = []
        self.core = StandbyCore(self.clock, self.effects, Trace(self.clock, name="standby"),
                                lambda session: self.told.append(("ready", session)),
                                lambda reason, silent: self.told.append(("failed", reason)))
        self.slot = StandbyMachine(self.core)
        self.attempt = buildPlan([ranked("B", 0.5)])

    def ready(self):
        self.slot.begin(self.attempt)
        self.effects.fire("register", LEASE)
        self.effects.fire("connectStandby", Connection())
        self.effects.fire("verify", 0.02)
        [(_, session)] = self.told
        return session

    def test_registeredConnectedVerifiedThenWatched(self):
        session = self.ready()
        self.assertEqual(self.effects.events, [
            ("register", "B", "wireguard"), ("connectStandby", "B", "wireguard"),
            ("verify", "B", "wireguard"), ("watch", "B")])
        self.assertEqual(self.slot.describe()["state"], "ready")
        self.assertEqual(self.slot.describe()["standby"]["device"], "wg-mnigs")
        self.assertIsInstance(session, Session)

    def test_goingBadReleasesItAndTellsThePool(self):
        session = self.ready()
        del self.effects.events[:]
        self.slot.lost(session, "3 probes unanswered")
        self.assertEqual(self.effects.events, [
            ("failure", "B"), ("disconnect", "B", "wireguard"), ("unregister", "B", "wireguard")])
        self.assertEqual(self.told[-1], ("failed", "3 probes unanswered"))
        self.assertEqual(self.slot.describe()["state"], "failed")

    def test_aRefusalFailsTheSlot(self):
        self.slot.begin(self.attempt)
        self.effects.fail("register", protocol.RPCError(protocol.GATEWAY_FULL, "full"))
        self.assertEqual(self.effects.events, [("register", "B", "wireguard"), ("failure", "B")])
        self.assertEqual(self.told[0][0], "failed")

    def test_aTunnelThatPassesNothingFailsTheSlot(self):
        self.slot.begin(self.attempt)
        self.effects.fire("register", LEASE)
        self.effects.fire("connectStandby", Connection())
        self.effects.fail("verify", RuntimeError("no answer"))
        self.assertEqual(self.effects.events[-3:], [
            ("failure", "B"), ("disconnect", "B", "wireguard"), ("unregister", "B", "wireguard")])
        self.assertEqual(self.told[0][0], "failed")

    def test_promotedIsHandedOverAndNotReleased(self):
        session = self.ready()
        self.assertIs(self.slot.promote(session), session)
        del self.effects.events[:]
        self.successResultOf(self.slot.release())
        self.assertEqual(self.effects.events, [])
        self.assertEqual(self.slot.describe()["state"], "released")

    def test_releaseWhileConnectingCancelsAndUnregisters(self):
        self.slot.begin(self.attempt)
        self.effects.fire("register", LEASE)
        connecting = self.effects.pending["connectStandby"]
        self.successResultOf(self.slot.release())
        self.assertTrue(connecting.called)  # cancelled
        self.assertEqual(self.effects.events[-1], ("unregister", "B", "wireguard"))

    def test_releaseWhenReadyTakesTheTunnelDown(self):
        self.ready()
        self.successResultOf(self.slot.release())
        self.assertEqual(self.effects.events[-2:], [
            ("disconnect", "B", "wireguard"), ("unregister", "B", "wireguard")])

    def test_releaseKeepingTheLease(self):
        self.ready()
        self.successResultOf(self.slot.release(keepLease=True))
        self.assertEqual(self.effects.events[-1], ("disconnect", "B", "wireguard"))

    def test_lateReportsAreIgnored(self):
        session = self.ready()
        self.successResultOf(self.slot.release())
        self.slot.lost(session, "late")
        self.assertEqual(self.slot.describe()["state"], "released")


class PromotionTests(SynchronousTestCase):
    """The real agent and client machine, with standbys."""

    def setUp(self):
        self.clock = Clock()
        self.effects = StandbyEffects()
        self.standbys = Standbys(self.clock, self.effects, 1, self.effects.planStandby,
                                 backoff=Backoff(1, 8))
        self.agent = ClientAgent(self.clock, self.effects, QualityHistory(self.clock),
                                 SwitchPolicy(margin=0.2, hold=30), rescanInterval=600,
                                 standbys=self.standbys)
        self.gateways = [ranked("A", 0.1), ranked("B", 0.5), ranked("C", 0.9)]
        self.effects.lastRanked = self.gateways

    def online(self):
        # goOnline fires the first register, connect and verify (the
        # serving session's) and forgets the events; the standby's
        # registration followed at once.
        session = goOnline(self.agent, self.effects, self.gateways)
        [slot] = self.standbys.describe()["standbys"]
        self.assertEqual((slot["state"], slot["attempt"]["gateway"]), ("registering", "B"))
        return session

    def standbyReady(self):
        self.effects.fire("register", LEASE)
        self.effects.fire("connectStandby", Connection())
        self.effects.fire("verify", 0.02)
        return self.standbys.best()

    def test_onlineMakesAStandbyWithTheNextGateway(self):
        self.online()
        standby = self.standbyReady()
        self.assertEqual(standby.step.gatewayId, "B")
        status = self.agent.describe()["standby"]
        self.assertEqual([s["state"] for s in status["standbys"]], ["ready"])
        self.assertEqual(status["standbys"][0]["standby"]["gateway"], "B")

    def test_aFailoverIsARouteChange(self):
        """
        The serving gateway is lost: the ready standby takes over (its
        route first), the old session ends, and no registration happens
        on the way; then a new standby is made with the next gateway.
        """
        session = self.online()
        standby = self.standbyReady()
        del self.effects.events[:]
        self.agent.lost(session, "3 health probes unanswered")
        self.assertEqual(self.agent.machine.describe()["state"], "online")
        self.assertIs(self.agent.core.session, standby)
        self.assertEqual(self.effects.events[:5], [
            ("activate", "B"), ("failure", "A"), ("endSession", "A", "wireguard"),
            ("unregister", "A", "wireguard"), ("startSession", "B", "wireguard")])
        # The next standby: the best gateway but the serving one (here A,
        # which these fake rankings do not cool down).
        self.assertEqual(self.effects.events[5:], [("register", "A", "wireguard")])
        events = [e["transition"] for e in self.agent.describe()["transitions"]]
        self.assertIn("online --promote--> promoting (3 health probes unanswered; the standby "
                      "via B (10.0.0.66) takes over)", events)
        self.assertIn("promoting --promoted--> online", events)
        self.assertEqual(self.effects.announced[-1],
                         ("failover", "A", "3 health probes unanswered", "B"))

    def test_noStandbyIsMadeWhilePromoting(self):
        """
        The next standby waits until the promoted one serves: its gateway
        (B) is not asked for a second lease meanwhile.
        """
        session = self.online()
        self.standbyReady()
        self.effects.activate = lambda standby: defer.Deferred()  # a slow route change
        self.agent.lost(session, "no answer")
        self.assertEqual(self.agent.machine.describe()["state"], "promoting")
        before = len(self.effects.events)
        self.standbys.fill()
        self.assertEqual(self.effects.events[before:], [])
        self.assertEqual(self.standbys.servingId, "B")

    def test_withoutAReadyStandbyTheUsualFailover(self):
        session = self.online()
        del self.effects.events[:]
        self.agent.lost(session, "no answer")
        # The standby still registering is released; B is registered with.
        self.assertEqual(self.agent.machine.describe()["state"], "registering")
        self.assertEqual(self.effects.events[0], ("register", "B", "wireguard"))
        self.assertEqual(self.standbys.slots, [])

    def test_aStandbyGoneBadIsReplacedAfterABackoff(self):
        self.online()
        standby = self.standbyReady()
        del self.effects.events[:]
        self.agent.lost(standby, "3 health probes unanswered")
        self.assertEqual(self.effects.events, [
            ("failure", "B"), ("disconnect", "B", "wireguard"), ("unregister", "B", "wireguard")])
        self.assertEqual(self.agent.machine.describe()["state"], "online")  # untouched
        self.assertEqual(self.standbys.describe()["next_try_in"], 1.0)
        self.clock.advance(1)
        self.assertEqual(self.effects.events[-1], ("register", "B", "wireguard"))

    def test_aSilentGatewayAnsweringAgainIsTriedAtOnce(self):
        """
        A standby whose gateway did not answer its registration: that
        gateway is watched, and once it answers again (it came back) a
        standby is made with it without waiting for the backoff, though
        not sooner than a second after the last try.
        """
        self.standbys.backoff = Backoff(8, 8)
        self.online()
        self.effects.fail("register", defer.TimeoutError())
        [(gid, watch)] = self.effects.watched
        self.assertEqual((gid, self.standbys.describe()["next_try_in"]), ("B", 8.0))
        self.clock.advance(0.5)
        watch.callback(ranked("B", 0.5).seen)
        self.assertEqual(self.standbys.describe()["next_try_in"], 0.5)
        self.clock.advance(0.5)
        self.assertEqual(self.effects.events[-1], ("register", "B", "wireguard"))
        # What it answered is planned with (maybe at an address the last
        # scan did not know it by).
        self.assertEqual([seen.offer.gatewayId for seen in self.effects.fresh], ["B"])

    def test_aStandbyLostByItsProbesIsWatchedToo(self):
        self.online()
        standby = self.standbyReady()
        self.agent.lost(standby, Reason(PROBES, "3 health probes unanswered"))
        self.assertEqual([gid for gid, _ in self.effects.watched], ["B"])
        self.clock.advance(1)  # the backoff: tried again, the watch ends
        self.assertTrue(self.effects.watched[0][1].called)

    def test_aRouteChangeCutsTheBackoffShort(self):
        self.online()
        self.effects.fail("register", protocol.RPCError(protocol.GATEWAY_FULL, "full"))
        self.clock.advance(1)  # B again
        self.effects.fail("register", protocol.RPCError(protocol.GATEWAY_FULL, "full"))
        self.assertEqual(self.standbys.describe()["next_try_in"], 2.0)
        before = len(self.effects.events)
        self.agent.routesChanged()
        self.assertIn(("register", "B", "wireguard"), self.effects.events[before:])

    def test_standbyProbeReportsDoNotMoveTheClient(self):
        self.online()
        standby = self.standbyReady()
        self.agent.probeMissed(standby, 1)
        self.assertEqual(self.agent.machine.describe()["state"], "online")

    def test_aStandbysProbesFeedItsGatewaysHistory(self):
        self.online()
        standby = self.standbyReady()
        self.assertNotIn("B", self.agent.history)
        self.agent.probeSample(standby, 0.02)
        self.assertIn("B", self.agent.history)

    def test_blockingTheStandbysGatewayReleasesIt(self):
        self.online()
        self.standbyReady()
        del self.effects.events[:]
        self.agent.block("B")
        self.assertIn(("disconnect", "B", "wireguard"), self.effects.events)
        self.assertIn(("unregister", "B", "wireguard"), self.effects.events)
        self.assertEqual(self.effects.events[-1], ("register", "C", "wireguard"))
        self.assertEqual(self.agent.machine.describe()["state"], "online")

    def test_stopReleasesTheStandbys(self):
        self.online()
        self.standbyReady()
        del self.effects.events[:]
        self.successResultOf(self.agent.stop())
        self.assertIn(("disconnect", "B", "wireguard"), self.effects.events)
        self.assertIn(("unregister", "B", "wireguard"), self.effects.events)
        self.assertEqual(self.standbys.slots, [])

    def test_aSwitchReleasesTheStandbysButTheLeaseOfItsGateway(self):
        """
        A switch to B, the standby's gateway: the standby goes, but not
        its lease (B answers the client's registration with it: releasing
        it would take the new session's lease away).
        """
        session = self.online()
        self.standbyReady()
        del self.effects.events[:]
        self.agent.machine.switch(session, buildPlan(self.gateways, exclude={"A"}), "better")
        self.assertEqual(self.standbys.slots, [])
        self.assertIn(("disconnect", "B", "wireguard"), self.effects.events)
        self.assertNotIn(("unregister", "B", "wireguard"), self.effects.events)
        self.assertIn(("unregister", "A", "wireguard"), self.effects.events)


class StatusTests(SynchronousTestCase):
    def test_mnigsctlStatusShowsTheStandby(self):
        from mnigs.cli.ctl import formatStatus

        text = formatStatus({"state": "online", "reason": "", "standby": {
            "count": 1, "standbys": [{"state": "ready", "reason": "", "standby": {
                "name": "gwB", "gateway": "ed25519:y", "host": "10.0.0.2", "method": "wireguard",
                "device": "mnigs-c1", "health": {"state": "probing"}}}]}})
        self.assertIn("standby: gwB (ed25519:y) at 10.0.0.2 via wireguard through mnigs-c1: "
                      "ready, health probing", text)
        text = formatStatus({"state": "online", "reason": "", "standby": {
            "count": 1, "standbys": [], "waiting_for": "no other usable gateway for a standby",
            "next_try_in": 4.0}})
        self.assertIn("standby: none ready of 1 (no other usable gateway for a standby; next "
                      "try in 4.0s)", text)


class MetricsTests(SynchronousTestCase):
    def test_aPromotionIsAFailoverAndItsOutageIsCounted(self):
        from mnigs.client.machine import Transition
        from mnigs.client.metrics import ClientMetrics
        from mnigs.client.reasons import PROBES, Reason

        metrics = ClientMetrics()
        promote = Transition(10.0, "degraded", "promote", "promoting")
        metrics._degradedSince = 9.0  # the first unanswered probe round
        metrics.transitioned(promote)
        promote.reason = Reason(PROBES, "3 probes unanswered; the standby via gwB takes over")
        metrics.explained(promote)
        metrics.transitioned(Transition(10.05, "promoting", "promoted", "online"))
        sample = metrics.registry.get_sample_value
        self.assertEqual(sample("mnigs_client_failovers_total", {"reason": PROBES}), 1)
        self.assertEqual(sample("mnigs_client_outage_seconds_count"), 1)
        self.assertAlmostEqual(sample("mnigs_client_outage_seconds_sum"), 1.05)
        self.assertEqual(sample("mnigs_client_state", {"mnigs_client_state": "online"}), 1)


class InterfaceTests(SynchronousTestCase):
    def test_bothProvideIStandbys(self):
        from zope.interface.verify import verifyObject

        from mnigs.client.machine import IStandbys, NoStandbys
        verifyObject(IStandbys, NoStandbys())
        verifyObject(IStandbys, Standbys(Clock(), StandbyEffects(), 1, lambda *a: None))
