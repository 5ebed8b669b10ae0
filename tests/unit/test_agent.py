"""
The client facade: failover choices, re-registration after a lost lease,
switching with hysteresis on rescans, route changes cutting a backoff
short, and status output.  Real machine, recording fake effects, Clock.
"""

import ipaddress
from dataclasses import replace

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mnigs.client.agent import ClientAgent
from mnigs.client.history import QualityHistory
from mnigs.client.machine import Backoff
from mnigs.client.ranking import Policy, Ranked, Seen, SwitchPolicy
from mnigs.protocol import Offer
from mnigs.routing.candidates import Candidate
from tests.unit.test_client_machine import LEASE, Connection, RecordingEffects


def offer(gid, available=True, issuedAt=0):
    return Offer(gatewayId=gid, name=gid, available=available, maxClients=10, clients=1,
                 leaseSeconds=600, fee=None, bandwidthDown=None, bandwidthUp=None,
                 methods=({"type": "wireguard"},), issuedAt=issuedAt, raw={})


def ranked(gid, score, available=True, cooling="", issuedAt=0):
    return Ranked(Seen(offer(gid, available, issuedAt), f"10.0.0.{ord(gid[0])}", 8150, 1.0, 0.01),
                  score, available, "" if available else "not available", ("wireguard",), cooling)


class AgentEffects(RecordingEffects):
    sources = ()

    def __init__(self):
        super().__init__()
        self.sessionsChecked = []
        self.policy = Policy(methods=("wireguard",))

    def rerank(self):
        """
        The last ranking as the policy's run-time steering sees it (the
        scores stay as the test gave them): blocked gateways unusable, the
        chosen one first, as L{mnigs.client.ranking.rank} orders them.
        """
        policy = self.policy
        again = [replace(r, usable=False, whyNot="blocked at run time (mnigsctl unblock)")
                 if r.gatewayId in policy.blockedNow else replace(r, chosen=r.gatewayId == policy.chosen)
                 for r in self.lastRanked]
        again.sort(key=lambda r: (not r.usable, bool(r.cooling), not r.chosen, r.score, r.gatewayId))
        return again

    def scan(self, early=False):
        d = super().scan()
        d.addCallback(self._remember)
        return d

    def _remember(self, ranked):
        self.lastRanked = ranked
        return ranked

    def checkSession(self, session):
        self.sessionsChecked.append(session.step.gatewayId)


def goOnline(agent, effects, gateways):
    "Start C{agent} and take it online through the first of C{gateways}; its session."
    agent.start()
    effects.fire("scan", gateways)
    effects.fire("register", LEASE)
    effects.fire("connect", Connection())
    effects.fire("verify", 0.01)
    del effects.events[:]
    return agent.core.session


class AgentTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.effects = AgentEffects()
        self.history = QualityHistory(self.clock)
        self.agent = ClientAgent(self.clock, self.effects, self.history,
                                 SwitchPolicy(margin=0.2, hold=30), rescanInterval=10,
                                 backoff=Backoff(5, 60))
        self.machine = self.agent.machine

    def goOnline(self, gateways):
        return goOnline(self.agent, self.effects, gateways)

    def assertMovedTo(self, gid, failed=True):
        """
        The session with A was left for C{gid}: entering registering
        registered with it, then the session ended (A's failure noted
        unless the move was a switch) and its lease was released.
        """
        left = [("failure", "A")] if failed else []
        self.assertEqual(self.effects.events[-3 - len(left):],
                         [("register", gid, "wireguard")] + left
                         + [("endSession", "A", "wireguard"), ("unregister", "A", "wireguard")])

    def assertPlannedMoveTo(self, gid):
        """
        A planned move to C{gid}: it is asked for a lease while the
        session with A goes on; once granted (this method cannot hold a
        second tunnel: break before make) A's session ends, not as a
        failure, and its lease is released.
        """
        self.assertEqual(self.machine.describe()["state"], "moving")
        self.assertEqual(self.effects.events[-1], ("register", gid, "wireguard"))
        self.effects.fire("register", LEASE)
        self.assertEqual(self.effects.events[-3:], [
            ("endSession", "A", "wireguard"), ("connect", gid, "wireguard"),
            ("unregister", "A", "wireguard")])
        self.assertNotIn(("failure", "A"), self.effects.events)

    def test_lostFailsOverToTheNextGateway(self):
        session = self.goOnline([ranked("A", 0.1), ranked("B", 0.5)])
        self.agent.lost(session, "no answer")
        self.assertMovedTo("B")

    def test_lostFailsOverAtOnceToAGatewayStillCoolingDown(self):
        """
        The other gateway failed a few seconds ago and is cooling down: it
        is the only one left, so it is tried at once (no search, no backoff).
        """
        session = self.goOnline([ranked("A", 0.1), ranked("B", 0.5, cooling="failed 5s ago")])
        self.effects.lastRanked = [ranked("A", 0.1), ranked("B", 0.5, cooling="failed 5s ago")]
        self.agent.lost(session, "no answer")
        self.assertMovedTo("B")

    def test_lostWithNoAlternativeSearches(self):
        session = self.goOnline([ranked("A", 0.1)])
        self.agent.lost(session, "no answer")
        self.assertEqual(self.machine.describe()["state"], "searching")

    def test_leaseLostRegistersAgainWithTheSameGatewayFirst(self):
        session = self.goOnline([ranked("A", 0.1), ranked("B", 0.5)])
        self.agent.leaseLost(session, "1003")
        self.assertMovedTo("A")

    def test_staleSessionEventsIgnored(self):
        session = self.goOnline([ranked("A", 0.1), ranked("B", 0.5)])
        self.agent.lost(session, "no answer")
        count = len(self.effects.events)
        self.agent.lost(session, "again")
        self.agent.probeMissed(session, 1)
        self.assertEqual(len(self.effects.events), count)

    def test_switchOnlyAfterTheHold(self):
        self.goOnline([ranked("A", 0.5), ranked("B", 0.6)])
        better = [ranked("B", 0.1), ranked("A", 0.5)]
        for second in range(0, 31, 10):
            self.clock.advance(10)  # the rescan loop fires
            self.assertEqual(self.effects.events[-1], ("scan",))
            if second < 30:
                self.effects.fire("scan", better)
                self.assertEqual(self.machine.describe()["state"], "online", second)
        self.effects.fire("scan", better)
        self.assertPlannedMoveTo("B")

    def test_marginTooSmallNeverSwitches(self):
        self.goOnline([ranked("A", 0.5), ranked("B", 0.6)])
        for _ in range(10):
            self.clock.advance(10)
            self.effects.fire("scan", [ranked("B", 0.4), ranked("A", 0.5)])
        self.assertEqual(self.machine.describe()["state"], "online")

    def test_rescanSeesCurrentGatewayUnavailable(self):
        self.goOnline([ranked("A", 0.1), ranked("B", 0.5)])
        self.clock.advance(10)
        self.effects.fire("scan", [ranked("A", 0.1, available=False), ranked("B", 0.5)])
        self.assertPlannedMoveTo("B")

    def test_rescanIgnoresAReplayedOlderUnavailableOffer(self):
        """
        A signed C{available: false} older than the offer the session
        registered from (replayed by a nearer node) moves nobody.
        """
        self.goOnline([ranked("A", 0.1, issuedAt=100), ranked("B", 0.5)])
        self.clock.advance(10)
        self.effects.fire("scan", [ranked("A", 0.1, available=False, issuedAt=50),
                                   ranked("B", 0.5)])
        self.assertEqual(self.machine.describe()["state"], "online")
        self.assertEqual(self.effects.events, [("scan",)])

    def test_policyForbiddingTheCurrentGatewayMovesAtOnce(self):
        self.goOnline([ranked("A", 0.1), ranked("B", 0.5)])
        # A config reload blocked A: ranked again, it is no longer usable.
        self.effects.lastRanked = [ranked("B", 0.5), ranked("A", 0.1, available=False)]
        self.agent.policyChanged()
        self.assertMovedTo("B", failed=False)

    def test_policyChangeKeepsAnAllowedGateway(self):
        self.goOnline([ranked("A", 0.1), ranked("B", 0.5)])
        self.effects.lastRanked = [ranked("B", 0.05), ranked("A", 0.1)]
        self.agent.policyChanged()
        self.assertEqual(self.effects.events, [])
        self.assertEqual(self.machine.describe()["state"], "online")

    def test_routeChangeEndsTheBackoff(self):
        self.agent.start()
        self.effects.fire("scan", [])
        self.assertEqual(self.machine.describe()["state"], "waiting")
        self.agent.routesChanged()
        self.assertEqual(self.machine.describe()["state"], "searching")

    def test_routeChangeChecksTheSession(self):
        self.goOnline([ranked("A", 0.1)])
        self.agent.routesChanged()
        self.assertEqual(self.effects.sessionsChecked, ["A"])

    def test_statusListsGateways(self):
        self.goOnline([ranked("A", 0.1), ranked("B", 0.5, available=False)])
        status = self.agent.describe()
        self.assertEqual(status["state"], "online")
        self.assertEqual([(g["name"], g["rank"], g["usable"]) for g in status["gateways"]],
                         [("A", 1, True), ("B", None, False)])
        self.assertEqual(status["current"]["name"], "A")

    def test_statusSaysHowLongInTheStateAndDrawsTheMesh(self):
        """
        For the status page: the seconds since the last change of state
        (not since the last transition: a loop that gives a reason is one
        too), and the last scan's mesh with the current gateway marked.
        """
        self.effects.lastCandidates = [
            Candidate(ipaddress.ip_address("10.0.0.65"), 96.0, "babel", "fe80::1", "m0"),
            Candidate(ipaddress.ip_address("10.0.0.66"), 192.0, "babel", "fe80::1", "m0")]
        session = self.goOnline([ranked("A", 0.1), ranked("B", 0.5)])
        self.clock.advance(7)
        self.agent.probeMissed(session, 1)
        self.clock.advance(2)
        self.agent.probeMissed(session, 2)
        self.clock.advance(0.5)
        status = self.agent.describe()
        self.assertEqual((status["state"], status["state_for_s"]), ("degraded", 2.5))
        gateways = {n["id"]: (n["label"], n["current"]) for n in status["mesh"]["nodes"]
                    if n["kind"] == "gateway"}
        self.assertEqual(gateways, {"10.0.0.65": ("A", True), "10.0.0.66": ("B", False)})
        self.assertEqual([(e["from"], e["to"]) for e in status["mesh"]["edges"]],
                         [("self", "fe80::1%m0"), ("fe80::1%m0", "10.0.0.65"),
                          ("fe80::1%m0", "10.0.0.66")])

    def test_statusShowsTheRecentTransitions(self):
        session = self.goOnline([ranked("A", 0.1), ranked("B", 0.5)])
        self.clock.advance(3)
        self.agent.probeMissed(session, 1)
        self.clock.advance(1.5)
        status = self.agent.describe()
        self.assertEqual(status["transitions"][-1], {
            "at": 3, "ago": 1.5,
            "transition": "online --probeMissed--> degraded (1 health probe(s) unanswered)"})
        self.assertEqual([t["transition"] for t in status["transitions"]][:2],
                         ["idle --start--> searching", "searching --scanned--> registering"])
        from mnigs.cli.ctl import formatStatus
        text = formatStatus(status)
        self.assertIn("recent transitions (oldest first):\n  4.5s ago  idle --start--> searching",
                      text)
        self.assertIn("\n  1.5s ago  online --probeMissed--> degraded (1 health probe(s) "
                      "unanswered)", text)

    def test_wireConnectsTheWatchersToTheAgent(self):
        """
        The effects' session watchers report to the agent once L{wire}
        connected the two; an agent built over other effects is refused.
        """
        from zope.interface.verify import verifyObject

        from mnigs.client.agent import wire
        from mnigs.client.machine import ISessionReports

        verifyObject(ISessionReports, self.agent)
        wired = []
        self.effects.wire = wired.append
        self.assertIs(wire(self.agent, self.effects), self.agent)
        self.assertEqual(wired, [self.agent])
        self.assertRaises(ValueError, wire, self.agent, AgentEffects())

    def test_stopStopsRescans(self):
        self.goOnline([ranked("A", 0.1)])
        self.successResultOf(self.agent.stop())
        self.assertEqual(self.clock.getDelayedCalls(), [])


