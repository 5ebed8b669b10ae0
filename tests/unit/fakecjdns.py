"""
A FAKE cjdns admin endpoint: cjdns cannot be installed here, so the admin
client, the route source and the cjdns method are tested against this
instead.  It follows cjdns's own code, function by function:

  - admin/Admin.c: requests over 512 bytes (Admin_MAX_REQUEST_SIZE,
    admin/Admin.h) get C{d5:error16:Request too big.e}; unparsable data
    and data without C{q} get no answer; C{cookie} answers the clock's
    seconds; C{auth} is checked like authValid (cookie at most 20 s old
    and not from the future, a 64-character hash found in the raw request
    and replaced by sha256hex of the first 63 bytes of password+cookie,
    then sha256hex of the whole request compared); password C{NONE}
    authenticates everything; functions needing auth otherwise answer
    "No functions matched your request, try Admin_availableFunctions()";
    required arguments are checked like checkArgs; the txid is echoed.
  - admin/angel/Core.c: Core_nodeInfo (myAddr, myIp6, version).
  - dht/dhtcore/NodeStore_admin.c: NodeStore_dumpTable (4 entries a page,
    C{more} when a page is full) and NodeStore_getRouteLabel.
  - net/InterfaceController_admin.c: InterfaceController_peerStats (6 a
    page, C{more} while entries remain).
  - dht/dhtcore/RouterModule_admin.c: RouterModule_getPeers (peers of the
    node named by C{path}, labels relative to that node, not spliced,
    itself included as C{0000.0000.0000.0001}, 8 at most from
    C{nearbyPath} upwards as dht/dhtcore/NodeStore.c NodeStore_getPeers).
  - tunnel/IpTunnel_admin.c: IpTunnel_allowConnection, connectTo,
    removeConnection, listConnections, showConnection, numbered as
    tunnel/IpTunnel.c numbers connections.

Every function call that gets past authentication is recorded in
C{calls} as C{(function, args)} with text arguments.

So that it answers for an overlay of 100,000 nodes as fast as a walk asks
(bench/walk.py), what does not change is worked out once: each node's
getPeers entries (its peers' address strings, in label order: the pages
are slices of it), and the validity of each key met in a C{path}; the
answers are the same as worked out afresh.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re

from twisted.internet.task import Clock

from mnigs.cjdns import bencode
from mnigs.cjdns.admin import _text
from mnigs.cjdns.names import (
    formatIp,
    formatKey,
    formatLabel,
    formatNodeAddress,
    parseKey,
    parseLabel,
    parseNodeAddress,
    splice,
)
from tests.unit.syntheticmesh import oneHopLabel

MAX_REQUEST = 512
TOO_BIG = b"d5:error16:Request too big.e"
NO_MATCH = "No functions matched your request, try Admin_availableFunctions()"
GET_PEERS_MAX = 8


def _strtoll(text: bytes) -> int:
    match = re.match(rb"\s*[+-]?[0-9]+", text)
    return int(match.group(0)) & 0xFFFFFFFF if match else 0


class FakeCjdns:
    """
    The admin API of node C{root} of a L{SyntheticMesh}.

    @param knownHops: how far the node's own NodeStore reaches (what
        dumpTable lists and getRouteLabel can splice).
    @param latency: seconds before the answer to a function, by name
        (C{"cookie"} for cookies).
    """

    FUNCTIONS = {
        # name: (needsAuth, {arg: (type, required)})
        "ping": (False, {}),
        "Core_nodeInfo": (False, {}),
        "NodeStore_dumpTable": (False, {"page": ("Int", True)}),
        "InterfaceController_peerStats": (False, {"page": ("Int", False)}),
        "RouterModule_getPeers": (True, {"path": ("String", True), "timeout": ("Int", False),
                                         "nearbyPath": ("String", False)}),
        "NodeStore_getRouteLabel": (True, {"pathToParent": ("String", True),
                                           "pathParentToChild": ("String", True)}),
        "IpTunnel_allowConnection": (True, {
            "publicKeyOfAuthorizedNode": ("String", True), "ip6Address": ("String", False),
            "ip6Prefix": ("Int", False), "ip6Alloc": ("Int", False),
            "ip4Address": ("String", False), "ip4Prefix": ("Int", False),
            "ip4Alloc": ("Int", False)}),
        "IpTunnel_connectTo": (True, {"publicKeyOfNodeToConnectTo": ("String", True)}),
        "IpTunnel_removeConnection": (True, {"connection": ("Int", True)}),
        "IpTunnel_showConnection": (True, {"connection": ("Int", True)}),
        "IpTunnel_listConnections": (True, {}),
    }
    TYPES = {"Int": int, "String": bytes, "Dict": dict, "List": list}

    def __init__(self, mesh, password: str = "NONE", clock=None, root: int = 0,
                 knownHops: int = 2, latency: dict | None = None):
        self.mesh = mesh
        self.password = password
        self.clock = clock if clock is not None else Clock()
        self.root = root
        self.latency = dict(latency or {})
        self.calls: list[tuple[str, dict]] = []
        self.authFailures = 0
        self.dropRequests = 0
        self.peerStates: dict[int, str] = {}
        self.unresponsive: set[int] = set()
        self.hostile: dict[int, dict] = {}
        self.connections: list[dict] = []
        self.nextConnection = 0
        self.onConnectTo = None
        self._peerEntries: dict[int, list[tuple[int, str]]] = {}
        self._keys: dict = {}  # parseNodeAddress's memo
        bfs = mesh.bfs(root)
        self.known = {index: label for index, (hops, label) in bfs.items() if hops <= knownHops}

    @property
    def node(self):
        return self.mesh.nodes[self.root]

    def callsOf(self, function: str) -> list[dict]:
        return [args for name, args in self.calls if name == function]

    # -- Admin.c -----------------------------------------------------------

    def handle(self, data: bytes) -> list[tuple[float, bytes]]:
        """
        The answers to one request datagram, each with its delay.
        """
        if self.dropRequests:
            self.dropRequests -= 1
            return []
        if len(data) > MAX_REQUEST:
            return [(0, TOO_BIG)]
        try:
            message = bencode.decode(data)
        except bencode.BencodeError:
            return []
        if not isinstance(message, dict) or not isinstance(message.get(b"q"), bytes):
            return []
        txid = message.get(b"txid")
        query = message[b"q"]
        if query == b"cookie":
            delay, reply = self._answer({"cookie": str(int(self.clock.seconds()))}, txid)
            return [(self.latency.get("cookie", 0), reply)]
        authed = False
        if query == b"auth":
            if not self._authValid(message, data):
                self.authFailures += 1
                return [self._answer({"error": "Auth failed."}, txid)]
            query, authed = message.get(b"aq"), True
        if self.password == "NONE":
            authed = True
        name = query.decode("utf-8", "replace") if isinstance(query, bytes) else None
        spec = self.FUNCTIONS.get(name)
        if spec is None or not (authed or not spec[0]):
            return [self._answer({"error": NO_MATCH}, txid)]
        args = message.get(b"args")
        args = args if isinstance(args, dict) else {}
        for arg, (kind, required) in spec[1].items():
            if required and not isinstance(args.get(arg.encode()), self.TYPES[kind]):
                error = f"Entry [{arg}] is required and must be of type [{kind}]"
                return [self._answer({"error": error}, txid)]
        # Optional arguments of the wrong type read as absent (Dict_getInt
        # and friends return NULL).
        typed = {}
        for arg, (kind, _) in spec[1].items():
            value = args.get(arg.encode())
            if isinstance(value, self.TYPES[kind]):
                typed[arg] = _text(value)
        self.calls.append((name, typed))
        answer = getattr(self, "do_" + name)(dict(typed))
        return [(self.latency.get(name, 0), self._answer(answer, txid)[1])]

    def _answer(self, answer: dict, txid) -> tuple[float, bytes]:
        if isinstance(txid, bytes):
            answer = dict(answer, txid=txid)
        return 0, bencode.encode(answer)

    def _authValid(self, message: dict, raw: bytes) -> bool:
        cookieField = message.get(b"cookie")
        cookie = _strtoll(cookieField) if isinstance(cookieField, bytes) else 0
        if not cookie and isinstance(message.get(b"cookie"), int):
            cookie = message[b"cookie"] & 0xFFFFFFFF
        now = int(self.clock.seconds())
        submitted = message.get(b"hash")
        if cookie > now or cookie < now - 20 or not isinstance(submitted, bytes) or len(submitted) != 64:
            return False
        at = raw.find(submitted)
        if at < 0 or not self.password:
            return False
        passAndCookie = (self.password.encode() + b"%d" % cookie)[:63]
        first = hashlib.sha256(passAndCookie).hexdigest().encode()
        rewritten = raw[:at] + first + raw[at + 64:]
        return hashlib.sha256(rewritten).hexdigest().encode() == submitted

    # -- functions ---------------------------------------------------------

    def do_ping(self, args):
        return {"q": "pong"}

    def do_Core_nodeInfo(self, args):
        # admin/angel/Core.c nodeInfo (the encoding scheme left out).
        return {"myAddr": self._address(self.root, 1), "myIp6": formatIp(self.node.ip),
                "version": self.node.version, "error": "none"}

    def _address(self, index: int, label: int) -> str:
        node = self.mesh.nodes[index]
        return formatNodeAddress(node.version, label, node.key)

    def do_NodeStore_dumpTable(self, args):
        rows = sorted(self.known.items(), key=lambda item: int(self.mesh.nodes[item[0]].ip))
        start = args["page"] * 4
        table = []
        for index, label in rows[start:start + 4]:
            node = self.mesh.nodes[index]
            table.append({"ip": formatIp(node.ip), "addr": self._address(index, label),
                          "path": formatLabel(label), "link": 1000 * (label.bit_length() // 4),
                          "version": node.version, "time": 1234, "bucket": 0})
        answer = {"routingTable": table, "count": len(rows), "peers": len(self.node.peers),
                  "deprecation": "ip,path,version will soon be removed"}
        if len(table) == 4:
            answer["more"] = 1
        return answer

    def do_InterfaceController_peerStats(self, args):
        peers = sorted(self.node.peers.items())
        start = args.get("page", 0) * 6
        stats = []
        for interface, index in peers[start:start + 6]:
            stats.append({"addr": self._address(index, oneHopLabel(interface)),
                          "state": self.peerStates.get(index, "ESTABLISHED"),
                          "bytesIn": 1000, "bytesOut": 2000, "recvKbps": 1, "sendKbps": 1,
                          "last": 1700000000000, "isIncoming": 0, "duplicates": 0,
                          "lostPackets": 0, "receivedOutOfRange": 0})
        answer = {"peers": stats, "total": len(peers)}
        if start + 6 < len(peers):
            answer["more"] = 1
        return answer

    def _nodeFor(self, path: str):
        # RouterModule_admin.c getNode: a label known to the NodeStore, an
        # address it knows, or a full node address string.
        if len(path) == 19:
            try:
                label = parseLabel(path)
            except ValueError:
                return None, "parse_path"
            found = [i for i, known in self.known.items() if known == label]
            return (found[0], label) if found else (None, "not_found")
        try:
            ip = ipaddress.IPv6Address(path)
        except ValueError:
            pass
        else:
            node = self.mesh.byIp(ip)
            if node is None or node.index not in self.known:
                return None, "not_found"
            return node.index, self.known[node.index]
        try:
            address = parseNodeAddress(path, self._keys)
        except ValueError:
            return None, "parse_path"
        reached = self.mesh.resolve(address.label, self.root)
        if reached is None or self.mesh.nodes[reached].key != address.key:
            return None, "timeout"  # the packet goes nowhere, or to someone else
        return reached, address.label

    def do_RouterModule_getPeers(self, args):
        index, labelOrError = self._nodeFor(args["path"])
        if index is None and labelOrError != "timeout":
            return {"error": labelOrError}
        if index is None or index in self.unresponsive:
            return {"result": "timeout", "ms": 1000, "error": "none"}
        if index in self.hostile:
            return self.hostile[index]
        nearby = 0
        if "nearbyPath" in args:
            try:
                nearby = parseLabel(args["nearbyPath"])
            except ValueError:
                return {"error": "parse_nearbyLabel"}
        chosen = [address for label, address in self._peersOf(index) if label >= nearby]
        return {"result": "peers", "ms": 20, "error": "none", "peers": chosen[:GET_PEERS_MAX]}

    def _peersOf(self, index: int) -> list[tuple[int, str]]:
        """The node itself and its peers: (label, address string), label order."""
        entries = self._peerEntries.get(index)
        if entries is None:
            node = self.mesh.nodes[index]
            labels = [(1, index)] + [(oneHopLabel(i), peer) for i, peer in node.peers.items()]
            entries = [(label, self._address(peer, label)) for label, peer in sorted(labels)]
            self._peerEntries[index] = entries
        return entries

    def do_NodeStore_getRouteLabel(self, args):
        try:
            toParent = parseLabel(args["pathToParent"])
        except ValueError:
            return {"error": "parse_pathToParent"}
        try:
            parentToChild = parseLabel(args["pathParentToChild"])
        except ValueError:
            return {"error": "parse_pathParentToChild"}
        parents = [i for i, label in self.known.items() if label == toParent]
        if not parents:
            return {"error": "NodeStore_getRouteLabel_PARENT_NOT_FOUND"}
        parent = self.mesh.nodes[parents[0]]
        if not any(oneHopLabel(i) == parentToChild for i in parent.peers):
            return {"error": "NodeStore_getRouteLabel_CHILD_NOT_FOUND"}
        label = parentToChild if toParent == 1 else splice(parentToChild, toParent)
        return {"result": formatLabel(label), "error": "none"}

    # -- IpTunnel ----------------------------------------------------------

    def _newConnection(self, key: str, outgoing: bool) -> dict:
        connection = {"number": self.nextConnection, "key": key, "outgoing": int(outgoing)}
        self.nextConnection += 1
        self.connections.append(connection)
        return connection

    def do_IpTunnel_allowConnection(self, args):
        ip6, ip4 = args.get("ip6Address"), args.get("ip4Address")
        if ip6 is None and ip4 is None:
            return {"error": "Must specify ip6Address or ip4Address"}
        try:
            key = parseKey(args["publicKeyOfAuthorizedNode"])
        except ValueError as e:
            return {"error": str(e)}
        for family, limit, low in (("6", 128, 0), ("4", 32, 0)):
            address, prefix, alloc = (args.get(f"ip{family}Address"), args.get(f"ip{family}Prefix"),
                                      args.get(f"ip{family}Alloc"))
            if prefix is not None and address is None:
                return {"error": f"Must specify ip{family}Address with ip{family}Prefix"}
            if alloc is not None and address is None:
                return {"error": f"Must specify ip{family}Address with ip{family}Alloc"}
            if prefix is not None and not low <= prefix <= limit:
                return {"error": f"ip{family}Prefix out of range: must be 0 to {limit}"}
            if alloc is not None and not 1 <= alloc <= limit:
                return {"error": f"ip{family}Alloc out of range: must be 1 to {limit}"}
        for family, version in (("6", 6), ("4", 4)):
            address = args.get(f"ip{family}Address")
            try:
                if address is not None and ipaddress.ip_address(address).version != version:
                    raise ValueError
            except ValueError:
                return {"error": f"malformed ip{family}Address"}
        connection = self._newConnection(formatKey(key), outgoing=False)
        if ip4 is not None:
            connection.update(ip4Address=ip4, ip4Prefix=args.get("ip4Prefix", 32),
                              ip4Alloc=args.get("ip4Alloc", 32))
        if ip6 is not None:
            connection.update(ip6Address=ip6, ip6Prefix=args.get("ip6Prefix", 128),
                              ip6Alloc=args.get("ip6Alloc", 128))
        return {"connection": connection["number"], "error": "none"}

    def do_IpTunnel_connectTo(self, args):
        try:
            key = parseKey(args["publicKeyOfNodeToConnectTo"])
        except ValueError as e:
            return {"error": str(e)}
        connection = self._newConnection(formatKey(key), outgoing=True)
        if self.onConnectTo is not None:
            self.onConnectTo(connection)
        return {"connection": connection["number"], "error": "none"}

    def do_IpTunnel_removeConnection(self, args):
        for connection in self.connections:
            if connection["number"] == args["connection"]:
                self.connections.remove(connection)
                return {"connection": args["connection"], "error": "none"}
        return {"error": "not_found"}

    def do_IpTunnel_listConnections(self, args):
        return {"connections": [c["number"] for c in self.connections], "error": "none"}

    def do_IpTunnel_showConnection(self, args):
        for connection in self.connections:
            if connection["number"] == args["connection"]:
                shown = {k: v for k, v in connection.items() if k != "number"}
                return dict(shown, error="none")
        return {"error": "connection not found"}
