"""
Yggdrasil 0.4 overlays on namespace-harness meshes (L{tests.mesh.harness}),
for namespace tests and benchmarks.

  - L{YggdrasilOverlay.link} makes a harness veth link (IPv4 /24s, nothing
    routed beyond the link) and peers the two nodes' yggdrasil over it:
    the node created first listens on its address of the link
    (C{Listen: ["tcp://A:12345"]}), the other dials it (C{Peers}).
  - Every node gets C{MulticastInterfaces: []} (no peering behind the
    test's back), its own C{AdminListen} socket C{unix://NODE.tmp/ygg.sock}
    and its own C{IfName} (C{ygg1}, C{ygg2} ...), and a C{NodeInfo} name.
  - Nodes start in creation order, each once the one before answers on
    its admin socket: yggdrasil starts its listeners before its admin
    socket, so every dial finds its listener up (a dial that fails is
    only retried a minute later).
  - With C{root=NODE}, that node gets the lowest public key: yggdrasil
    0.4's spanning tree is rooted at the lowest key, so the tree does not
    move when other nodes die.

No babeld: between overlay nodes the kernels route nothing but each veth's
own /24 and yggdrasil's 200::/7 on its TUN.  L{Mesh.destroy} kills the
daemons (they are spawned with L{Node.spawn}) and removes their files.
"""

import json
import os
import socket
import subprocess
import time

from tests.mesh.commands import fileTail, waitUntil

LISTEN_PORT = 12345


def generateConfig():
    result = subprocess.run(["yggdrasil", "-genconf", "-json"], capture_output=True,
                            text=True, check=True, timeout=30)
    return json.loads(result.stdout)


class YggdrasilAdminError(Exception):
    pass


def rawAdminCall(path, request, timeout=15.0, **arguments):
    """
    One request on a yggdrasil admin UNIX socket (keepalive off: the
    daemon closes after its answer); the whole answer, as text.
    """
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(json.dumps({"request": request, "arguments": arguments,
                                 "keepalive": False}).encode("utf-8"))
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8")


def adminCall(path, request, timeout=15.0, **arguments):
    """
    Like L{rawAdminCall}, but the C{response} object, or
    L{YggdrasilAdminError} with the daemon's error text.
    """
    answer = json.loads(rawAdminCall(path, request, timeout, **arguments))
    if answer.get("status") != "success":
        raise YggdrasilAdminError(f"{request}: {answer.get('error')}")
    return answer["response"]


