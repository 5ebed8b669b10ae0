"""
Network-namespace test harness shared by every mnigs mesh test.

One L{Mesh} per test builds a throw-away topology out of network namespaces
and veth pairs, runs real daemons in it and removes everything again through
C{testcase.addCleanup}, even when the test fails half-way.

Topology conventions
====================

  - Namespaces are named C{mnigs-XXXXXXXX-NAME}: one random 8-hex-digit
    prefix per L{Mesh}, so concurrent test runs never touch each other.
  - Every node gets a stable "node address" C{10.251.0.N/32} on its C{lo},
    N = 1, 2, 3... in creation order (L{Node.address}); babeld announces it.
    Every node forwards IPv4 and IPv6 and has IPv6 DAD off (babeld needs its
    link-local addresses at once).
  - Mesh links (L{Mesh.link}) are veth pairs named C{m0}, C{m1}... counting
    per node, addressed by the caller (e.g. C{10.99.K.1/24} and
    C{10.99.K.2/24}; C{link(a, b)} without addresses picks the next free
    C{10.99.K.0/24}). They are listed in L{Node.meshInterfaces} and babeld
    runs on them and announces their subnets.
  - L{Mesh.internet} attaches an "internet" node to a gateway::

        gateway up0 203.0.113.2/24 <---> 203.0.113.1/24 isp0 internet
                                                             lo 198.51.100.1/32

    With C{ipv6=True} the uplink carries IPv6 too::

        gateway up0 2001:db8:ff00::2/64 <---> 2001:db8:ff00::1/64 isp0 internet
                                                         lo 2001:db8:ffff::1/128

    and the gateway gets C{default via 2001:db8:ff00::1 dev up0 proto
    static}; the internet node routes back only to 2001:db8:ff00::/64, so
    mesh traffic reaches C{2001:db8:ffff::1} (L{Mesh.internetHost6}) only
    when the gateway masquerades it (NAT66) or its pool is routed there
    (L{Mesh.routeToGateway6}).  babeld announces none of it.

    The gateway gets C{default via 203.0.113.1 dev up0 proto static} (proto
    4), which its babeld redistributes as the mesh's default route. The
    internet node is not part of the babel mesh and routes back only to
    203.0.113.0/24: mesh traffic reaches C{198.51.100.1}
    (L{Mesh.internetHost}) only when the gateway NATs it. Neither
    203.0.113.0/24 nor 198.51.100.1 is ever announced into babel. Internet
    nodes (C{inet}, C{inet2}... one per gateway, all with the same
    addresses) take no node address: their C{address} is 198.51.100.1.
  - babeld (L{Mesh.startBabel}) runs with type wired interfaces, hello
    interval L{Mesh.hello} (0.5 s by default; 0 or None for babeld's 4 s),
    a random router-id, and a read-write local socket on C{::1} port 33123
    inside each namespace (L{Node.babelDump}). babeld itself announces every
    local address by default, so the generated configuration ends with
    C{redistribute local deny} and C{redistribute deny}.

Tests call L{requireNamespaces} first: without root, C{ip}, the daemons
they name or namespace support they are skipped, saying what is missing
(and fail instead when C{CI} is set).

Everything here is synchronous (subprocess, blocking pyroute2) on purpose:
tests that use it are written synchronously. Helpers live in
L{tests.mesh.commands} (commands, processes, L{waitUntil}; and
L{tests.mesh.commands.waitFor}, the same wait for tests that run the
reactor),
L{tests.mesh.babelconfig} and L{tests.mesh.node}.
"""

import importlib.util
import ipaddress
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
from functools import cache

from twisted.logger import Logger

from tests.mesh.babelconfig import (
    BABEL_LOCAL_PORT,
    PROTO_BABEL,
    PROTO_STATIC,
    BabelRequestFailed,
    babelConfigText,
)
from tests.mesh.commands import (
    CommandFailed,
    fileTail,
    killNamespaceProcesses,
    pidsInNamespaces,
    runCommand,
    terminate,
    waitUntil,
)
from tests.mesh.node import Node

