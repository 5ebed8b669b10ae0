"""
The namespace harness against real babeld: a chain client - r1 - r2 - gw
with an internet node behind gw.
"""

import os

from pyroute2 import netns
from twisted.internet import defer, reactor
from twisted.trial import unittest
from twisted.trial.reporter import TestResult

from tests.mesh.clientproc import ClientProcess
from tests.mesh.commands import waitFor
from tests.mesh.gatewayproc import GatewayProcess
from tests.mesh.harness import (
    PROTO_BABEL,
    BabelRequestFailed,
    CommandFailed,
    Mesh,
    pidsInNamespaces,
    requireNamespaces,
    waitUntil,
)
from tests.mesh.logcheck import criticalLines

CONVERGENCE_TIMEOUT = 20

MASQUERADE_UP0 = """\
table ip mnigs_test_nat {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "up0" masquerade
    }
}
"""


def namespacesOf(mesh):
    return [ns for ns in netns.listnetns() if ns.startswith(mesh.prefix + "-")]


def chain(testcase):
    """
    client - r1 - r2 - gw - inet, babeld started on the four mesh nodes.
    """
    mesh = Mesh(testcase)
    client, r1, r2, gw = (mesh.node(name)
                          for name in ("client", "r1", "r2", "gw"))
    mesh.link(client, r1, "10.99.1.1/24", "10.99.1.2/24")
    mesh.link(r1, r2, "10.99.2.1/24", "10.99.2.2/24")
    mesh.link(r2, gw, "10.99.3.1/24", "10.99.3.2/24")
    mesh.internet(gw)
    mesh.startBabel()
    return mesh, client, r1, r2, gw


def sleepIn(node):
    for pid in pidsInNamespaces([node.ns]):
        with open(f"/proc/{pid}/comm") as f:
            if f.read().strip() == "sleep":
                return pid
    return None


def waitForGateway(client, gw):
    waitUntil(lambda: client.ping(gw.address, timeout=0.5),
              CONVERGENCE_TIMEOUT, message=f"{client.name} to ping gw")


class WaitUntilTests(unittest.SynchronousTestCase):
    """
    L{waitUntil} needs no namespaces.
    """

    def test_returnsFirstTruthyValue(self):
        answers = iter([None, 0, ValueError, "found"])

        def predicate():
            answer = next(answers)
            if answer is ValueError:
                raise ValueError("not yet")
            return answer

        self.assertEqual(waitUntil(predicate, 5, interval=0), "found")

    def test_timeoutNamesConditionAndKeepsLastError(self):
        def predicate():
            raise ValueError("still broken")

        error = self.assertRaises(AssertionError, waitUntil, predicate, 0.1,
                                  interval=0.01, message="the thing")
        self.assertEqual(str(error),
                         "timed out after 0.1s waiting for the thing")
        self.assertIsInstance(error.__cause__, ValueError)


class WaitForTests(unittest.TestCase):
    """
    L{waitFor}, the same wait with the reactor running, needs no
    namespaces either.
    """

    @defer.inlineCallbacks
    def test_deferredAnswersAndErrorsCountAsNotYet(self):
        answers = iter([defer.succeed(None), ValueError, defer.fail(ValueError("no")),
                        defer.succeed("found")])

        def predicate():
            answer = next(answers)
            if answer is ValueError:
                raise ValueError("not yet")
            return answer

        self.assertEqual((yield waitFor(reactor, predicate, 5, interval=0)), "found")

    @defer.inlineCallbacks
    def test_timeoutNamesConditionAndKeepsLastError(self):
        def predicate():
            return defer.fail(ValueError("still broken"))

        error = yield self.assertFailure(
            waitFor(reactor, predicate, 0.1, interval=0.01, message="the thing"),
            AssertionError)
        self.assertEqual(str(error), "timed out after 0.1s waiting for the thing")
        self.assertIsInstance(error.__cause__, ValueError)


TWISTD_LOG = """\
2026-12-06T00:34:35+0000 [-] Loading mnigs.client.tap...
2026-12-06T00:34:36+0000 [mnigs.client.machine#info] online via gwA (10.99.0.5) wireguard
2026-12-06T00:34:37+0000 [twisted.internet.defer#critical] Unhandled error in Deferred:
2026-12-06T00:34:37+0000 [twisted.internet.defer#critical] 
\tTraceback (most recent call last):
\tFailure: twisted.internet.defer.CancelledError: 
2026-12-06T00:34:38+0000 [mnigs.client.health#warn] gateway lost: no answer
2026-12-06T00:34:39+0000 [TelnetTransport,0,] Unhandled Error
\tTraceback (most recent call last):
\tbuiltins.ValueError: boom
"""


