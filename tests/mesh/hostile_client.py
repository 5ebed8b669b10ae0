"""
A hostile JSON-RPC client for L{tests.mesh.test_hostile}, run as a separate
process inside the gateway's network namespace (the test process lives in
the root namespace).  Plain blocking sockets, no Twisted: it must behave
like a rude stranger, not like our own client.

Usage: C{python hostile_client.py HOST PORT}.  It reads one command per line
on stdin and answers each with exactly one JSON line on stdout:

  - C{case NAME}: send one hostile request (see L{CASES}), read the answer
    and describe it (HTTP status, content type, parsed body, closed?).
  - C{cases}: every request case, as C{{name: description}}.
  - C{bigbody MEGABYTES}: stream a body that size at full speed; report
    when the 413 came, how much could be sent, and whether the server
    closed the connection.
  - C{liar LENGTH SENT}: announce C{Content-Length: LENGTH}, send C{SENT}
    body bytes, then wait for an answer or the close (at most 60 s).
  - C{open N KIND}: open N more connections and keep them open; KIND is
    C{idle} (send nothing), C{headers} (half a request line and headers),
    or C{body} (full headers, part of the body).
  - C{status}: how many held connections the server has closed so far.
  - C{probe K [SOURCE]}: K C{gateway.info} calls, each on a fresh
    connection (from the local address SOURCE if given), with their
    latencies in seconds.
  - C{close N}: close N held connections (oldest first).
  - C{quit}.
"""

import json
import os
import select
import socket
import sys
import time

PATH = "/mnigs/v2"
READ_TIMEOUT = 10.0


def rpcBody(method, params=None, id=1, **extra):
    message = {"jsonrpc": "2.0", "method": method, "id": id}
    if params is not None:
        message["params"] = params
    message.update(extra)
    return json.dumps(message).encode("utf-8")