__all__ = [
    "BABEL_LOCAL_PORT", "INTERNET_HOST", "INTERNET_HOST6", "PROTO_BABEL", "PROTO_STATIC",
    "BabelRequestFailed", "CommandFailed", "Mesh", "Node",
    "missingForNamespaces", "pidsInNamespaces", "requireNamespaces",
    "waitUntil",
]

log = Logger()

NODE_ADDRESS_FORMAT = "10.251.0.{}"
MESH_SUBNET_FORMAT = "10.99.{}.{}/24"
UPLINK_INTERFACE = "up0"
UPLINK_GATEWAY_ADDRESS = "203.0.113.2/24"
UPLINK_INTERNET_INTERFACE = "isp0"
UPLINK_INTERNET_ADDRESS = "203.0.113.1/24"
UPLINK_NEXT_HOP = "203.0.113.1"
INTERNET_HOST = "198.51.100.1"
UPLINK_GATEWAY_ADDRESS6 = "2001:db8:ff00::2/64"
UPLINK_INTERNET_ADDRESS6 = "2001:db8:ff00::1/64"
UPLINK_NEXT_HOP6 = "2001:db8:ff00::1"
INTERNET_HOST6 = "2001:db8:ffff::1"
NAMESPACE_PREFIX = "mnigs-"

_NODE_SYSCTLS = [
    "net.ipv4.ip_forward=1",
    "net.ipv6.conf.all.forwarding=1",
    "net.ipv6.conf.all.accept_dad=0",
    "net.ipv6.conf.default.accept_dad=0",
]


def _ip(*args, check=True):
    return runCommand(["ip", *args], check=check)


@cache
def _namespaceProbe():
    # Being root is not enough inside some containers: try the real thing
    # once per process.
    name = f"{NAMESPACE_PREFIX}probe-{secrets.token_hex(4)}"
    try:
        _ip("netns", "add", name)
        _ip("-n", name, "link", "add", "p0", "type", "veth",
            "peer", "name", "p1")
    except (OSError, subprocess.SubprocessError) as e:
        return f"cannot create network namespaces with veth pairs: {e}"
    finally:
        _ip("netns", "del", name, check=False)
    return None


def missingForNamespaces(*binaries):
    """
    Say why namespace tests cannot run here, or C{None} if they can.

    @param binaries: programs the test needs on C{PATH} besides C{ip}.
    """
    if not sys.platform.startswith("linux"):
        return "needs Linux network namespaces"
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    for binary in ("ip", "sysctl") + binaries:
        if shutil.which(binary) is None:
            return f"needs {binary} on PATH"
    if importlib.util.find_spec("pyroute2") is None:
        return "needs pyroute2"
    return _namespaceProbe()


def requireNamespaces(testcase, *binaries):
    """
    Skip C{testcase} when namespace tests cannot run, or fail it when the
    C{CI} environment variable is set: in CI they must run.
    """
    reason = missingForNamespaces(*binaries)
    if reason is not None:
        skipOrFail(testcase, reason)


def skipOrFail(testcase, reason):
    """
    Skip C{testcase} for C{reason}, or fail it when the C{CI} environment
    variable is set: in CI every test must run.
    """
    if os.environ.get("CI"):
        testcase.fail(reason)
    raise unittest.SkipTest(reason)