class DaemonLogCheckTests(unittest.SynchronousTestCase):
    """
    The daemons' critical lines fail a namespace test: checked here with
    a written log and no process, since no daemon logs one on purpose.
    """

    def test_criticalAndLegacyErrorLinesFound(self):
        found = criticalLines(TWISTD_LOG)
        self.assertEqual([f.splitlines()[0][25:] for f in found], [
            "[twisted.internet.defer#critical] Unhandled error in Deferred:",
            "[twisted.internet.defer#critical] ",
            "[TelnetTransport,0,] Unhandled Error"])
        self.assertIn("CancelledError", found[1])
        self.assertIn("ValueError: boom", found[2])

    def test_quietLogPasses(self):
        self.assertEqual(criticalLines("\n".join(TWISTD_LOG.splitlines()[:2])), [])

    def test_stoppingADaemonThatLoggedCriticalFailsTheTest(self):
        class Node:
            tmp = self.mktemp()
            meshInterfaces = ()
            uplink = "up0"

        os.makedirs(Node.tmp)
        daemons = [GatewayProcess(Node(), name="gwA"), ClientProcess(Node(), name="c1")]
        for daemon in daemons:
            with open(daemon.logPath, "w") as f:
                f.write(TWISTD_LOG)

        class Inner(unittest.SynchronousTestCase):
            def test_passes(self):
                for daemon in daemons:
                    self.addCleanup(daemon.stop)

        result = TestResult()
        Inner("test_passes").run(result)
        self.assertEqual(len(result.errors), 2)
        messages = sorted(str(failure.value) for case, failure in result.errors)
        self.assertIn("mnigs-client c1 logged 3 critical line(s)", messages[0])
        self.assertIn("mnigs-server gwA logged 3 critical line(s)", messages[1])
        self.assertIn("Unhandled error in Deferred", messages[1])


