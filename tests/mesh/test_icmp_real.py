"""
L{mnigs.system.icmp} and L{mnigs.client.health} on real raw sockets: on the
loopback interface of this host, and between two network namespaces of
their own, where the pinger runs inside one namespace (in a child process:
this test process stays in the root namespace) and nft silences the other.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from twisted.internet import defer
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

import mnigs
from mnigs.system.icmp import Pinger
from tests.mesh._netns import makeNamespace, nsrun, requireRoot, veth
from tests.mesh.commands import withMargin

TOP = str(Path(mnigs.__file__).resolve().parent.parent)

# Runs inside a namespace: ping each target `count` times, one after the
# other, and print [[target, rtt-or-None-or-error], ...] as JSON.
PING_SCRIPT = """
import json, sys
from twisted.internet import defer, task
from mnigs.system.icmp import Pinger

@defer.inlineCallbacks
def main(reactor, args):
    pinger = Pinger(reactor, device=args["device"], sourceAddress=args["source"])
    results = []
    for target in args["targets"]:
        for _ in range(args["count"]):
            try:
                results.append([target, (yield pinger.ping(target, args["timeout"]))])
            except Exception as e:
                results.append([target, repr(e)])
    pinger.close()
    sys.stdout.write(json.dumps(results) + "\\n")

task.react(main, [json.loads(sys.argv[1])])
"""

# Runs inside a namespace: monitor the targets with the default timing;
# after four answers silence the peer with nft (the same command the test
# uses) and report when the last answer came and when loss was declared.
MONITOR_SCRIPT = """
import json, subprocess, sys, time
from twisted.internet import defer, task
from mnigs.system.icmp import Pinger
from mnigs.client.health import HealthMonitor

def main(reactor, args):
    done = defer.Deferred()
    report = {"events": []}
    pinger = Pinger(reactor)

    def answered(rtt):
        report["events"].append("answered")
        report["lastAnswer"] = time.monotonic()
        if report["events"].count("answered") == 4:
            subprocess.run(args["silence"], input=args["rules"], text=True, check=True)
            report["silenced"] = time.monotonic()

    def lost(reason):
        report["events"].append("lost")
        report["lost"] = time.monotonic()
        report["reason"] = reason
        done.callback(None)

    monitor = HealthMonitor(reactor, pinger, args["targets"], onAnswered=answered,
                            onMissed=lambda n: report["events"].append("missed %d" % n),
                            onLost=lost)
    monitor.start()
    reactor.callLater(20, lambda: done.called or done.callback(None))

    def finish(_):
        monitor.stop()
        pinger.close()
        sys.stdout.write(json.dumps(report) + "\\n")
    return done.addCallback(finish)