class YggdrasilOverlay:
    """
    Yggdrasil on some nodes of one L{tests.mesh.harness.Mesh}; see the
    module docstring.
    """

    def __init__(self, mesh):
        self.mesh = mesh
        self.links = []  # (listener, dialer, url)
        self.configs = {}  # node -> config dict
        self.processes = {}  # node -> Popen

    def _order(self, node):
        return list(self.mesh.nodes.values()).index(node)

    def link(self, a, b):
        """
        A harness link between C{a} and C{b} with yggdrasil peered over
        it.  Returns the interface names on C{a} and on C{b}.
        """
        a, b = self.mesh._node(a), self.mesh._node(b)
        ifA, ifB = self.mesh.link(a, b)
        if self._order(a) < self._order(b):
            listener, ifname, dialer = a, ifA, b
        else:
            listener, ifname, dialer = b, ifB, a
        address = listener.interfaceAddresses[ifname].split("/")[0]
        self.links.append((listener, dialer, f"tcp://{address}:{LISTEN_PORT}"))
        return ifA, ifB

    def nodes(self):
        found = {n for link in self.links for n in link[:2]}
        return sorted(found, key=self._order)

    def socketPath(self, node):
        return os.path.join(self.mesh._node(node).tmp, "ygg.sock")

    def endpoint(self, node):
        """The node's admin endpoint, as mnigs's config takes it."""
        return f"unix://{self.socketPath(node)}"

    def key(self, node):
        return self.configs[self.mesh._node(node)]["PublicKey"]

    def call(self, node, request, timeout=15.0, **arguments):
        return adminCall(self.socketPath(node), request, timeout, **arguments)

    def address(self, node):
        return self.call(node, "getSelf")["address"]

    def _configure(self, nodes, root):
        generated = [generateConfig() for _ in nodes]
        if root is not None:
            # The lowest key roots the tree: give it to root.
            generated.sort(key=lambda c: c["PublicKey"])
            nodes = [root] + [n for n in nodes if n is not root]
        for index, (node, config) in enumerate(zip(nodes, generated), 1):
            config.update({
                "Listen": sorted({url for listener, _, url in self.links if listener is node}),
                "Peers": sorted(url for _, dialer, url in self.links if dialer is node),
                "MulticastInterfaces": [],
                "AdminListen": self.endpoint(node),
                "IfName": f"ygg{self._order(node) + 1}",
                "NodeInfo": {"name": node.name},
            })
            self.configs[node] = config

    def start(self, root=None, timeout=20):
        """
        Start yggdrasil on every linked node and return once every link is
        peered (both ends list each other in C{getPeers}) and the spanning
        tree has settled (L{waitTreeSettled}).
        """
        nodes = self.nodes()
        root = None if root is None else self.mesh._node(root)
        self._configure(nodes, root)
        for node in nodes:
            path = os.path.join(node.tmp, "ygg.conf")
            with open(path, "w") as f:
                json.dump(self.configs[node], f)
            self.processes[node] = node.spawn(
                ["yggdrasil", "-useconffile", path, "-logto", os.path.join(node.tmp, "ygg.log")],
                log=os.path.join(node.tmp, "ygg.out"))
            self._waitAnswering(node, timeout)
        self.waitPeered(timeout)
        self.waitTreeSettled(timeout)

    def _waitAnswering(self, node, timeout):
        process = self.processes[node]

        def answeringOrGone():
            if process.poll() is not None:
                return "exited"
            self.call(node, "getSelf", timeout=2)
            return "answering"

        if waitUntil(answeringOrGone, timeout, message=f"yggdrasil on {node.name}") == "exited":
            raise RuntimeError(f"yggdrasil on {node.name} exited with {process.returncode}:\n"
                               + fileTail(os.path.join(node.tmp, "ygg.out"))
                               + fileTail(os.path.join(node.tmp, "ygg.log")))

    def peerKeys(self, node):
        return {peer["key"] for peer in self.call(node, "getPeers", timeout=5)["peers"]}

    def waitPeered(self, timeout=20):
        want = {}
        for listener, dialer, _ in self.links:
            want.setdefault(listener, set()).add(self.key(dialer))
            want.setdefault(dialer, set()).add(self.key(listener))

        def missing():
            return {node.name: sorted(keys - self.peerKeys(node))
                    for node, keys in want.items() if keys - self.peerKeys(node)}

        waitUntil(lambda: not missing(), timeout, message="every yggdrasil link to peer")

    def coords(self):
        return {node: tuple(self.call(node, "getSelf", timeout=5)["coords"]) for node in self.configs}

    def waitTreeSettled(self, timeout=20, quiet=1.0):
        """
        Wait until the spanning tree has settled: the node with the lowest
        key is the root (empty coords), every other node has a place under
        it, and nothing moved for C{quiet} seconds.

        Until then, yggdrasil 0.4.7 may cache a node's path as it was
        before (e.g. while that node still was a root of its own), and
        debug_remoteGetPeers of that node then times out for a whole
        minute (measured: a walk started at once fails on the same nodes
        for 60 s; one started 1 s later succeeds at once).  A settled tree
        made that rare, not impossible (1 run in 4): tests also wait for
        L{waitAllReachable}, after which it never happened (8 runs in 8).
        """
        root = min(self.configs, key=lambda node: self.configs[node]["PublicKey"])

        def settled():
            before = self.coords()
            if before[root] or not all(c for node, c in before.items() if node is not root):
                return False
            time.sleep(quiet)
            return self.coords() == before

        waitUntil(settled, timeout, message="the yggdrasil spanning tree to settle")

    def waitReachable(self, source, destination, timeout=20):
        """Wait until C{source} pings C{destination}'s yggdrasil address."""
        source = self.mesh._node(source)
        address = self.address(destination)
        waitUntil(lambda: source.run(["ping", "-6", "-n", "-q", "-c", "1", "-W", "1", address],
                                     check=False, timeout=15).returncode == 0,
                  timeout, message=f"{source.name} to reach {address} over yggdrasil")
        return address

    def waitAllReachable(self, source, timeout=30):
        """
        Wait until C{source} pings every other overlay node: then its
        debug_remoteGetPeers calls find them (see L{waitTreeSettled}).
        Returns name -> address.
        """
        source = self.mesh._node(source)
        return {node.name: self.waitReachable(source, node, timeout)
                for node in self.nodes() if node is not source}

    def logTail(self, node):
        node = self.mesh._node(node)
        return fileTail(os.path.join(node.tmp, "ygg.log"))
