"""
One network namespace of a namespace-harness mesh; see L{tests.mesh.harness}.
"""

import os
import socket
import subprocess

from tests.mesh.babelconfig import BABEL_LOCAL_PORT, readBabelReply
from tests.mesh.commands import runCommand


class Node:
    """
    One network namespace of a L{Mesh}.

    @ivar address: its node address (C{10.251.0.N}); for an internet node,
        its public host address.
    @ivar meshInterfaces: veth interfaces babeld runs on.
    @ivar meshSubnets: the subnets of those interfaces, announced by babeld.
    @ivar interfaceAddresses: interface name -> address with prefix.
    @ivar uplink: C{"up0"} once L{Mesh.internet} attached an internet node.
    @ivar internet: that internet L{Node}.
    @ivar babeld: the running babeld C{Popen}, or C{None}.
    """

    def __init__(self, mesh, name, ns, address, tmp):
        self.mesh = mesh
        self.name = name
        self.ns = ns
        self.address = address
        self.tmp = tmp
        self.meshInterfaces = []
        self.meshSubnets = []
        self.interfaceAddresses = {}
        self.uplink = None
        self.internet = None
        self.babeld = None
        self._ipr = None
        self._spawned = 0

    def __repr__(self):
        return f"<Node {self.name} {self.ns} {self.address}>"

    def run(self, argv, check=True, timeout=30, input=None):
        """
        Run C{argv} inside the namespace and capture its text output.

        @raise CommandFailed: if C{check} and it exits non-zero.
        """
        return runCommand(["ip", "netns", "exec", self.ns] + list(argv),
                          check=check, timeout=timeout, input=input)

    def spawn(self, argv, log=None, env=None, umask=None):
        """
        Start C{argv} inside the namespace in its own process group, with
        stdout and stderr going to C{log} (a path or an open file; by default
        C{NAME-K.log} under L{tmp}, available as C{process.logPath}).
        C{env} adds to (does not replace) this process's environment;
        C{umask}, if given, replaces ours.  L{Mesh.destroy} kills it.
        """
        self._spawned += 1
        if log is None:
            log = os.path.join(
                self.tmp,
                f"{os.path.basename(argv[0])}-{self._spawned}.log")
        environment = None if env is None else {**os.environ, **env}
        if isinstance(log, (str, os.PathLike)):
            logPath, output = os.fspath(log), open(log, "ab")
        else:
            logPath, output = getattr(log, "name", None), log
        try:
            process = subprocess.Popen(
                ["ip", "netns", "exec", self.ns] + list(argv),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=environment,
                umask=-1 if umask is None else umask,
            )
        finally:
            if output is not log:
                output.close()
        process.logPath = logPath
        self.mesh.track(process)
        return process

    def ping(self, addr, timeout=1.0):
        """
        Send one ping to C{addr}; C{True} if it was answered within
        C{timeout} seconds.
        """
        result = self.run(["ping", "-n", "-q", "-c", "1", "-W", str(timeout),
                           addr], check=False, timeout=timeout + 10)
        return result.returncode == 0

    def ipr(self):
        """
        A blocking pyroute2 C{IPRoute} inside the namespace, cached and
        closed by L{Mesh.destroy}.
        """
        if self._ipr is None:
            from pyroute2 import IPRoute
            # flags=0: never re-create a namespace that is gone.
            self._ipr = IPRoute(netns=self.ns, flags=0)
        return self._ipr

    def routes(self, proto=None):
        """
        IPv4 main-table routes as C{(destination/length, gateway, proto)}
        tuples, optionally only those of kernel protocol C{proto}.
        """
        found = []
        for route in self.ipr().get_routes(family=socket.AF_INET, table=254):
            if proto is not None and route["proto"] != proto:
                continue
            destination = route.get_attr("RTA_DST") or "0.0.0.0"
            found.append((f"{destination}/{route['dst_len']}",
                          route.get_attr("RTA_GATEWAY"), route["proto"]))
        return found

    def openSocket(self, family=socket.AF_INET, type=socket.SOCK_STREAM):
        """
        A socket that lives in this namespace (e.g. to connect to a daemon
        listening on its loopback).
        """
        from pyroute2 import netns
        return netns.create_socket(self.ns, family, type, flags=0)

    def babelRequest(self, request, timeout=5.0):
        """
        Send one request line to babeld's local socket and return its answer
        without the final C{ok}.

        @raise BabelRequestFailed: babeld answered C{no} or C{bad}.
        """
        with self.openSocket(socket.AF_INET6) as sock:
            sock.settimeout(timeout)
            sock.connect(("::1", BABEL_LOCAL_PORT))
            reader = sock.makefile("r", encoding="utf-8", newline="\n")
            readBabelReply(reader)  # the BABEL 1.0 ... ok greeting
            sock.sendall(request.encode("utf-8") + b"\n")
            return readBabelReply(reader)

    def babelDump(self):
        """
        babeld's C{dump}: its C{add interface/neighbour/xroute/route ...}
        lines.
        """
        return self.babelRequest("dump")

    def hasLinkLocal(self, ifname):
        """
        C{True} once C{ifname} has an IPv6 link-local address.
        """
        ipr = self.ipr()
        index = ipr.link_lookup(ifname=ifname)[0]
        return any(
            address["scope"] == 253
            for address in ipr.get_addr(family=socket.AF_INET6, index=index)
        )
