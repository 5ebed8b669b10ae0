"""
Hostile input against a real mnigs-server (twistd, wireguard-go, nftables)
in a network namespace: a one-node "mesh" whose gateway has an internet
uplink.  No babeld: nobody here routes, the attacker sits on the gateway.

The attacker is L{tests.mesh.hostile_client}, a separate process inside
the gateway's namespace speaking raw HTTP over plain sockets; the test
drives it line by line and watches the daemon from outside (its RSS in
C{/proc}).

What the protocol promises (docs/protocol.md, "Transport" and "Errors"):
every well-formed POST gets a JSON-RPC 2.0 object, errors included, never
HTML or a traceback; bodies over 64 KiB get HTTP 413 without being read
whole.  Requests that are not well-formed HTTP at all (a bad request line,
a non-numeric Content-Length, headers over twisted.web's 16 KiB) get
twisted.web's bare C{400 Bad Request} with no body, and the connection is
closed: there is no JSON-RPC call to answer.
"""

import json
import os
import select
import subprocess
import sys
import time

from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from tests.mesh.gatewayproc import GatewayProcess, daemonEnvironment
from tests.mesh.commands import withMargin
from tests.mesh.harness import Mesh, requireNamespaces, waitUntil

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hostile_client.py")

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602
UNKNOWN_LEASE = 1003

# hostile_client.CASES name -> (HTTP status, JSON-RPC error code); a code
# of None: twisted.web's bare 400 and a closed connection.
EXPECTED = {
    "truncatedJSON": (200, PARSE_ERROR),
    "notUTF8": (200, PARSE_ERROR),
    "emptyBody": (200, PARSE_ERROR),
    "deeplyNestedList": (200, PARSE_ERROR),
    "deeplyNestedObject": (200, PARSE_ERROR),
    "hugeInteger": (200, PARSE_ERROR),
    "scalar": (200, INVALID_REQUEST),
    "null": (200, INVALID_REQUEST),
    "batch": (200, INVALID_REQUEST),
    "emptyBatch": (200, INVALID_REQUEST),
    "wrongVersion": (200, INVALID_REQUEST),
    "noVersion": (200, INVALID_REQUEST),
    "objectId": (200, INVALID_REQUEST),
    "unknownMethod": (200, METHOD_NOT_FOUND),
    "unknownGroup": (200, METHOD_NOT_FOUND),
    "privateMethod": (200, METHOD_NOT_FOUND),
    "dunderMethod": (200, METHOD_NOT_FOUND),
    "methodNotString": (200, INVALID_REQUEST),
    "paramsList": (200, INVALID_PARAMS),
    "registerParamsList": (200, INVALID_PARAMS),
    "infoWithParams": (200, INVALID_PARAMS),
    "registerNoParams": (200, INVALID_PARAMS),
    "registerClientString": (200, INVALID_PARAMS),
    "registerIdNumber": (200, INVALID_PARAMS),
    "registerIdTooLong": (200, INVALID_PARAMS),
    "registerNameObject": (200, INVALID_PARAMS),
    "registerMethodNumber": (200, INVALID_PARAMS),
    "registerMethodParamsList": (200, INVALID_PARAMS),
    "registerKeyNumber": (200, INVALID_PARAMS),
    "registerKeyNotBase64": (200, INVALID_PARAMS),
    "registerExtraMember": (200, INVALID_PARAMS),
    "renewLeaseNumber": (200, INVALID_PARAMS),
    "renewTokenNull": (200, INVALID_PARAMS),
    "renewNoToken": (200, INVALID_PARAMS),
    "renewLeaseObject": (200, INVALID_PARAMS),
    "renewTokenHuge": (200, INVALID_PARAMS),
    "unregisterLeaseList": (200, INVALID_PARAMS),
    "unregisterTokenNumber": (200, INVALID_PARAMS),
    "unregisterParamsString": (200, INVALID_PARAMS),
    "unregisterUnknownLease": (200, UNKNOWN_LEASE),
    "get": (405, INVALID_REQUEST),
    "wrongPath": (404, METHOD_NOT_FOUND),
    "chunkedOverLimit": (413, INVALID_REQUEST),
    "hugeContentLength": (413, INVALID_REQUEST),
    "contentLengthNotNumber": (400, None),
    "headersTooBig": (400, None),
    "garbageRequestLine": (400, None),
}

log = Logger()

HELD = {"idle": 100, "headers": 50, "body": 50}
# The attacker runs on the gateway itself, from one address: the tests
# about what many held connections do lift the per-address cap and the
# request deadline that would otherwise cut them short.
MANY_FROM_ONE = {"max_connections_per_address": 1000, "request_timeout": 600.0}
#: "At once": a few milliseconds unloaded, half a second at worst by design.
PROMPTLY = withMargin(0.5)
RSS_GROWTH_MB = 30


