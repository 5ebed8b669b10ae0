"""
Name resolution in a namespace mesh (L{tests.mesh.harness}), for tests and
benchmarks alike:

  - L{startResolver}: a real resolver, Debian's dnsmasq, in a node,
    answering a few fixed names and nothing else (no upstream, no hosts
    file); stopped with the mesh (L{Node.spawn} tracks it);
  - L{setResolvConf} / L{resolvConfState}: a node's own /etc/resolv.conf.
    C{ip netns exec NS} binds C{/etc/netns/NS/resolv.conf} over
    C{/etc/resolv.conf} for everything it starts, so whatever the test
    starts in the node afterwards (an mnigs-client, C{getent}) sees and
    writes that file, never the host's; L{Mesh.destroy} removes
    C{/etc/netns/NS};
  - L{systemLookup}: a name through the node's system resolver (glibc,
    C{getent ahostsv4}), as any program there would resolve it;
  - L{query}: one DNS question to a given server from the node;
  - L{dnsWorks}: the check C{dns_ok} of bench/router.py is made of.

Typical use (a client in C{client}, its gateway offering C{198.51.100.1}
where the internet node C{inet} runs the resolver)::

    startResolver(inet, "198.51.100.1", {"test.mnigs": "198.51.100.7"})
    before = setResolvConf(client, b"nameserver 10.99.0.1\\n")
    ... start the client with [dns] mode = "file", wait until online ...
    assert dnsWorks(client, "test.mnigs", "198.51.100.7")
    ... stop the client ...
    assert resolvConfState(client) == before
"""

import ipaddress
import os
import secrets
import shutil
import socket
import stat
import struct

from tests.mesh.commands import waitUntil

DNSMASQ = "/usr/sbin/dnsmasq"
NETNS_ETC = "/etc/netns"


def startResolver(node, address, records, dynamic=False, timeout=10):
    """
    dnsmasq in C{node}, on C{address} port 53 (added to its C{lo} if the
    node lacks it), answering each name of C{records} (name -> IPv4
    address) and refusing the rest; waits until it answers.

    @param dynamic: C{address} may appear later on some interface (a
        gateway's tunnel address): dnsmasq's C{--bind-dynamic}, and no
        wait for an answer.
    @return: the dnsmasq C{Popen} (L{Mesh.destroy} stops it).
    """
    if not dynamic and not _hasAddress(node, address):
        node.run(["ip", "addr", "add", f"{address}/32", "dev", "lo"])
    argv = [DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
            "--no-hosts", "--no-poll", "--user=root", "--group=root", "--log-facility=-",
            "--log-queries", f"--pid-file={os.path.join(node.tmp, f'dnsmasq-{address}.pid')}",
            f"--listen-address={address}", "--bind-dynamic" if dynamic else "--bind-interfaces"]
    argv += [f"--address=/{name}/{ip}" for name, ip in sorted(records.items())]
    process = node.spawn(argv)
    if not dynamic:
        name, ip = next(iter(records.items()))
        waitUntil(lambda: process.poll() is not None or query(node, address, name) == [ip],
                  timeout, message=f"dnsmasq on {address} in {node.name}")
        if process.poll() is not None:
            with open(process.logPath) as f:
                raise AssertionError(f"dnsmasq exited with {process.returncode}: {f.read()}")
    return process


def _hasAddress(node, address):
    wanted = ipaddress.ip_address(address)
    family = socket.AF_INET if wanted.version == 4 else socket.AF_INET6
    return any(ipaddress.ip_address(a.get_attr("IFA_ADDRESS")) == wanted
               for a in node.ipr().get_addr(family=family))


def resolvConfPath(node):
    return os.path.join(NETNS_ETC, node.ns, "resolv.conf")


def setResolvConf(node, data, mode=0o644):
    """
    Give C{node} a resolv.conf of its own holding C{data}, with C{mode}
    (processes started in the node from now on see it as
    /etc/resolv.conf).  Returns L{resolvConfState}.
    """
    path = resolvConfPath(node)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    return resolvConfState(node)


def resolvConfState(node):
    """
    C{(bytes, mode, kind)} of C{node}'s resolv.conf as the host sees it
    (C{None} when there is none): what "restored byte for byte" compares.
    """
    path = resolvConfPath(node)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        return (os.readlink(path).encode(), 0, "symlink")
    with open(path, "rb") as f:
        return (f.read(), stat.S_IMODE(info.st_mode), "file")