task.react(main, [json.loads(sys.argv[1])])
"""

DROP_ECHO_REQUESTS = """
table inet mnigs_icmp_test {
    chain input {
        type filter hook input priority 0; policy accept;
        icmp type echo-request drop
        icmpv6 type echo-request drop
    }
}
"""


def requireRawSockets(testcase):
    if os.geteuid() != 0:
        reason = "raw ICMP sockets need root"
        if os.environ.get("CI"):
            testcase.fail(reason)
        raise SkipTest(reason)


class LoopbackTests(TestCase):
    """
    The real reactor and real raw sockets, on this host's loopback.
    """

    timeout = 30

    def setUp(self):
        requireRawSockets(self)
        from twisted.internet import reactor
        self.reactor = reactor

    def pinger(self, **kw):
        pinger = Pinger(self.reactor, **kw)
        self.addCleanup(pinger.close)
        return pinger

    @defer.inlineCallbacks
    def test_loopbackAnswers(self):
        pinger = self.pinger()
        for address in ["127.0.0.1", "::1"] * 3:
            rtt = yield pinger.ping(address, 2.0)
            self.assertIsInstance(rtt, float, address)
            self.assertLess(rtt, 2.0)

    @defer.inlineCallbacks
    def test_concurrentPingersKeepTheirOwnReplies(self):
        """
        Every raw ICMP socket sees every echo reply; the identifiers keep
        each Pinger to its own.
        """
        first, second = self.pinger(), self.pinger(device="lo", sourceAddress="127.0.0.1")
        results = yield defer.gatherResults(
            [first.ping("127.0.0.1", 2.0), second.ping("127.0.0.1", 2.0),
             first.ping("::1", 2.0), second.ping("::1", 2.0)])
        self.assertTrue(all(isinstance(rtt, float) for rtt in results), results)
        self.assertEqual((first._pending, second._pending), ({}, {}))


class NamespaceTests(SynchronousTestCase):
    """
    Two namespaces joined by a veth::

        pinger  a0 10.77.0.1/24 fd77::1/64 <---> 10.77.0.2/24 fd77::2/64 b0  peer
    """

    def setUp(self):
        requireRoot(self, "nft")
        self.pingerNs = makeNamespace(self)
        self.peerNs = makeNamespace(self)
        veth(self.pingerNs, "a0", "10.77.0.1/24", self.peerNs, "b0", "10.77.0.2/24")
        nsrun(self.pingerNs, ["ip", "-6", "addr", "add", "fd77::1/64", "dev", "a0"])
        nsrun(self.peerNs, ["ip", "-6", "addr", "add", "fd77::2/64", "dev", "b0"])

    def runInside(self, script, args):
        env = dict(os.environ, PYTHONPATH=TOP)
        result = subprocess.run(
            ["ip", "netns", "exec", self.pingerNs, sys.executable, "-c", script,
             json.dumps(args)],
            capture_output=True, text=True, timeout=60, env=env, cwd=TOP)
        if result.returncode != 0:
            self.fail(f"exit {result.returncode}: {result.stderr}")
        return json.loads(result.stdout.splitlines()[-1])

    def ping(self, targets, count=3, device=None, source=None, timeout=1.0):
        return self.runInside(PING_SCRIPT, {"targets": targets, "count": count,
                                            "device": device, "source": source,
                                            "timeout": timeout})

    def silencePeer(self):
        nsrun(self.peerNs, ["nft", "-f", "-"], input=DROP_ECHO_REQUESTS.encode())

    def linkLocal(self, ns, device):
        [link] = json.loads(nsrun(ns, ["ip", "-j", "-6", "addr", "show", "dev", device]).stdout)
        [address] = [a["local"] for a in link["addr_info"] if a["scope"] == "link"]
        return address

    def test_peerAnswersUntilSilenced(self):
        targets = ["10.77.0.2", "fd77::2"]
        before = self.ping(targets)
        self.assertEqual([t for t, _ in before], ["10.77.0.2"] * 3 + ["fd77::2"] * 3)
        for target, rtt in before:
            self.assertIsInstance(rtt, float, f"{target}: {rtt}")
        self.silencePeer()
        after = self.ping(targets, count=2, timeout=0.5)
        self.assertEqual(after, [[t, None] for t in ["10.77.0.2"] * 2 + ["fd77::2"] * 2])

    def test_deviceAndSourceBinding(self):
        peerLinkLocal = self.linkLocal(self.peerNs, "b0")
        bound = self.ping(["10.77.0.2", "fd77::2", peerLinkLocal], count=1, device="a0",
                          source="10.77.0.1")
        for target, rtt in bound:
            self.assertIsInstance(rtt, float, f"{target}: {rtt}")
        scoped = self.ping([peerLinkLocal + "%a0"], count=1)
        self.assertIsInstance(scoped[0][1], float, scoped)
        # Bound to the wrong device, a probe is not refused: with no route
        # on that device Linux assumes the target is on-link there, so the
        # probe just goes unanswered.
        self.assertEqual(self.ping(["10.77.0.2"], count=1, device="lo", timeout=0.5),
                         [["10.77.0.2", None]])

    def test_monitorNoticesSilenceWithinABitOverASecond(self):
        report = self.runInside(MONITOR_SCRIPT, {
            "targets": ["10.77.0.2", "fd77::2"],
            "silence": ["ip", "netns", "exec", self.peerNs, "nft", "-f", "-"],
            "rules": DROP_ECHO_REQUESTS})
        self.assertEqual(report["events"][-3:], ["missed 1", "missed 2", "lost"], report)
        self.assertEqual(report["reason"], "no answer from 10.77.0.2, fd77::2 in 3 probes")
        # misses*interval + timeout = 1.5 s at most after the last answer,
        # plus what a loaded box adds; the silencing itself happened just
        # before (a lower bound: load only makes it later).
        self.assertLess(report["lost"] - report["lastAnswer"], withMargin(1.5), report)
        self.assertGreater(report["lost"] - report["silenced"], 1.0, report)
