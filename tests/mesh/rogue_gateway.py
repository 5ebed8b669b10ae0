"""
A rogue "gateway" for L{tests.mesh.test_impostors}: an attacker's own
JSON-RPC server on the mesh, run as a separate process in the attacker's
namespace.  Standard library only: it is the attacker's code, not ours.

Usage: C{python rogue_gateway.py PORT UPSTREAM STATEFILE MODE}.  It
listens on every address at PORT and fetches the real gateway's offer
from C{UPSTREAM} (its address; port 8150) for every C{gateway.info}.
The mode is read again for each call from C{STATEFILE.mode} if that file
exists (so a test can turn a helpful node hostile):

  - C{proxy}: every call goes to the upstream gateway as it is.
  - C{replay}: answers C{gateway.info} with the real, signed offer, and
    C{gateway.register} itself with a lease of its own (its own WireGuard
    key, its own address as the endpoint), "signed" with a key of its own.
  - C{unsigned}: answers C{gateway.info} with the real offer saying
    C{available: false}, its signature removed.
  - C{forged}: the same, keeping the real signature (which no longer
    matches).

Every other call is passed to the upstream gateway as it is (a renewal
must still work for the client to stay).  After each call, C{STATEFILE}
holds C{{"calls": {method: count}}}.
"""

import base64
import json
import os
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PATH = "/mnigs/v2"
ROGUE_WG_KEY = "HxwdHhscGRoXFBUWExAREg8MDQ4LCAkKBwQFBgMAAQI="


class State:
    def __init__(self, path):
        self.path = path
        self.calls = {}

    def count(self, method):
        self.calls[method] = self.calls.get(method, 0) + 1
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"calls": self.calls}, f)
        os.replace(tmp, self.path)


def upstream(host, body):
    request = urllib.request.Request(f"http://{host}:8150{PATH}", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=3) as answer:
        return answer.read()


def realOffer(host):
    body = json.dumps({"jsonrpc": "2.0", "method": "gateway.info", "params": {}, "id": 1})
    return json.loads(upstream(host, body.encode()))["result"]


def rogueLease(params, localAddress):
    """A lease as a rogue would hand it out: its own key and endpoint."""
    return {"lease": {"id": "r0gue", "token": "t" * 32, "method": params.get("method"),
                      "expires_in": 600,
                      "config": {"address": "100.64.0.99/32", "gateway_address": "100.64.0.1",
                                 "peer_public_key": ROGUE_WG_KEY,
                                 "endpoint": f"{localAddress}:51820", "dns": []}},
            "gateway": params.get("gateway"), "client": (params.get("client") or {}).get("id"),
            "signature": base64.b64encode(os.urandom(64)).decode()}


def handler(initialMode, upstreamHost, state):
    def currentMode():
        try:
            with open(state.path + ".mode") as f:
                return f.read().strip()
        except FileNotFoundError:
            return initialMode

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            mode = currentMode()
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            try:
                call = json.loads(body)
                method = call.get("method")
            except ValueError:
                call, method = {}, None
            state.count(method or "?")
            if mode == "proxy":
                answer = upstream(upstreamHost, body).decode()
            elif method == "gateway.info":
                offer = realOffer(upstreamHost)
                if mode in ("unsigned", "forged"):
                    offer["available"] = False
                    if mode == "unsigned":
                        del offer["signature"]
                answer = json.dumps({"jsonrpc": "2.0", "result": offer, "id": call.get("id")})
            elif method == "gateway.register" and mode == "replay":
                lease = rogueLease(call.get("params") or {}, self.connection.getsockname()[0])
                answer = json.dumps({"jsonrpc": "2.0", "result": lease, "id": call.get("id")})
            else:
                answer = upstream(upstreamHost, body).decode()
            data = answer.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def main(argv):
    port, upstreamHost, statePath, mode = int(argv[1]), argv[2], argv[3], argv[4]
    state = State(statePath)
    server = ThreadingHTTPServer(("0.0.0.0", port), handler(mode, upstreamHost, state))
    state.count("started")
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv)