def removeResolvConf(ns):
    "What L{Mesh.destroy} does for every namespace: its /etc/netns/NS goes."
    shutil.rmtree(os.path.join(NETNS_ETC, ns), ignore_errors=True)
    try:
        os.rmdir(NETNS_ETC)  # only if nobody else has one
    except OSError:
        pass


def systemLookup(node, name, timeout=15):
    """
    C{name}'s first IPv4 address through C{node}'s system resolver
    (nsswitch, then the resolv.conf it sees), or C{None}.
    """
    result = node.run(["getent", "ahostsv4", name], check=False, timeout=timeout)
    if result.returncode != 0 or not result.stdout.split():
        return None
    return result.stdout.split()[0]


def dnsWorks(node, name, expected, timeout=10):
    """
    Whether C{node}'s system resolver gives C{expected} for C{name} within
    C{timeout} seconds (asked again until then): bench/router.py's
    C{dns_ok}.
    """
    try:
        waitUntil(lambda: systemLookup(node, name) == expected, timeout, interval=0.2,
                  message=f"{name} -> {expected} in {node.name}")
    except AssertionError:
        return False
    return True


def query(node, server, name, timeout=1.0):
    """
    Ask C{server} (port 53, UDP) from inside C{node} for C{name}'s A
    records: the addresses, C{[]} for an answer without any, C{None}
    when nothing answered within C{timeout}.
    """
    ident = secrets.randbelow(65536)
    question = b"".join(bytes([len(label)]) + label.encode("ascii")
                        for label in name.rstrip(".").split(".")) + b"\0"
    packet = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + question + struct.pack("!HH", 1, 1)
    family = socket.AF_INET if ipaddress.ip_address(server).version == 4 else socket.AF_INET6
    with node.openSocket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(packet, (server, 53))
        try:
            while True:
                answer, _ = sock.recvfrom(4096)
                if answer[:2] == packet[:2]:
                    return _addresses(answer, len(packet))
        except socket.timeout:
            return None


def _addresses(answer, offset):
    count = struct.unpack("!H", answer[6:8])[0]
    found = []
    for _ in range(count):
        offset = _skipName(answer, offset)
        kind, _class, _ttl, length = struct.unpack("!HHIH", answer[offset:offset + 10])
        offset += 10
        if kind == 1 and length == 4:
            found.append(socket.inet_ntoa(answer[offset:offset + 4]))
        offset += length
    return found


def _skipName(data, offset):
    while True:
        length = data[offset]
        if length & 0xC0 == 0xC0:
            return offset + 2
        if length == 0:
            return offset + 1
        offset += 1 + length


class DNSCheck:
    """
    The DNS point of issue 15 on any mesh with a client and a gateway that
    has an internet node (bench/router.py's C{dns_ok})::

        check = DNSCheck(client, gw)
        check.prepare()                       # before the daemons start
        gateway(gw, methods=check.gatewayMethods)   # merged into its config
        clientProcess(client, **check.clientConfig)  # likewise
        ... wait until the client is online ...
        resolves = check.online()             # the name resolves through the lease's resolver
        ... stop the client ...
        dns_ok = resolves and check.restored()  # its resolv.conf byte for byte as before

    The gateway offers a dnsmasq on its internet node's host address
    (L{INTERNET_HOST}); the client runs with C{[dns] mode = "file"} on
    its namespace's own resolv.conf, which starts as L{ORIGINAL}.
    """

    NAME = "test.mnigs"
    ANSWER = "198.51.100.7"
    ORIGINAL = (b"# the mesh's own resolver\nnameserver 10.99.250.1\nsearch mesh.example\n"
                b"options timeout:1 attempts:1\n")

    def __init__(self, client, gateway, method="wireguard"):
        from tests.mesh.harness import INTERNET_HOST

        self.client = client
        self.gateway = gateway
        self.resolver = INTERNET_HOST
        self.gatewayMethods = {method: {"dns": [self.resolver]}}
        self.clientConfig = {"dns": {"mode": "file"}}
        self.before = None

    def prepare(self, mode=0o644):
        "Start the resolver and give the client its resolv.conf."
        startResolver(self.gateway.internet, self.resolver, {self.NAME: self.ANSWER})
        self.before = setResolvConf(self.client, self.ORIGINAL, mode)

    def online(self, timeout=10):
        "Whether the client's system resolver answers through the lease's resolver."
        return dnsWorks(self.client, self.NAME, self.ANSWER, timeout)

    def restored(self):
        "Whether the client's resolv.conf is byte for byte (and mode) what it was."
        return self.before is not None and resolvConfState(self.client) == self.before