class StatusFormatTests(SynchronousTestCase):
    def test_humanClientStatus(self):
        from mnigs.cli.ctl import formatStatus
        text = formatStatus({
            "state": "online", "reason": "",
            "current": {"name": "gwA", "gateway": "ed25519:x", "host": "10.0.0.1",
                        "method": "wireguard", "lease_expires_in": 300},
            "gateways": [{"rank": 1, "name": "gwA", "host": "10.0.0.1", "score": 0.4,
                          "distance": 192, "rtt_ms": 3.2, "load": "1/8",
                          "quality": {"sessions": 2, "failures": 1}},
                         {"rank": None, "name": "gwB", "host": "10.0.0.2", "score": 10.4,
                          "distance": 96, "rtt_ms": 1.0, "load": "8/8", "usable": False,
                          "why_not": "full (8/8 clients)", "quality": {}}]})
        self.assertIn("state: online", text)
        self.assertIn("gwA (ed25519:x) at 10.0.0.1 via wireguard, lease expires in 300s", text)
        self.assertIn("[full (8/8 clients)]", text)
        text = formatStatus({"state": "waiting", "gateways": [],
                             "history": {"ed25519:gone": {"sessions": 3, "failures": 2,
                                                          "last_failure_reason": "no answer"}}})
        self.assertIn("ed25519:gone  sessions 3 failures 2 (last: no answer)", text)

    def test_humanStatusShowsTheDeviceTheHealthAndTheAttempt(self):
        from mnigs.cli.ctl import formatStatus
        text = formatStatus({
            "state": "online", "reason": "",
            "current": {"name": "gwA", "gateway": "ed25519:x", "host": "10.0.0.1",
                        "method": "wireguard", "lease_expires_in": 300, "device": "mnigs-c0",
                        "health": {"state": "probing", "targets": ["9.9.9.9", "100.64.0.1"],
                                   "device": "mnigs-c0", "gateway_answered_ago": 0.12,
                                   "missed": 1, "outstanding": 3}}})
        self.assertIn("gwA (ed25519:x) at 10.0.0.1 via wireguard through mnigs-c0, lease", text)
        self.assertIn("health: probing (9.9.9.9, 100.64.0.1), 1 missed in a row, the gateway "
                      "answered 0.12s ago", text)
        text = formatStatus({"state": "verifying", "reason": "", "attempt": {
            "name": "gwB", "gateway": "ed25519:y", "host": "10.0.0.2", "method": "wireguard",
            "device": "mnigs-c0", "address": "100.64.0.3/32"}})
        self.assertIn("trying: gwB (ed25519:y) at 10.0.0.2 via wireguard through mnigs-c0", text)

    def test_humanServerStatus(self):
        from mnigs.cli.ctl import formatStatus
        text = formatStatus({"state": "unavailable", "name": "gw", "gateway": "ed25519:x",
                             "uplink_problem": "uplink up0 is down", "clients": 1,
                             "max_clients": 8,
                             "leases": [{"id": "L1", "method": "wireguard", "client": "c1",
                                         "host": "10.0.0.9", "address": "100.64.0.2/32",
                                         "expires_in": 42}]})
        self.assertIn("gateway gw (ed25519:x): unavailable", text)
        self.assertIn("uplink problem: uplink up0 is down", text)
        self.assertIn("lease L1 wireguard c1 at 10.0.0.9 -> 100.64.0.2/32 expires in 42s", text)