def rssMB(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


class Attacker:
    """
    L{tests.mesh.hostile_client} running inside C{node}, one command per
    call.
    """

    def __init__(self, testcase, node, host="127.0.0.1", port=8150):
        self.logPath = os.path.join(node.tmp, "hostile_client.log")
        with open(self.logPath, "ab") as log:
            self.process = subprocess.Popen(
                ["ip", "netns", "exec", node.ns, sys.executable, SCRIPT, host, str(port)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                start_new_session=True, env={**os.environ, **daemonEnvironment()})
        node.mesh.track(self.process)
        self._buffer = b""
        testcase.addCleanup(self.quit)

    def __call__(self, *words, timeout=60):
        self.process.stdin.write((" ".join(map(str, words)) + "\n").encode("ascii"))
        self.process.stdin.flush()
        answer = json.loads(self._readLine(timeout, words))
        if "exception" in answer:
            raise AssertionError(f"hostile client: {words}: {answer['exception']}")
        return answer["ok"]

    def _readLine(self, timeout, words):
        deadline = time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"hostile client: no answer to {words} in {timeout} s")
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                data = os.read(fd, 65536)
                if not data:
                    raise AssertionError(f"hostile client exited on {words}: "
                                         + open(self.logPath).read()[-2000:])
                self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def quit(self):
        if self.process.poll() is None:
            try:
                self.process.stdin.write(b"quit\n")
                self.process.stdin.close()
            except BrokenPipeError:
                pass
            self.process.wait(10)
        self.process.stdout.close()


class HostileInputTests(TestCase):
    timeout = 120

    def startGateway(self, **overrides):
        requireNamespaces(self, "wireguard-go", "nft")
        self.mesh = Mesh(self)
        self.gw = self.mesh.node("gw")
        self.mesh.internet(self.gw)
        self.gateway = GatewayProcess(self.gw, overrides)
        self.addCleanup(self.gateway.stop)
        self.gateway.start()
        self.pid = self.gateway.process.pid
        self.attack = Attacker(self, self.gw)

    def assertJSONRPCError(self, answer, status, code, what):
        self.assertEqual(answer["status"], status, f"{what}: {answer}")
        body = answer["body"]
        for needle in ("<html", "<HTML", "Traceback", 'File "'):
            self.assertNotIn(needle, body, f"{what} leaked {needle!r}")
        if code is None:
            self.assertEqual(body, "", what)
            self.assertTrue(answer["closed"], f"{what}: connection left open")
            return
        self.assertEqual(answer["content_type"], "application/json", what)
        parsed = answer["json"]
        self.assertIsInstance(parsed, dict, f"{what}: not a JSON object: {body[:200]!r}")
        self.assertEqual(parsed.get("jsonrpc"), "2.0", what)
        self.assertNotIn("result", parsed, what)
        self.assertEqual(parsed["error"]["code"], code, f"{what}: {parsed}")
        self.assertIsInstance(parsed["error"]["message"], str, what)

    def assertInfoAnsweredPromptly(self, count, source=None):
        probes = self.attack("probe", count, *([source] if source else []))["probes"]
        failed = [p for p in probes if not p["ok"]]
        self.assertEqual(failed, [], "gateway.info failed")
        slowest = max(p["latency"] for p in probes)
        log.info("{count} gateway.info probes, slowest {slowest:.4f} s", count=count,
                 slowest=slowest)
        self.assertLess(slowest, PROMPTLY, f"gateway.info took {slowest:.3f} s")
        return slowest

    def test_everyMalformedCallGetsAJSONRPCError(self):
        self.startGateway()
        answers = self.attack("cases")
        self.assertEqual(sorted(answers), sorted(EXPECTED))
        for name, (status, code) in EXPECTED.items():
            self.assertJSONRPCError(answers[name], status, code, name)
        # ...and the server is still there, serving.
        self.assertInfoAnsweredPromptly(3)
        self.assertIsNone(self.gateway.process.poll())

    def test_tenMegabyteBodyRefusedWithoutReadingIt(self):
        self.startGateway()
        for attempt in range(3):
            answer = self.attack("bigbody", 10)
            self.assertEqual(answer["status_line"], "HTTP/1.1 413 Payload Too Large", answer)
            self.assertEqual(answer["json"]["error"]["code"], INVALID_REQUEST)
            self.assertLess(answer["answered_after"], PROMPTLY, answer)
            # The server closed the connection instead of draining it: the
            # sender could not get the whole body out.
            self.assertIsNotNone(answer["closed_after"], answer)
            self.assertLess(answer["closed_after"], PROMPTLY, answer)
            self.assertLess(answer["body_bytes_sent"], answer["body_bytes"], answer)
            log.info("10 MB body: 413 after {answered:.4f} s, closed after {closed:.4f} s, "
                     "{sent} body bytes got out", answered=answer["answered_after"],
                     closed=answer["closed_after"], sent=answer["body_bytes_sent"])

    def test_hugeContentLengthWithFewBytesRefusedAtOnce(self):
        self.startGateway()
        answer = self.attack("liar", 10 ** 15, 10)
        self.assertJSONRPCError(answer, 413, INVALID_REQUEST, "Content-Length 10**15")
        self.assertLess(answer["elapsed"], PROMPTLY, answer)

    def test_stalledBodyIsCutAtTheIdleTimeout(self):
        """
        A body announced within the limit that never comes holds its
        connection only until the idle timeout, and gets no answer.
        """
        self.startGateway(rpc={"idle_timeout": 2.0})
        answer = self.attack("liar", 60000, 10)
        self.assertTrue(answer["closed"], answer)
        self.assertEqual(answer["raw_bytes"], 0, answer)
        self.assertGreater(answer["elapsed"], 1.5, answer)
        self.assertLess(answer["elapsed"], 2.0 + 5.0, answer)

    def test_trickledRequestIsCutAtTheDeadline(self):
        """
        Slow loris: a valid request sent a byte every half second resets
        twisted.web's idle timeout with every byte, but the request must
        be whole within C{request_timeout} of the connection opening: it
        is cut there, unanswered.
        """
        self.startGateway(rpc={"request_timeout": 2.0})
        answer = self.attack("trickle", 0.5)
        self.assertTrue(answer["closed"], answer)
        self.assertEqual(answer["raw_bytes"], 0, answer)
        self.assertLess(answer["sent"], answer["length"], answer)
        self.assertGreater(answer["elapsed"], 1.5, answer)
        self.assertLess(answer["elapsed"], 2.0 + 5.0, answer)

    def test_heldConnectionsStarveNothingAndMemoryStaysBounded(self):
        """
        200 connections held open (sending nothing, or half a request)
        while the rest of the attack runs: a fresh C{gateway.info} is
        answered promptly throughout (PROMPTLY), the held connections stay
        held (nothing gets evicted to make room), and the daemon's RSS
        grows by less than 30 MB over the whole attack.
        """
        self.startGateway(rpc=MANY_FROM_ONE)
        baseline = rssMB(self.pid)
        samples = [baseline]
        for kind, count in HELD.items():
            self.attack("open", count, kind)
        total = sum(HELD.values())
        waitUntil(lambda: self.attack("status")["open"] == total, 10,
                  message="the held connections to be open")
        samples.append(rssMB(self.pid))
        self.assertInfoAnsweredPromptly(20)
        answers = self.attack("cases")
        for name, (status, code) in EXPECTED.items():
            self.assertJSONRPCError(answers[name], status, code, name)
        for attempt in range(3):
            self.assertEqual(self.attack("bigbody", 10)["json"]["error"]["code"], INVALID_REQUEST)
        samples.append(rssMB(self.pid))
        self.assertInfoAnsweredPromptly(20)
        self.assertEqual(self.attack("status"), {"open": total, "closed_by_server": 0})
        samples.append(rssMB(self.pid))
        growth = max(samples) - baseline
        log.info("server RSS over the attack (MB): {samples}",
                 samples=[round(s, 1) for s in samples])
        self.assertLess(growth, RSS_GROWTH_MB,
                        f"RSS grew by {growth:.1f} MB: {[round(s, 1) for s in samples]}")

    def test_heldConnectionsAreCutAtTheIdleTimeout(self):
        self.startGateway(rpc={"idle_timeout": 2.0, "max_connections_per_address": 1000})
        started = time.monotonic()
        for kind, count in HELD.items():
            self.attack("open", count, kind)
        total = sum(HELD.values())
        waitUntil(lambda: self.attack("status")["closed_by_server"] == total, 2.0 + 10,
                  interval=0.2, message="the idle connections to be cut")
        self.assertGreater(time.monotonic() - started, 1.5)
        self.assertInfoAnsweredPromptly(3)

    def test_connectionsOverTheCapAreClosedAndAFreedSlotServes(self):
        cap = 50
        self.startGateway(rpc=dict(MANY_FROM_ONE, max_connections=cap))
        self.attack("open", cap, "idle")
        waitUntil(lambda: self.attack("status")["open"] == cap, 10,
                  message="the first connections to be open")
        # Nothing else is connected now: the cap is full.
        self.attack("open", 10, "headers")
        waitUntil(lambda: self.attack("status")["closed_by_server"] == 10, 10,
                  message="the connections over the cap to be closed")
        self.assertEqual(self.attack("status"), {"open": cap, "closed_by_server": 10})
        [probe] = self.attack("probe", 1)["probes"]
        self.assertFalse(probe["ok"], probe)
        self.assertIsNone(probe["status"], probe)
        self.attack("close", 1)
        waitUntil(lambda: self.attack("probe", 1)["probes"][0]["ok"], 10,
                  message="a call through the freed slot")
        self.assertInfoAnsweredPromptly(5)
        self.assertEqual(self.attack("status")["open"], cap - 1)

    def test_oneAddressHoldsOnlyItsShareOfConnections(self):
        """
        With the defaults, one address holding idle connections gets 16;
        the ones beyond are closed at once, and a client on another
        address is served promptly meanwhile.
        """
        self.startGateway(rpc={"request_timeout": 60.0})  # idle, not slow: held meanwhile
        self.attack("open", 40, "idle")
        waitUntil(lambda: self.attack("status")["closed_by_server"] == 40 - 16, 10,
                  message="the connections over the per-address cap to be closed")
        self.assertEqual(self.attack("status")["open"], 16)
        self.assertInfoAnsweredPromptly(20, source=self.gw.address)
