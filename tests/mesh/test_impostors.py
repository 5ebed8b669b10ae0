"""
Protocol version 2 against a real attacker on the mesh: real babeld,
mnigs-server (wireguard-go, nftables) and mnigs-client daemons in network
namespaces, and an attacker node running its own code
(L{tests.mesh.rogue_gateway}, C{mnigs-rpc} with its own key).  Packets
are counted with nftables counters where they would arrive.

  - Knowing a victim's client id (and even its lease id) takes nothing:
    register, renew, unregister and re-key attempts all fail, and the
    victim keeps its lease and its traffic.
  - A rogue nearer than the pinned gateway, replaying its signed offer and
    answering register with its own WireGuard key, gets no packet: the
    client refuses the lease and says why.
  - A node on the way to the gateway that answers C{gateway.info} in its
    place with an unsigned or forged C{available: false} moves nobody.
"""

import json
import os
import sys

from tests.mesh.daemontest import DaemonMeshTestCase
from tests.mesh.gatewayproc import rpc
from tests.mesh.harness import INTERNET_HOST, waitUntil

ROGUE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rogue_gateway.py")
BAD_PROOF, WRONG_TOKEN = 1007, 1004


def countInto(node, table, rules):
    """
    Named nftables counters on C{node}: C{rules} maps a counter name to
    (hook, match) and every packet the match takes at that hook is counted
    (and let through).
    """
    chains = {}
    for name, (hook, match) in rules.items():
        chains.setdefault(hook, []).append(f'{match} counter name "{name}"')
    text = [f"table inet {table} {{"]
    text += [f"  counter {name} {{ }}" for name in rules]
    for hook, lines in chains.items():
        text.append(f"  chain {hook} {{ type filter hook {hook} priority -290; policy accept;")
        text += [f"    {line}" for line in lines]
        text.append("  }")
    text.append("}")
    node.run(["nft", "-f", "-"], input="\n".join(text) + "\n")


def packets(node, table, name):
    answer = json.loads(node.run(["nft", "-j", "list", "counter", "inet", table, name]).stdout)
    return next(item["counter"]["packets"] for item in answer["nftables"] if "counter" in item)


class Rogue:
    """The attacker's server (L{tests.mesh.rogue_gateway}) in C{node}."""

    def __init__(self, node, port, upstream, mode):
        self.state = os.path.join(node.tmp, f"rogue-{port}.json")
        self.process = node.spawn([sys.executable, ROGUE, str(port), upstream, self.state, mode],
                                  log=os.path.join(node.tmp, f"rogue-{port}.log"))
        waitUntil(lambda: self.calls().get("started"), 10, message="the rogue server")

    def turn(self, mode):
        with open(self.state + ".mode.tmp", "w") as f:
            f.write(mode)
        os.replace(self.state + ".mode.tmp", self.state + ".mode")

    def calls(self):
        try:
            with open(self.state) as f:
                return json.load(f)["calls"]
        except (FileNotFoundError, ValueError):
            return {}