def post(body, path=PATH, headers=(), method="POST"):
    lines = [f"{method} {path} HTTP/1.1", "Host: gateway", "Content-Type: application/json",
             f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


def chunked(body, chunkSize=8192):
    head = (f"POST {PATH} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode("ascii")
    chunks = [b"%x\r\n%s\r\n" % (len(body[i:i + chunkSize]), body[i:i + chunkSize])
              for i in range(0, len(body), chunkSize)]
    return head + b"".join(chunks) + b"0\r\n\r\n"


KEY = "A" * 43 + "="

# name -> raw bytes to send.  What each must get back is the test's
# business (tests.mesh.test_hostile.EXPECTED).
CASES = {
    "truncatedJSON": post(b'{"jsonrpc": "2.0", "method": "gateway.info", "id": '),
    "notUTF8": post(b"\xff\xfe\xfa\x00{"),
    "emptyBody": post(b""),
    "deeplyNestedList": post(b"[" * 60000),
    "deeplyNestedObject": post(b'{"a":' * 12000),
    "hugeInteger": post(b'{"jsonrpc":"2.0","method":"gateway.info","id":' + b"9" * 50000 + b"}"),
    "scalar": post(b"42"),
    "null": post(b"null"),
    "batch": post(b"[" + rpcBody("gateway.info") + b"," + rpcBody("gateway.info", id=2) + b"]"),
    "emptyBatch": post(b"[]"),
    "wrongVersion": post(rpcBody("gateway.info", jsonrpc="1.0")),
    "noVersion": post(b'{"method":"gateway.info","id":1}'),
    "objectId": post(rpcBody("gateway.info", id={"x": 1})),
    "unknownMethod": post(rpcBody("gateway.nosuch")),
    "unknownGroup": post(rpcBody("system.listMethods")),
    "privateMethod": post(rpcBody("gateway._resolve")),
    "dunderMethod": post(rpcBody("gateway.__init__")),
    "methodNotString": post(rpcBody(12)),
    "paramsList": post(rpcBody("gateway.info", [])),
    "registerParamsList": post(rpcBody("gateway.register", ["me", "wireguard"])),
    "infoWithParams": post(rpcBody("gateway.info", {"x": 1})),
    "registerNoParams": post(rpcBody("gateway.register")),
    "registerClientString": post(rpcBody("gateway.register",
                                         {"client": "me", "method": "wireguard"})),
    "registerIdNumber": post(rpcBody("gateway.register",
                                     {"client": {"id": 5}, "method": "wireguard"})),
    "registerIdTooLong": post(rpcBody("gateway.register",
                                      {"client": {"id": "x" * 5000}, "method": "wireguard"})),
    "registerNameObject": post(rpcBody("gateway.register",
                                       {"client": {"id": "me", "name": {}}, "method": "wireguard"})),
    "registerMethodNumber": post(rpcBody("gateway.register",
                                         {"client": {"id": "me"}, "method": 7})),
    "registerMethodParamsList": post(rpcBody("gateway.register",
                                             {"client": {"id": "me"}, "method": "wireguard",
                                              "params": [KEY]})),
    "registerKeyNumber": post(rpcBody("gateway.register",
                                      {"client": {"id": "me"}, "method": "wireguard",
                                       "params": {"public_key": 5}})),
    "registerKeyNotBase64": post(rpcBody("gateway.register",
                                         {"client": {"id": "me"}, "method": "wireguard",
                                          "params": {"public_key": "!" * 44}})),
    "registerExtraMember": post(rpcBody("gateway.register",
                                        {"client": {"id": "me"}, "method": "wireguard",
                                         "params": {"public_key": KEY}, "admin": True})),
    "renewLeaseNumber": post(rpcBody("gateway.renew", {"lease": 5, "token": "t"})),
    "renewTokenNull": post(rpcBody("gateway.renew", {"lease": "abc", "token": None})),
    "renewNoToken": post(rpcBody("gateway.renew", {"lease": "abc"})),
    "renewLeaseObject": post(rpcBody("gateway.renew", {"lease": {}, "token": "t"})),
    "renewTokenHuge": post(rpcBody("gateway.renew", {"lease": "abc", "token": "t" * 10000})),
    "unregisterLeaseList": post(rpcBody("gateway.unregister", {"lease": ["abc"], "token": "t"})),
    "unregisterTokenNumber": post(rpcBody("gateway.unregister", {"lease": "abc", "token": 1})),
    "unregisterParamsString": post(rpcBody("gateway.unregister", "abc")),
    "unregisterUnknownLease": post(rpcBody("gateway.unregister", {"lease": "abc", "token": "t"})),
    "get": post(b"", method="GET"),
    "wrongPath": post(rpcBody("gateway.info"), path="/"),
    "chunkedOverLimit": chunked(b" " * (200 * 1024)),
    "contentLengthNotNumber": (f"POST {PATH} HTTP/1.1\r\nHost: g\r\n"
                               "Content-Length: lots\r\n\r\n").encode("ascii"),
    "hugeContentLength": (f"POST {PATH} HTTP/1.1\r\nHost: g\r\n"
                          "Content-Length: 1000000000000000\r\n\r\n{}").encode("ascii"),
    "headersTooBig": (f"POST {PATH} HTTP/1.1\r\nHost: g\r\n"
                      + "".join(f"X-Junk-{i}: {'j' * 1000}\r\n" for i in range(64))
                      + "Content-Length: 2\r\n\r\n{}").encode("ascii"),
    "garbageRequestLine": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64 + b"\r\n\r\n",
}


def connect(host, port, timeout=READ_TIMEOUT, source=None):
    sock = socket.create_connection((host, port), timeout=timeout,
                                    source_address=(source, 0) if source else None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def readResponse(sock, deadline):
    """
    Read one HTTP response (or up to the close).  Returns a description:
    status, content type, body text and parsed JSON (or None), and whether
    the connection was closed.
    """
    buffer = b""
    closed = False
    reset = False
    headerEnd = -1
    length = None
    while True:
        if headerEnd < 0:
            headerEnd = buffer.find(b"\r\n\r\n")
            if headerEnd >= 0:
                for line in buffer[:headerEnd].split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
        if headerEnd >= 0 and length is not None and len(buffer) >= headerEnd + 4 + length:
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            closed = reset = True
            break
        if not data:
            closed = True
            break
        buffer += data
    description = {"raw_bytes": len(buffer), "closed": closed, "reset": reset,
                   "status": None, "content_type": None, "body": "", "json": None}
    if not buffer:
        return description
    head, _, body = buffer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) >= 2 and parts[1].isdigit():
        description["status"] = int(parts[1])
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-type":
            description["content_type"] = value.strip().decode("latin-1")
    description["body"] = body[:4096].decode("utf-8", "replace")
    try:
        description["json"] = json.loads(body)
    except ValueError:
        pass
    return description


def stillOpen(sock):
    """
    False once the peer closed or reset the connection (never blocks).
    """
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return True
    try:
        return sock.recv(65536, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


class Attacker:
    def __init__(self, host, port):
        self.host = host
        self.port = port
        self.held = []
        self.closedByServer = 0

    def case(self, name):
        started = time.monotonic()
        with connect(self.host, self.port) as sock:
            try:
                sock.sendall(CASES[name])
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server may close before taking it all
            result = readResponse(sock, started + READ_TIMEOUT)
        result["elapsed"] = time.monotonic() - started
        return result

    def cases(self):
        return {name: self.case(name) for name in CASES}

    def bigbody(self, megabytes):
        """
        Send headers and then the body as fast as the socket takes it,
        reading whatever comes back in between.
        """
        total = int(megabytes * 1024 * 1024)
        header = (f"POST {PATH} HTTP/1.1\r\nHost: g\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {total}\r\n\r\n").encode("ascii")
        chunk = b"x" * 65536
        end = len(header) + total
        sock = connect(self.host, self.port)
        started = time.monotonic()
        sock.setblocking(False)
        sent = 0
        answer = b""
        answeredAt = None
        closedAt = None
        sendError = None
        deadline = started + 30
        while time.monotonic() < deadline and closedAt is None:
            wantWrite = sendError is None and sent < end
            readable, writable, _ = select.select([sock], [sock] if wantWrite else [], [], 0.5)
            if readable:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                if data:
                    answer += data
                    if answeredAt is None:
                        answeredAt = time.monotonic() - started
                else:
                    closedAt = time.monotonic() - started
            if writable:
                if sent < len(header):
                    data = header[sent:]
                else:
                    data = chunk[:end - sent]
                try:
                    sent += sock.send(data)
                except (BrokenPipeError, ConnectionResetError) as e:
                    sendError = type(e).__name__
                except BlockingIOError:
                    pass
        sock.close()
        head = answer.split(b"\r\n", 1)[0].decode("latin-1")
        body = answer.partition(b"\r\n\r\n")[2]
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        return {"status_line": head, "json": parsed, "answered_after": answeredAt,
                "closed_after": closedAt, "body_bytes_sent": max(0, sent - len(header)),
                "body_bytes": total, "send_error": sendError,
                "elapsed": time.monotonic() - started}

    def liar(self, length, sent):
        started = time.monotonic()
        with connect(self.host, self.port, timeout=60) as sock:
            sock.sendall((f"POST {PATH} HTTP/1.1\r\nHost: g\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {length}\r\n\r\n").encode("ascii") + b"{" * sent)
            result = readResponse(sock, started + 60)
        result["elapsed"] = time.monotonic() - started
        return result

    def trickle(self, interval):
        """
        Slow loris: a whole, valid request sent one byte every C{interval}
        seconds (each byte resets an idle timeout), until the server
        answers or closes.
        """
        started = time.monotonic()
        request = post(rpcBody("gateway.info"))
        sent = 0
        with connect(self.host, self.port, timeout=60) as sock:
            while sent < len(request) and time.monotonic() < started + 120:
                try:
                    sock.sendall(request[sent:sent + 1])
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += 1
                readable, _, _ = select.select([sock], [], [], interval)
                if readable:
                    break
            result = readResponse(sock, time.monotonic() + 5)
        result.update(elapsed=time.monotonic() - started, sent=sent, length=len(request))
        return result

    def open(self, n, kind):
        opened = []
        for i in range(n):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(READ_TIMEOUT)
            sock.connect((self.host, self.port))
            if kind == "headers":
                sock.sendall(f"POST {PATH} HTTP/1.1\r\nHost: g\r\nContent-Le".encode("ascii"))
            elif kind == "body":
                sock.sendall(post(rpcBody("gateway.info"))[:-10])
            elif kind != "idle":
                raise ValueError(kind)
            opened.append(sock)
        self.held.extend(opened)
        return {"opened": len(opened), "held": len(self.held)}

    def status(self):
        stillHeld = []
        for sock in self.held:
            if stillOpen(sock):
                stillHeld.append(sock)
            else:
                sock.close()
                self.closedByServer += 1
        self.held = stillHeld
        return {"open": len(self.held), "closed_by_server": self.closedByServer}

    def probe(self, k, source=None):
        results = []
        for i in range(k):
            started = time.monotonic()
            try:
                with connect(self.host, self.port, timeout=5, source=source) as sock:
                    # Connection: close, so that the server has let go of this
                    # connection by the time the answer is read (the cap test
                    # counts on the slot being free again).
                    sock.sendall(post(rpcBody("gateway.info", id=i), headers=["Connection: close"]))
                    answer = readResponse(sock, started + 5)
            except OSError as e:
                answer = {"error": f"{type(e).__name__}: {e}", "json": None, "status": None}
            elapsed = time.monotonic() - started
            parsed = answer.get("json")
            ok = (answer.get("status") == 200 and isinstance(parsed, dict)
                  and isinstance(parsed.get("result"), dict)
                  and "signature" in parsed["result"])
            results.append({"ok": ok, "latency": elapsed, "status": answer.get("status"),
                            "closed": answer.get("closed"), "error": answer.get("error")})
        return {"probes": results}

    def close(self, n):
        closing, self.held = self.held[:n], self.held[n:]
        for sock in closing:
            sock.close()
        return {"closed": len(closing), "held": len(self.held)}


def main(argv):
    attacker = Attacker(argv[1], int(argv[2]))
    commands = {"case": lambda name: attacker.case(name),
                "cases": attacker.cases,
                "bigbody": lambda mb: attacker.bigbody(float(mb)),
                "liar": lambda length, sent: attacker.liar(int(length), int(sent)),
                "trickle": lambda interval: attacker.trickle(float(interval)),
                "open": lambda n, kind: attacker.open(int(n), kind),
                "status": attacker.status,
                "probe": lambda k, source=None: attacker.probe(int(k), source),
                "close": lambda n: attacker.close(int(n))}
    out = os.fdopen(sys.stdout.fileno(), "w", buffering=1)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            break
        try:
            answer = {"ok": commands[words[0]](*words[1:])}
        except Exception as e:
            answer = {"exception": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(answer) + "\n")
    attacker.close(len(attacker.held))


if __name__ == "__main__":
    main(sys.argv)
