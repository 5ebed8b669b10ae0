"""
A FAKE Yggdrasil admin for walk tests: an object with the C{call(request,
**arguments)} of L{mnigs.yggdrasil.admin.YggdrasilAdmin} that answers for
node 0 of a SYNTHETIC overlay (or for a REPLAYED capture), on a
L{twisted.internet.task.Clock}.  Nothing here talks to a real yggdrasil.

The answers have the shapes yggdrasil 0.4.7 gives (tests/unit/data/
ygg_*.json are real ones) and go through the real client's
L{mnigs.yggdrasil.admin.checkAnswer}, so errors come out as the real
client raises them.  As the real daemon does, debug_remoteGetPeers of a
node that does not answer fails with C{"timeout"} after 6 s.
"""

from __future__ import annotations

import json
import os
import random
from collections import deque
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred, fail, succeed

from mnigs.yggdrasil.admin import YggdrasilError, checkAnswer
from mnigs.yggdrasil.answers import addressForKey

REMOTE_TIMEOUT = 6.0  # yggdrasil 0.4's debug handlers give up after this
DATA = os.path.join(os.path.dirname(__file__), "data")


def success(response) -> dict:
    return {"status": "success", "request": None, "response": response}


def error(text) -> dict:
    return {"status": "error", "error": text, "request": None, "response": None}


@dataclass
class OverlayNode:
    index: int
    keyBytes: bytes
    peers: list[int] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.keyBytes.hex()

    @property
    def address(self):
        return addressForKey(self.keyBytes)