class ImpostorTests(DaemonMeshTestCase):

    def test_knowingTheClientIdTakesNothing(self):
        """
        client - r1 - gw, thief - gw: the victim is online; the thief knows
        its client id and lease id (say from a status page) and tries to
        take, change, renew or release the lease with them.  Every attempt
        fails, the lease stays the victim's, and all of the victim's pings
        reach the internet host (counted there).
        """
        client, r1, gw, thief = self.mesh.gatewayWithThief()
        gateway = self.gateway(gw)
        victim = self.clientProcess(client, methods={"order": ["wireguard"]}).start()
        victim.waitState("online", 30, gateway="gw")
        [lease] = gateway.status()["leases"]
        victimId, leaseId = lease["client"], lease["id"]
        wgKey = "HxwdHhscGRoXFBUWExAREg8MDQ4LCAkKBwQFBgMAAQI="

        attempts = {
            # The victim's id, the thief's own WireGuard key and proof.
            "register wireguard": rpc(thief, gw.address, "gateway.register", {
                "client": {"id": victimId}, "method": "wireguard",
                "params": {"public_key": wgKey}}, key="thief"),
            "register forward": rpc(thief, gw.address, "gateway.register", {
                "client": {"id": victimId}, "method": "forward"}, key="thief"),
            # No key at all: a made-up proof over the current offer.
            "register made-up proof": rpc(thief, gw.address, "gateway.register", {
                "client": {"id": victimId}, "method": "wireguard",
                "params": {"public_key": wgKey}, "gateway": gateway.info()["gateway"]["id"],
                "nonce": gateway.info()["nonce"], "proof": "A" * 86 + "=="}, key=None),
            "renew": rpc(thief, gw.address, "gateway.renew",
                         {"lease": leaseId, "token": "guessed-token-0123456789abcdef"}),
            "unregister": rpc(thief, gw.address, "gateway.unregister",
                              {"lease": leaseId, "token": "guessed-token-0123456789abcdef"}),
        }
        self.assertEqual(attempts, {
            "register wireguard": ("error", BAD_PROOF), "register forward": ("error", BAD_PROOF),
            "register made-up proof": ("error", BAD_PROOF),
            "renew": ("error", WRONG_TOKEN), "unregister": ("error", WRONG_TOKEN)})

        [after] = gateway.status()["leases"]
        self.assertEqual((after["id"], after["client"], after["host"]),
                         (leaseId, victimId, lease["host"]))
        self.assertEqual(victim.status()["state"], "online")
        # The victim's traffic: every ping reaches the internet host (the
        # gateway NATs it to its uplink address).
        # 321 bytes of payload tell these pings from the health probes.
        inet = gw.internet
        countInto(inet, "count", {"echo": ("input", "icmp type echo-request ip length 349")})
        result = client.run(["ping", "-n", "-c", "20", "-i", "0.1", "-W", "1", "-s", "321",
                             INTERNET_HOST], check=False)
        self.assertIn("20 received", result.stdout)
        self.assertEqual(packets(inet, "count", "echo"), 20)
        for daemon in (gateway, victim):
            with open(daemon.logPath) as f:
                self.assertNotIn(victimId, f.read(), f"a client id in {daemon.logPath}")
        keyFile = os.path.join(victim.dir, "state", "identity.pem")
        self.assertEqual(os.stat(keyFile).st_mode & 0o777, 0o600)

    def test_rogueReplayingThePinnedOffersGetsNoPacket(self):
        """
        client - rogue, and client - r1 - gw: the rogue is nearer and
        answers gateway.info with gw's real signed offer, and register with
        a lease of its own (its WireGuard key and endpoint).  The client,
        pinned to gw, refuses that lease and says why, tries gw at gw's own
        (farther) address and goes online there, and sends the rogue no
        WireGuard packet and nothing to forward.
        """
        m = self.mesh
        client, rogue, r1, gw = (m.node(n) for n in ("client", "rogue", "r1", "gw"))
        [clientToRogue, rogueSide] = m.link(client, rogue)
        m.link(client, r1)
        m.link(r1, gw)
        m.internet(gw)
        m.startBabel()
        m.waitConverged()
        gateway = self.gateway(gw)
        gid = gateway.info()["gateway"]["id"]
        countInto(rogue, "count", {
            "wireguard": ("input", "udp dport 51820"),
            "forwarded": ("forward", f'iifname "{rogueSide}"'),
        })
        server = Rogue(rogue, 8150, gw.address, "replay")
        c = self.clientProcess(client, policy={"pinned": [gid], "switch_hold": 3600.0}).start()
        status = c.waitState("online", 40, gateway="gw")
        rogueAddresses = {rogue.address} | {a.split("/")[0]
                                            for a in rogue.interfaceAddresses.values()}
        self.assertNotIn(status["current"]["host"], rogueAddresses)
        self.assertGreaterEqual(server.calls().get("gateway.register", 0), 1)
        with open(c.logPath) as f:
            log = f.read()
        self.assertIn("lease refused: lease signature does not verify with the key of the offer",
                      log)
        self.assertTrue(any(f"with gw ({a})" in log for a in rogueAddresses), c.logTail())
        # ... and in its status: the transition away from the rogue's answer.
        self.assertIn("lease signature does not verify", json.dumps(status["transitions"]))
        self.assertTrue(client.ping(INTERNET_HOST))
        self.assertEqual((packets(rogue, "count", "wireguard"),
                          packets(rogue, "count", "forwarded")), (0, 0))

    def forgedUnavailable(self, mode):
        """
        client - r - gw: every RPC call of the client to port 8150 goes
        to the attacker's server on r (nftables redirects it), which passes
        it on to gw until the client is online; then it answers the
        client's gateway.info calls to gw itself with C{available: false},
        unsigned or forged.  The client stays online through gw and logs
        why it ignores them.
        """
        m = self.mesh
        client, r, gw = (m.node(n) for n in ("client", "r", "gw"))
        [_, rFromClient] = m.link(client, r)
        m.link(r, gw)
        m.internet(gw)
        m.startBabel()
        m.waitConverged()
        self.gateway(gw)
        server = Rogue(r, 18150, gw.address, "proxy")
        r.run(["nft", "-f", "-"], input=f"""
table ip intercept {{
  chain prerouting {{ type nat hook prerouting priority -100;
    iifname "{rFromClient}" tcp dport 8150 redirect to :18150
  }}
}}
""")
        c = self.clientProcess(client, health={"beyond": [INTERNET_HOST], "offer_interval": 1.0},
                               methods={"order": ["wireguard"]}).start()
        c.waitState("online", 30, gateway="gw")
        self.assertGreaterEqual(server.calls().get("gateway.register", 0), 1)
        server.turn(mode)
        before = server.calls().get("gateway.info", 0)
        waitUntil(lambda: server.calls().get("gateway.info", 0) >= before + 5, 30, interval=0.2,
                  message="the client asking the attacker for offers")
        status = c.status()
        self.assertEqual((status["state"], status["current"]["name"]), ("online", "gw"),
                         c.logTail())
        self.assertTrue(client.ping(INTERNET_HOST))
        with open(c.logPath) as f:
            log = f.read()
        self.assertIn("ignoring an offer saying gw (", log)
        self.assertNotIn("the gateway says it is unavailable", log)
        return log

    def test_unsignedUnavailableMovesNobody(self):
        self.assertIn("is unavailable: not signed", self.forgedUnavailable("unsigned"))

    def test_forgedUnavailableMovesNobody(self):
        self.assertIn("is unavailable: signature does not verify",
                      self.forgedUnavailable("forged"))