class MeshTests(unittest.TestCase):
    """
    A real babel mesh in network namespaces.
    """

    def setUp(self):
        requireNamespaces(self, "babeld", "nft", "ping")

    def test_nodeConventions(self):
        mesh = Mesh(self)
        a, b = mesh.node("a"), mesh.node("b")
        self.assertTrue(mesh.prefix.startswith("mnigs-"))
        self.assertEqual(len(mesh.prefix), len("mnigs-") + 8)
        self.assertEqual((a.ns, a.address), (f"{mesh.prefix}-a", "10.251.0.1"))
        self.assertEqual(b.address, "10.251.0.2")
        self.assertEqual(mesh.link(a, b, "10.99.1.1/24", "10.99.1.2/24"),
                         ("m0", "m0"))
        self.assertEqual(mesh.link(a, b), ("m1", "m1"))
        self.assertEqual(a.interfaceAddresses,
                         {"m0": "10.99.1.1/24", "m1": "10.99.2.1/24"})
        self.assertEqual(a.meshSubnets, ["10.99.1.0/24", "10.99.2.0/24"])
        self.assertEqual(
            a.run(["sysctl", "-n", "net.ipv4.ip_forward",
                   "net.ipv6.conf.all.forwarding",
                   "net.ipv6.conf.all.accept_dad",
                   "net.ipv6.conf.default.accept_dad"]).stdout.split(),
            ["1", "1", "0", "0"])
        self.assertTrue(os.path.isdir(a.tmp))
        self.assertTrue(a.tmp.startswith(mesh.tmp))
        self.assertFalse(a.ping(b.address))
        self.assertTrue(a.ping("10.99.2.2"))

    def test_babelConvergesOnChain(self):
        mesh, client, r1, r2, gw = chain(self)
        waitForGateway(client, gw)
        mesh.waitConverged(CONVERGENCE_TIMEOUT)
        self.assertIn(("0.0.0.0/0", "10.99.1.2", PROTO_BABEL),
                      client.routes())
        dump = client.babelDump()
        routes = [line.split() for line in dump.splitlines()
                  if line.startswith("add route ")]
        installed = {words[words.index("prefix") + 1] for words in routes
                     if words[words.index("installed") + 1] == "yes"}
        self.assertLessEqual(
            {"0.0.0.0/0", "10.251.0.2/32", "10.251.0.3/32", "10.251.0.4/32",
             "10.99.2.0/24", "10.99.3.0/24"},
            installed)

    def test_internetOnlyThroughGatewayNat(self):
        mesh, client, r1, r2, gw = chain(self)
        mesh.waitConverged(CONVERGENCE_TIMEOUT)
        for node in (client, r1, r2, gw):
            dump = node.babelDump()
            self.assertNotIn("203.0.113.", dump)
            self.assertNotIn(mesh.internetHost, dump)
        self.assertTrue(gw.ping(mesh.internetHost))
        self.assertFalse(client.ping(mesh.internetHost))
        gw.run(["nft", "-f", "-"], input=MASQUERADE_UP0)
        waitUntil(lambda: client.ping(mesh.internetHost), 5,
                  message="the internet host through gw's NAT")
        gw.run(["nft", "delete", "table", "ip", "mnigs_test_nat"])

    def test_babelRestarts(self):
        mesh, client, r1, r2, gw = chain(self)
        mesh.waitConverged(CONVERGENCE_TIMEOUT)
        mesh.stopBabel(r1)
        self.assertIsNone(r1.babeld)
        waitUntil(lambda: not client.ping(gw.address, timeout=0.2), 10,
                  message="client to lose gw once r1 stops routing")
        mesh.startBabel([r1])
        waitForGateway(client, gw)

    def test_badBabelRequestRaises(self):
        mesh = Mesh(self)
        a, b = mesh.node("a"), mesh.node("b")
        mesh.link(a, b)
        mesh.startBabel()
        self.assertRaises(BabelRequestFailed, a.babelRequest,
                          "no-such-request")

    def test_destroyRemovesEverything(self):
        mesh, client, r1, r2, gw = chain(self)
        # setsid -f leaves the process group that spawn() created.
        client.spawn(["setsid", "-f", "sleep", "600"])
        detachedPid = waitUntil(lambda: sleepIn(client), 5,
                                message="the detached sleep to start")
        daemons = [node.babeld for node in (client, r1, r2, gw)]
        tmp = mesh.tmp
        self.assertEqual(len(namespacesOf(mesh)), 5)
        mesh.destroy()
        self.assertEqual(namespacesOf(mesh), [])
        self.assertEqual([d.poll() is not None for d in daemons], [True] * 4)
        waitUntil(lambda: not os.path.exists(f"/proc/{detachedPid}"), 5,
                  message="the detached process to be killed")
        self.assertFalse(os.path.exists(tmp))
        mesh.destroy()

    def test_cleanupWhenTestBodyRaises(self):
        meshes, processes = [], []

        class FailingBody(unittest.SynchronousTestCase):
            def test_fails(self):
                mesh = Mesh(self)
                meshes.append(mesh)
                a, b = mesh.node("a"), mesh.node("b")
                mesh.link(a, b)
                mesh.startBabel()
                processes.append(a.spawn(["sleep", "600"]))
                processes.append(a.babeld)
                raise RuntimeError("deliberate failure")

        result = self.runInner(FailingBody("test_fails"))
        [(case, failure)] = result.errors
        self.assertTrue(failure.check(RuntimeError))
        self.assertCleanedUp(meshes)
        self.assertEqual([p.poll() is not None for p in processes],
                         [True, True])

    def test_cleanupWhenSetupFailsHalfway(self):
        meshes = []

        class FailingSetup(unittest.SynchronousTestCase):
            def setUp(self):
                mesh = Mesh(self)
                meshes.append(mesh)
                mesh.node("a").run(["ip", "link", "set", "nosuch0", "up"])
                mesh.node("b")

            def test_never(self):
                pass

        result = self.runInner(FailingSetup("test_never"))
        [(case, failure)] = result.errors
        self.assertTrue(failure.check(CommandFailed))
        self.assertIn("nosuch0", str(failure.value))
        self.assertEqual(list(meshes[0].nodes), ["a"])
        self.assertCleanedUp(meshes)

    def runInner(self, case):
        result = TestResult()
        case.run(result)
        return result

    def assertCleanedUp(self, meshes):
        [mesh] = meshes
        self.assertEqual(namespacesOf(mesh), [])
        self.assertIsNone(mesh.tmp)
        for node in mesh.nodes.values():
            self.assertIsNone(node.babeld)