class Mesh:
    """
    A set of network namespaces for one test; see the module docstring.

    @ivar prefix: C{mnigs-} and 8 random hex digits, for every namespace.
    @ivar nodes: node name -> L{Node}, in creation order.
    @ivar tmp: temporary directory holding each node's L{Node.tmp}.
    """

    internetHost = INTERNET_HOST
    internetHost6 = INTERNET_HOST6

    def __init__(self, testcase, hello=0.5):
        """
        @param testcase: whose C{addCleanup} gets L{destroy}; C{None} to use
            the mesh as a context manager instead (benchmarks).
        @param hello: babeld hello interval in seconds; 0 or C{None} for
            babeld's defaults.
        """
        self.prefix = NAMESPACE_PREFIX + secrets.token_hex(4)
        self.hello = hello
        self.babelFiltered = True
        self.nodes = {}
        self.tmp = None
        self._processes = []
        self._subnetsUsed = 0
        self._nodeAddresses = 0
        if testcase is not None:
            testcase.addCleanup(self.destroy)
        self.tmp = tempfile.mkdtemp(prefix=self.prefix + "-")

    def __enter__(self):
        return self

    def __exit__(self, *excInfo):
        self.destroy()

    def track(self, process):
        """
        Have L{destroy} stop C{process} (a C{Popen} started in its own
        process group); L{Node.spawn} does this for its processes.
        """
        self._processes.append(process)

    def _node(self, node):
        return self.nodes[node] if isinstance(node, str) else node

    def _addNode(self, name, address):
        if name in self.nodes:
            raise ValueError(f"{self.prefix} already has a node {name!r}")
        if not name or not name.replace("-", "").isalnum():
            raise ValueError(f"bad node name {name!r}")
        ns = f"{self.prefix}-{name}"
        tmp = os.path.join(self.tmp, name)
        os.mkdir(tmp)
        node = self.nodes[name] = Node(self, name, ns, address, tmp)
        _ip("netns", "add", ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        node.run(["sysctl", "-q", "-w"] + _NODE_SYSCTLS)
        _ip("-n", ns, "addr", "add", f"{address}/32", "dev", "lo")
        return node

    def node(self, name):
        """
        Create node C{name} with the next node address C{10.251.0.N}.
        """
        if self._nodeAddresses >= 254:
            raise ValueError("at most 254 nodes per mesh")
        self._nodeAddresses += 1
        return self._addNode(name, NODE_ADDRESS_FORMAT.format(
            self._nodeAddresses))

    def _veth(self, a, ifA, addrA, b, ifB, addrB):
        if a is b:
            raise ValueError(f"cannot link {a.name} to itself")
        _ip("link", "add", ifA, "netns", a.ns, "type", "veth",
            "peer", "name", ifB, "netns", b.ns)
        for node, ifname, address in ((a, ifA, addrA), (b, ifB, addrB)):
            if address is not None:
                _ip("-n", node.ns, "addr", "add", address, "dev", ifname)
                node.interfaceAddresses[ifname] = address
            _ip("-n", node.ns, "link", "set", ifname, "up")

    def link(self, a, b, a_addr=None, b_addr=None):
        """
        Connect nodes (or node names) C{a} and C{b} with a veth pair that
        babeld will run on, addressed C{a_addr} and C{b_addr} (IPv4 with
        prefix length, e.g. C{"10.99.1.1/24"}); without both, the next
        unused C{10.99.K.1/24} and C{10.99.K.2/24}.

        @return: the interface names on C{a} and on C{b}.
        """
        a, b = self._node(a), self._node(b)
        if a_addr is None and b_addr is None:
            a_addr, b_addr = self._nextSubnet()
        subnets = {str(ipaddress.ip_interface(address).network)
                   for address in (a_addr, b_addr) if address is not None}
        ifA = f"m{len(a.meshInterfaces)}"
        ifB = f"m{len(b.meshInterfaces)}"
        self._veth(a, ifA, a_addr, b, ifB, b_addr)
        for node, ifname in ((a, ifA), (b, ifB)):
            node.meshInterfaces.append(ifname)
            node.meshSubnets.extend(sorted(subnets - set(node.meshSubnets)))
        return ifA, ifB

    def _nextSubnet(self):
        used = {subnet for node in self.nodes.values()
                for subnet in node.meshSubnets}
        while True:
            self._subnetsUsed += 1
            if self._subnetsUsed > 255:
                raise ValueError("no free 10.99.K.0/24 subnet left")
            candidate = MESH_SUBNET_FORMAT.format(self._subnetsUsed, 0)
            if candidate not in used:
                return (MESH_SUBNET_FORMAT.format(self._subnetsUsed, 1),
                        MESH_SUBNET_FORMAT.format(self._subnetsUsed, 2))

    def internet(self, gateway, name=None, ipv6=False):
        """
        Attach an internet node to C{gateway} (see the module docstring) and
        give the gateway its C{proto static} default route.

        @param name: node name; by default C{inet}, then C{inet2}, C{inet3}
            ... for further gateways.
        @param ipv6: IPv6 on the uplink too, and the host L{internetHost6}.
        @return: the internet L{Node}; its C{address} is L{internetHost}.
        """
        gateway = self._node(gateway)
        if gateway.uplink is not None:
            raise ValueError(f"{gateway.name} already has an uplink")
        if name is None:
            name, k = "inet", 1
            while name in self.nodes:
                k += 1
                name = f"inet{k}"
        internet = self._addNode(name, INTERNET_HOST)
        self._veth(gateway, UPLINK_INTERFACE, UPLINK_GATEWAY_ADDRESS,
                   internet, UPLINK_INTERNET_INTERFACE,
                   UPLINK_INTERNET_ADDRESS)
        _ip("-n", gateway.ns, "route", "add", "default",
            "via", UPLINK_NEXT_HOP, "dev", UPLINK_INTERFACE, "proto", "static")
        if ipv6:
            _ip("-n", gateway.ns, "addr", "add", UPLINK_GATEWAY_ADDRESS6, "dev", UPLINK_INTERFACE)
            _ip("-n", internet.ns, "addr", "add", UPLINK_INTERNET_ADDRESS6,
                "dev", UPLINK_INTERNET_INTERFACE)
            _ip("-n", internet.ns, "addr", "add", f"{INTERNET_HOST6}/128", "dev", "lo")
            _ip("-n", gateway.ns, "-6", "route", "add", "default", "via", UPLINK_NEXT_HOP6,
                "dev", UPLINK_INTERFACE, "proto", "static")
        gateway.uplink = UPLINK_INTERFACE
        gateway.internet = internet
        return internet

    def routeToGateway6(self, gateway, prefix):
        """
        Have C{gateway}'s internet node route C{prefix} (an IPv6 pool the
        gateway hands out without NAT, C{nat6 = false}) to the gateway.
        """
        gateway = self._node(gateway)
        gateway.internet.run(["ip", "-6", "route", "replace", prefix, "via",
                              UPLINK_GATEWAY_ADDRESS6.split("/")[0], "dev",
                              UPLINK_INTERNET_INTERFACE])

    def babelConfig(self, node, hello, extra=()):
        """
        The babeld configuration text for C{node}; see L{babelConfigText}.
        """
        node = self._node(node)
        return babelConfigText(node.name, node.address, node.meshInterfaces,
                               node.meshSubnets, node.uplink is not None,
                               hello, extra, filtered=self.babelFiltered)

    def startBabel(self, nodes=None, hello=None, extra=None, filtered=True):
        """
        Start babeld on C{nodes} (default: every node with mesh interfaces)
        and return once each answers on its local socket.

        @param hello: hello interval; default L{hello}; 0 for babeld's.
        @param extra: node (or name) -> extra configuration lines.
        @param filtered: C{False}: babeld's default redistribution (every
            local address, no default route) on every node of the mesh.
        """
        self.babelFiltered = filtered
        if nodes is None:
            nodes = [n for n in self.nodes.values() if n.meshInterfaces]
        nodes = [self._node(n) for n in nodes]
        hello = self.hello if hello is None else hello
        extra = {self._node(k): v for k, v in (extra or {}).items()}
        for node in nodes:
            if node.babeld is not None:
                raise ValueError(f"babeld already runs on {node.name}")
            if not node.meshInterfaces:
                raise ValueError(f"{node.name} has no mesh interfaces")
        for node in nodes:
            for ifname in node.meshInterfaces:
                waitUntil(lambda: node.hasLinkLocal(ifname), 10,
                          message=f"{node.name} {ifname} link-local address")
            self._spawnBabel(node, hello, extra.get(node, ()))
        for node in nodes:
            self._waitBabelReady(node)

    def _spawnBabel(self, node, hello, extra):
        path = os.path.join(node.tmp, "babeld.conf")
        with open(path, "w") as f:
            f.write(self.babelConfig(node, hello, extra))
        pidFile = os.path.join(node.tmp, "babeld.pid")
        # babeld refuses to start over a pid file left by a killed babeld.
        if os.path.exists(pidFile):
            os.unlink(pidFile)
        node.babeld = node.spawn(
            ["babeld", "-c", path, "-G", str(BABEL_LOCAL_PORT),
             "-I", pidFile,
             "-S", os.path.join(node.tmp, "babel-state"),
             "-L", os.path.join(node.tmp, "babeld.log")]
            + node.meshInterfaces,
            log=os.path.join(node.tmp, "babeld.out"))

    def _waitBabelReady(self, node):
        def answeredOrExited():
            if node.babeld.poll() is not None:
                return "exited"
            node.babelRequest("dump")
            return "answered"

        outcome = waitUntil(answeredOrExited, 10,
                            message=f"babeld on {node.name} to answer")
        if outcome == "exited":
            code, node.babeld = node.babeld.returncode, None
            raise RuntimeError(
                f"babeld on {node.name} exited with {code}:\n"
                + fileTail(os.path.join(node.tmp, "babeld.out"))
                + fileTail(os.path.join(node.tmp, "babeld.log")))

    def stopBabel(self, node):
        """
        Stop babeld on C{node} (TERM, then KILL after a grace period); it
        retracts its routes on TERM. L{startBabel} may start it again.
        """
        node = self._node(node)
        if node.babeld is None:
            return
        process, node.babeld = node.babeld, None
        terminate([process])
        if process in self._processes:
            self._processes.remove(process)

    def waitConverged(self, timeout=20, nodes=None):
        """
        Wait until every babel node (or each of C{nodes}) has a babel route
        in its kernel to every other babel node's address and, if some
        babel node has an uplink, a default route; return the seconds it
        took.
        """
        started = time.monotonic()
        speakers = [n for n in self.nodes.values() if n.babeld is not None]
        nodes = speakers if nodes is None else [self._node(n) for n in nodes]

        def missing(node):
            have = {destination for destination, gateway, proto
                    in node.routes(PROTO_BABEL)}
            want = {f"{other.address}/32" for other in speakers
                    if other is not node}
            if self.babelFiltered and any(other.uplink for other in speakers
                                          if other is not node):
                if node.uplink is None:
                    want.add("0.0.0.0/0")
            return want - have

        waitUntil(lambda: not any(missing(node) for node in nodes), timeout,
                  message="babel routes between all nodes")
        return time.monotonic() - started

    def clientNextToGateway(self, ipv6=False):
        """
        The smallest topology with a gateway, converged::

            client --- gw === internet

        (C{ipv6}: the uplink carries IPv6 too, see L{internet}.)  Returns
        the nodes (client, gw).
        """
        client, gw = self.node("client"), self.node("gw")
        self.link(client, gw)
        self.internet(gw, ipv6=ipv6)
        self.startBabel()
        self.waitConverged()
        return client, gw

    def nearAndFarGateway(self, filtered=True, ipv6=False):
        """
        Two gateways at different distances, converged (C{filtered}: see
        L{startBabel}; C{ipv6}: both uplinks carry IPv6 too, see
        L{internet})::

            client --- r1 --- gwA === internet
                        |
                        r2 --- gwB === internet2

        Returns the nodes (client, gwA, gwB).
        """
        client, r1, r2, gwA, gwB = (self.node(n) for n in ("client", "r1", "r2", "gwA", "gwB"))
        self.link(client, r1)
        self.link(r1, gwA)
        self.link(r1, r2)
        self.link(r2, gwB)
        self.internet(gwA, ipv6=ipv6)
        self.internet(gwB, ipv6=ipv6)
        self.startBabel(filtered=filtered)
        self.waitConverged()
        return client, gwA, gwB

    def gatewayWithThief(self):
        """
        The topology of the gateway-method tests, converged::

            client --- r1 --- gw === internet
                              |
                              thief   (an unregistered node next to the gateway)

        Returns the nodes (client, r1, gw, thief).
        """
        client, r1, gw, thief = (self.node(n) for n in ("client", "r1", "gw", "thief"))
        self.link(client, r1)
        self.link(r1, gw)
        self.link(thief, gw)
        self.internet(gw)
        self.startBabel()
        self.waitConverged()
        return client, r1, gw, thief

    def sharedInternet(self, *gateways, name="inet"):
        """
        One internet node behind every gateway of C{gateways}, each on an
        uplink of its own, so that the internet host tells them apart by
        the (masqueraded) source address of what reaches it::

            gateway K  up0 203.0.K.2/24 <---> 203.0.K.1/24 ispK  internet
                                                          lo 198.51.100.1/32

        with K = 113, 114...  Each gateway gets C{default via 203.0.K.1
        dev up0 proto static}, as with L{internet}.

        @return: the internet L{Node} and each gateway's uplink address,
            in the order given.
        """
        internet = self._addNode(name, INTERNET_HOST)
        uplinks = []
        for k, gateway in enumerate(map(self._node, gateways)):
            if gateway.uplink is not None:
                raise ValueError(f"{gateway.name} already has an uplink")
            subnet = f"203.0.{113 + k}"
            self._veth(gateway, UPLINK_INTERFACE, f"{subnet}.2/24",
                       internet, f"isp{k}", f"{subnet}.1/24")
            _ip("-n", gateway.ns, "route", "add", "default", "via", f"{subnet}.1",
                "dev", UPLINK_INTERFACE, "proto", "static")
            gateway.uplink = UPLINK_INTERFACE
            gateway.internet = internet
            uplinks.append(f"{subnet}.2")
        return internet, uplinks

    def destroy(self):
        """
        Kill every process, delete every namespace of this mesh and its
        temporary files. Idempotent; logs problems instead of raising.
        """
        for node in self.nodes.values():
            node.babeld = None
        processes, self._processes = self._processes, []
        _guarded("stop spawned processes", terminate, processes)
        namespaces = {node.ns for node in self.nodes.values()}
        try:
            from pyroute2 import netns
            namespaces.update(ns for ns in netns.listnetns()
                              if ns.startswith(self.prefix + "-"))
        except Exception as e:
            log.warn("cannot list namespaces of {prefix}: {error!r}",
                     prefix=self.prefix, error=e)
        _guarded("kill processes left in namespaces",
                 killNamespaceProcesses, namespaces)
        for node in self.nodes.values():
            ipr, node._ipr = node._ipr, None
            if ipr is not None:
                _guarded(f"close IPRoute of {node.ns}", ipr.close)
        for ns in sorted(namespaces):
            if os.path.exists(os.path.join("/run/netns", ns)):
                _guarded(f"delete namespace {ns}", runCommand,
                         ["ip", "netns", "del", ns])
        from tests.mesh.resolver import removeResolvConf
        for ns in sorted(namespaces):
            _guarded(f"remove /etc/netns/{ns}", removeResolvConf, ns)
        tmp, self.tmp = self.tmp, None
        if tmp is not None:
            _guarded(f"remove {tmp}", shutil.rmtree, tmp)


def _guarded(what, f, *args):
    try:
        f(*args)
    except Exception as e:
        log.warn("mesh cleanup: cannot {what}: {error!r}", what=what, error=e)
