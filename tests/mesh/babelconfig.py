"""
babeld's side of the namespace harness: the configuration it is started
with and its local-socket replies.
"""

import ipaddress

BABEL_LOCAL_PORT = 33123
PROTO_STATIC = 4
PROTO_BABEL = 42


class BabelRequestFailed(Exception):
    """
    babeld answered a local-socket request with C{no} or C{bad}, or hung up.
    """


def babelConfigText(name, address, interfaces, subnets, uplink, hello,
                    extra=(), filtered=True):
    """
    The babeld configuration of one node.

    @param address: the node address, announced as a /32.
    @param interfaces: mesh interfaces, all C{type wired}.
    @param subnets: mesh subnets, announced from their connected routes.
    @param uplink: whether to announce the node's C{proto static} default
        route.
    @param hello: hello interval in seconds; falsy for babeld's default.
    @param extra: lines placed before the redistribution rules, so that
        their filters take precedence (babeld applies the first match).
    @param filtered: C{False} for babeld's own default redistribution
        (every local address, tunnel addresses included, and no default
        route), as on a mesh node nobody configured: no rule is written
        but C{extra}.
    """
    interval = f" hello-interval {hello}" if hello else ""
    lines = [f"# mnigs test harness, node {name}", "random-id true"]
    lines += [f"interface {ifname} type wired{interval}"
              for ifname in interfaces]
    lines += list(extra)
    if not filtered:
        return "\n".join(lines) + "\n"
    lines.append(f"redistribute local ip {address}/32 allow")
    for subnet in subnets:
        length = ipaddress.ip_network(subnet).prefixlen
        lines.append(f"redistribute ip {subnet} eq {length} allow")
    if uplink:
        lines.append(
            f"redistribute ip 0.0.0.0/0 eq 0 proto {PROTO_STATIC} allow")
    # Without these babeld announces every local address (203.0.113.2 on a
    # gateway's up0 included) as a /32.
    lines += ["redistribute local deny", "redistribute deny"]
    return "\n".join(lines) + "\n"


def readBabelReply(reader):
    """
    Read one reply from babeld's local socket (a text file object): its
    lines up to the final C{ok}, which is left out.

    @raise BabelRequestFailed: the reply ended with C{no} or C{bad}.
    """
    lines = []
    while True:
        line = reader.readline()
        if not line:
            raise BabelRequestFailed(
                "babeld closed its local socket: " + "".join(lines))
        if line.rstrip("\n") == "ok":
            return "".join(lines)
        if line.rstrip("\n") in ("no", "bad"):
            raise BabelRequestFailed("".join(lines) + line)
        lines.append(line)
