"""
The client's controls over its admin socket with real daemons in network
namespaces (babeld, mnigs-server gateways with wireguard-go and nftables,
an internet namespace behind each gateway): C{mnigsctl rescan}, C{use}
(a gateway that refuses leaves the client where it was, pings flowing),
C{why}, C{block}/C{unblock} and C{events}.  Nothing is mocked.
"""

import json
import os
import stat
import time

from mnigs.wireguard.uapi import generatePrivateKey, publicKey
from tests.mesh.daemontest import DaemonMeshTestCase
from tests.mesh.gatewayproc import rpc
from tests.mesh.harness import waitUntil
from tests.mesh.pingtrain import PingTrain


def byName(answer):
    return {g["name"]: g for g in answer["gateways"]}


class ControlTests(DaemonMeshTestCase):

    def client(self, node, standby=1, **policy):
        """
        A client that rescans only when asked (so a test knows what its
        last scan saw) and moves on its own only after an hour; C{standby}
        its standby.count.
        """
        return self.clientProcess(
            node, discovery={"timeout": 1.0, "rescan_interval": 3600.0, "sources": ["babel"]},
            policy=dict({"switch_hold": 3600.0}, **policy), standby={"count": standby}).start()

    def rescanUntil(self, c, condition, message):
        "Ask for rescans until the ranking satisfies C{condition}."
        def scanned():
            c.ctl("rescan")
            return condition(byName(c.ctl("gateways")))
        waitUntil(scanned, 30, interval=1.5, message=message)

    def test_useOfARefusingGatewayStaysThenUseMovesAndWhyCountsDown(self):
        """
        client - r1 - gwA, and r1 - r2 - gwB (max_clients 2).  gwB fills up
        after the client's scan: C{use gwB} is refused by gwB itself, with
        a clear error, and the client stays on gwA without losing a ping.
        After C{rescan} the ranking knows gwB is full: C{use gwB} is
        refused by the policy.  Once gwB has room again C{use gwB} moves
        the client; after C{use -} C{why} shows the nearer gwA waited for,
        with the hysteresis countdown.
        """
        client, gwA, gwB = self.mesh.nearAndFarGateway()
        self.gateway(gwA)
        self.gateway(gwB, terms={"max_clients": 2})
        # No standby: it would hold one of gwB's two places.
        c = self.client(client, standby=0, switch_margin=0.01)
        gwAId = c.waitState("online", 30, gateway="gwA")["current"]["gateway"]
        listed = c.ctl("gateways")
        self.assertEqual(listed["better"], "lower score is better")
        self.assertEqual(listed["current"], gwAId)
        for entry in listed["gateways"]:
            self.assertTrue(entry["usable"], entry)
            self.assertAlmostEqual(sum(entry["score_parts"].values()), entry["score"], places=3)
        code, text = c.ctl("gateways", json_=False)
        self.assertEqual(code, 0)
        self.assertIn("lower score is better", text)

        # gwB fills up behind the client's back (two other clients).
        fillers = []
        for key in ("filler1", "filler2"):
            kind, filler = rpc(gwA, gwB.address, "gateway.register",
                               {"method": "wireguard",
                                "params": {"public_key": publicKey(generatePrivateKey())}},
                               key=key)
            self.assertEqual(kind, "result", filler)
            fillers.append(filler["lease"])
        train = PingTrain(client, count=2000)
        train.waitAnswered(10)
        lease = c.status()["current"]["lease_expires_in"], c.status()["current"]["address"]

        refused = c.ctl("use", "gwB")
        self.assertIn("error", refused)
        self.assertIn("registration with gwB", refused["error"])
        self.assertIn("staying on gwA", refused["error"])
        code, text = c.ctl("use", "gwB", json_=False)
        self.assertEqual(code, 1)
        self.assertRegex(text, r"^error: .*staying on gwA")
        status = c.status()
        self.assertEqual((status["state"], status["current"]["name"]), ("online", "gwA"))
        self.assertEqual(status["current"]["address"], lease[1])
        self.assertGreaterEqual(status["current"]["online_for"], 1)
        _, lost, _ = train.cut()
        self.assertEqual(lost, 0, "pings were lost while gwB refused")

        # The rescan sees gwB full: the policy refuses it before asking.
        self.rescanUntil(c, lambda g: not g["gwB"]["usable"], "gwB full in the ranking")
        self.assertIn("full (2/2 clients)", byName(c.ctl("gateways"))["gwB"]["why_not"])
        refused = c.ctl("use", "gwB")
        self.assertEqual(refused, {"error": "gwB is not usable: full (2/2 clients)"})
        self.assertEqual(c.status()["current"]["name"], "gwA")

        # Room again: use moves the client, for this run.
        # (One leaves: with the client's own lease gwB is full again, and
        # a full current gateway counts as unusable in the ranking.)
        kind, _ = rpc(gwA, gwB.address, "gateway.unregister",
                      {"lease": fillers[0]["id"], "token": fillers[0]["token"]})
        self.assertEqual(kind, "result")
        kind, _ = rpc(gwA, gwB.address, "gateway.unregister",
                      {"lease": fillers[1]["id"], "token": fillers[1]["token"]})
        self.assertEqual(kind, "result")
        self.rescanUntil(c, lambda g: g["gwB"]["usable"], "gwB usable again")
        moved = c.ctl("use", "gwB")
        self.assertEqual((moved.get("name"), moved.get("method")), ("gwB", "wireguard"), moved)
        c.waitState("online", 30, gateway="gwB")
        waitUntil(lambda: client.ping("198.51.100.1", timeout=0.5), 10, message="internet via gwB")
        why = c.ctl("why")
        self.assertEqual(why["current"]["name"], "gwB")
        self.assertIn("mnigsctl use", why["summary"])

        # Given back to the ranking: the nearer gwA is waited for.
        self.assertEqual(c.ctl("use", "-")["chosen"], None)
        c.ctl("rescan")
        waitUntil(lambda: (c.ctl("why")["switch"] or {}).get("name") == "gwA", 20,
                  interval=0.5, message="gwA waited for")
        why = c.ctl("why")
        self.assertGreater(why["switch"]["hold_left_s"], 3500)
        self.assertGreater(why["switch"]["better_by"], 0.01)
        self.assertEqual(c.status()["switch"]["gateway"], gwAId)
        code, text = c.ctl("why", json_=False)
        self.assertIn("lower score is better", text)
        self.assertRegex(text, r"gwA scores [0-9]+ % \([0-9.]+\) better; the client moves if "
                               r"that holds for 3[0-9]{3}(\.[0-9])? s more")
        self.assertEqual(c.status()["current"]["name"], "gwB")

    def test_blockLeavesTheGatewayAtOnceUnblockAndEventsSayWhy(self):
        """
        C{block gwA} while on it: the client moves to gwB at once; the
        block is not written to the configuration; C{unblock gwA} makes it
        usable again (the client stays, by the switch hold); C{events}
        lists the transitions and decisions with their reasons.
        """
        client, gwA, gwB = self.mesh.nearAndFarGateway()
        self.gateway(gwA)
        self.gateway(gwB)
        c = self.client(client)
        c.waitState("online", 30, gateway="gwA")
        with open(c.configPath) as f:
            config = f.read()
        started = time.monotonic()
        blocked = c.ctl("block", "gwA")
        self.assertEqual((blocked["name"], blocked["left"], blocked["persisted"]),
                         ("gwA", True, False))
        c.waitState("online", 30, gateway="gwB")
        self.assertLess(time.monotonic() - started, 15)
        waitUntil(lambda: client.ping("198.51.100.1", timeout=0.5), 10, message="internet via gwB")
        gateways = c.ctl("gateways")
        self.assertEqual(byName(gateways)["gwA"]["why_not"],
                         "blocked at run time (mnigsctl unblock)")
        self.assertEqual(len(gateways["blocked_now"]), 1)
        code, text = c.ctl("gateways", json_=False)
        self.assertIn("blocked at run time (until unblock or a restart)", text)
        with open(c.configPath) as f:
            self.assertEqual(f.read(), config)

        code, text = c.ctl("unblock", "gwA", json_=False)
        self.assertEqual(code, 0, text)
        self.assertIn("unblocked", text)
        self.assertTrue(byName(c.ctl("gateways"))["gwA"]["usable"])
        self.assertEqual(c.status()["current"]["name"], "gwB")

        events = c.ctl("events")["events"]
        said = [(e["event"], e["reason"]) for e in events]
        self.assertIn(("block gwA", "mnigsctl block, until unblock or a restart"), said)
        self.assertTrue(any(e["event"].startswith("unblock ") for e in events), said)
        self.assertIn("online --switch--> registering", [e["event"] for e in events])
        self.assertEqual([e["event"] for e in events][-1].split()[0], "unblock")
        agos = [e["ago"] for e in events]
        self.assertEqual(agos, sorted(agos, reverse=True))
        code, text = c.ctl("events", json_=False)
        self.assertIn("block gwA  (mnigsctl block, until unblock or a restart)", text)

    def test_hooksOnDegradedAndFailover(self):
        """
        The client's hooks get the documented argument vectors: gwA's
        uplink stops forwarding (gwA itself still answers), so the session
        first degrades (a probe round unanswered) and then fails over to
        gwB; stopping the client runs the offline hook, and its shutdown
        logs nothing critical (a hook ending during it once made Twisted
        reap a process twice).
        """
        client, gwA, gwB = self.mesh.nearAndFarGateway()
        self.gateway(gwA)
        self.gateway(gwB)
        record = os.path.join(client.tmp, "hooks.log")
        hook = os.path.join(client.tmp, "hook.py")
        with open(hook, "w") as f:
            f.write("#!/usr/bin/python3\nimport json, sys\n"
                    f"with open({record!r}, 'a') as f:\n"
                    "    f.write(json.dumps(sys.argv[1:]) + '\\n')\n")
        os.chmod(hook, stat.S_IRWXU)
        c = self.clientProcess(client, hooks={event: hook for event in
                                              ("online", "offline", "failover", "degraded")})
        c.start()
        first = c.waitState("online", 30, gateway="gwA")["current"]
        gwA.run(["nft", "-f", "-"], input="""
table inet mnigs_chaos {
  chain forward { type filter hook forward priority -300; policy drop; }
}
""")
        second = c.waitState("online", 30, gateway="gwB")["current"]

        def calls():
            try:
                with open(record) as f:
                    return [json.loads(line) for line in f]
            except FileNotFoundError:
                return []
        waitUntil(lambda: [call[0] for call in calls()][-1:] == ["online"]
                  and len(calls()) >= 5, 10, message="the hooks of the failover")
        byEvent = {}
        for call in calls():
            byEvent.setdefault(call[0], []).append(call)
        onA = [first["gateway"], first["host"], "wireguard", first["address"], "gwA"]
        self.assertEqual(byEvent["online"], [["online"] + onA + [""],
                                             ["online", second["gateway"], second["host"],
                                              "wireguard", second["address"], "gwB", ""]])
        self.assertEqual(byEvent["degraded"][0], ["degraded"] + onA
                         + ["1 health probe(s) unanswered"])
        [failover] = byEvent["failover"]
        self.assertEqual(failover[:6], ["failover"] + onA)
        self.assertRegex(failover[6], r"^the Internet beyond 100\.64\.0\.1 does not answer "
                                      r"\(the gateway does\)")
        self.assertEqual(failover[7:], [second["gateway"], "gwB", second["host"], "wireguard"])
        self.assertEqual(byEvent["offline"], [["offline"] + onA + [""]])
        c.stop()  # fails on a critical line in the log
        waitUntil(lambda: len(calls()) == 6, 10, message="the offline hook of the stop")
        self.assertEqual(calls()[-1], ["offline", second["gateway"], second["host"], "wireguard",
                                       second["address"], "gwB", ""])