class SyntheticOverlay:
    """
    A deterministic overlay of C{size} nodes: a bushy tree breadth first,
    then cross links.  Node 0 is the one the fake admin stands for.
    """

    def __init__(self, seed: int = 11, size: int = 300, gateways: int = 10):
        rng = random.Random(seed)
        self.nodes = [OverlayNode(i, rng.randbytes(32)) for i in range(size)]

        def link(a, b):
            self.nodes[a].peers.append(b)
            self.nodes[b].peers.append(a)

        parents, nextIndex = deque([0]), 1
        while nextIndex < size:
            parent = parents.popleft()
            for _ in range(rng.randint(2, 4)):
                if nextIndex < size:
                    link(parent, nextIndex)
                    parents.append(nextIndex)
                    nextIndex += 1
        for _ in range(size // 4):
            a, b = rng.randrange(size), rng.randrange(size)
            if a != b and b not in self.nodes[a].peers:
                link(a, b)
        self.gateways = sorted(rng.sample(range(1, size), gateways))

    def hops(self, root: int = 0, unexpanded=frozenset()) -> dict[int, int]:
        """
        Node index -> hops from C{root}, breadth first; the links of the
        nodes in C{unexpanded} are not followed (they do not tell theirs).
        """
        found, queue = {root: 0}, deque([root])
        while queue:
            index = queue.popleft()
            if index in unexpanded:
                continue
            for peer in self.nodes[index].peers:
                if peer not in found:
                    found[peer] = found[index] + 1
                    queue.append(peer)
        return found

    def byAddress(self, address) -> OverlayNode | None:
        for node in self.nodes:
            if node.address == address:
                return node
        return None


class FakeYggdrasilAdmin:
    """
    Answers for node 0 of C{overlay} after C{latency[request]} seconds
    (default 0.001), on C{clock}.

    @ivar silent: node indexes that never answer debug_remoteGetPeers.
    @ivar hostile: node index -> the C{response} its remote answer carries.
    @ivar failing: request -> error text answered for local calls.
    @ivar calls: every (request, arguments) asked, in order.
    @ivar inflight / cancelled: calls the walk had going, calls it cancelled.
    @ivar maxRemote: the most debug_remoteGetPeers calls in flight at once.
    """

    def __init__(self, clock, overlay: SyntheticOverlay, latency=None):
        self.clock = clock
        self.overlay = overlay
        self.latency = latency or {}
        self.silent: set[int] = set()
        self.hostile: dict[int, object] = {}
        self.failing: dict[str, str] = {}
        self.dht: list[int] = []
        self.sessions: list[int] = []
        self.paths: dict[int, list[int]] = {}
        self.calls: list[tuple[str, dict]] = []
        self.inflight = 0
        self.remote = 0
        self.maxRemote = 0
        self.cancelled = 0

    # -- the answers, shaped as yggdrasil 0.4.7 shapes them ----------------
    def _entry(self, index, **extra):
        node = self.overlay.nodes[index]
        return {"address": str(node.address), "key": node.key, **extra}

    def answer(self, request: str, arguments: dict):
        me = self.overlay.nodes[0]
        if request in self.failing:
            return 0.001, error(self.failing[request])
        name = request.lower()
        if name == "getself":
            return 0.001, success({"build_name": "unknown", "build_version": "unknown",
                                   "key": me.key, "address": str(me.address), "coords": [],
                                   "subnet": "300::/64"})
        if name == "getpeers":
            return 0.001, success({"peers": [
                self._entry(p, port=i + 1, priority=0, coords=[i + 1], remote="tcp://10.0.0.1:1",
                            bytes_recvd=1, bytes_sent=1, uptime=1.0)
                for i, p in enumerate(me.peers)]})
        if name == "getdht":
            return 0.001, success({"dht": [self._entry(0, port=0, rest=1)]
                                   + [self._entry(i, port=1, rest=0) for i in self.dht]})
        if name == "getsessions":
            return 0.001, success({"sessions": [
                self._entry(i, bytes_recvd=1, bytes_sent=1, uptime=1.0) for i in self.sessions]})
        if name == "getpaths":
            return 0.001, success({"paths": [self._entry(i, path=path)
                                             for i, path in self.paths.items()]})
        if name == "debug_remotegetpeers":
            key = arguments.get("key")
            try:
                address = addressForKey(bytes.fromhex(key))
            except (TypeError, ValueError) as e:
                return 0.001, error(f"encoding/hex: {e}")
            node = self.overlay.byAddress(address)
            delay = self.latency.get(request, 0.001)
            if node is None or node.index in self.silent:
                return REMOTE_TIMEOUT, error("timeout")
            if node.index in self.hostile:
                return delay, success(self.hostile[node.index])
            return delay, success({str(node.address): {
                "keys": [self.overlay.nodes[p].key for p in node.peers]}})
        return 0.001, error(f"Unknown action '{name}', try 'list' for help")

    # -- the admin's call --------------------------------------------------
    def call(self, request: str, **arguments) -> Deferred:
        self.calls.append((request, arguments))
        delay, answer = self.answer(request, arguments)

        remote = request == "debug_remoteGetPeers"

        def finished():
            self.inflight -= 1
            self.remote -= remote

        def cancel(d):
            if timer.active():
                timer.cancel()
            self.cancelled += 1
            finished()

        def fire():
            finished()
            try:
                d.callback(checkAnswer(request, answer))
            except YggdrasilError as e:
                d.errback(e)

        d = Deferred(cancel)
        self.inflight += 1
        self.remote += remote
        self.maxRemote = max(self.maxRemote, self.remote)
        timer = self.clock.callLater(delay, fire)
        return d

    def remoteCalls(self) -> list[str]:
        return [args["key"] for request, args in self.calls if request == "debug_remoteGetPeers"]


class ReplayAdmin:
    """
    Answers with the REAL answers captured from yggdrasil 0.4.7 by
    tests/mesh/capture_yggdrasil.py (node a of its overlay), at once.
    Remote calls for keys not captured fail with C{"timeout"}.
    """

    def __init__(self):
        def load(name):
            with open(os.path.join(DATA, name)) as f:
                return f.read()

        self.local = {name: json.loads(load(f"ygg_{name.lower()}.json"))
                      for name in ("getSelf", "getPeers", "getDHT", "getSessions", "getPaths")}
        self.remote = {key: json.loads(text)
                       for key, text in json.loads(load("ygg_remotegetpeers.json")).items()}
        self.mesh = json.loads(load("ygg_mesh.json"))
        self.calls = []

    def call(self, request: str, **arguments) -> Deferred:
        self.calls.append((request, arguments))
        if request == "debug_remoteGetPeers":
            answer = self.remote.get(arguments.get("key"), error("timeout"))
        else:
            answer = self.local.get(request, error(f"Unknown action '{request.lower()}'"))
        try:
            return succeed(checkAnswer(request, answer))
        except YggdrasilError as e:
            return fail(e)
