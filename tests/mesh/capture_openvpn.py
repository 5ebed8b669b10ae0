"""
Regenerate the openvpn management transcripts in
C{tests/unit/data/openvpn/} from a real openvpn 2.6 (needs root)::

    python -m tests.mesh.capture_openvpn [--out DIR]

Two nodes, C{gw} and C{client}, on one veth link; the gateway's address
the clients call is on its C{lo} (so C{--multihome} matters).  Every
openvpn runs with C{--management PATH unix --management-client
--management-hold} against a recorder here that answers the way mnigs
does (state on, bytecount 1, hold release; client-auth with an
ifconfig-push, or client-deny) and writes what it hears (C{>>> }) and
says (C{<<< }).

server-session: client A connects; B with a wrong password is denied; C
(same lease as A, C{reneg-sec 3}) replaces A and renegotiates; then
C{client-kill 99}, C{version}, C{state}, C{status 3}, C{client-kill} of
A (gone already); then the server is SIGKILLed (C: ping-exit).
server-halt: D connects and is killed with HALT; E connects; the server
is stopped with TERM (E: RECONNECTING and a new hold).

Times, ports and byte counts differ at each run, and the unit tests pin
some of them: after a new capture, update them.
"""

import argparse
import os
import signal
import socket
import threading
import time

from mnigs.openvpn.config import PING, PING_EXIT
from mnigs.openvpn.pki import loadOrCreateServerPKI
from tests.mesh.commands import waitUntil
from tests.mesh.harness import Mesh, missingForNamespaces

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    "unit", "data", "openvpn")
GATEWAY = "10.251.9.1"
LEASES = {"lease1": "tok1", "lease2": "tok2"}


class Recorder:
    """
    A management peer that answers like mnigs and keeps a transcript; the
    connections it accepts follow one another in the same transcript.
    """

    def __init__(self, path):
        self.path = path
        self.lines = []
        self.lock = threading.Lock()
        self.connection = None
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(1)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.connection = connection
            self._serve(connection)

    def send(self, text):
        with self.lock:
            self.lines.append("<<< " + text)
            self.connection.sendall(text.encode() + b"\n")

    def _serve(self, connection):
        block, buffer = None, b""
        while True:
            data = connection.recv(65536)
            if not data:
                with self.lock:
                    self.lines.append(f"--- EOF {time.time():.6f}")
                return
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                line = raw.decode().rstrip("\r")
                with self.lock:
                    self.lines.append(">>> " + line)
                block = self._answer(line, block)

    def _answer(self, line, block):
        if line.startswith(">HOLD:"):
            for command in ("state on", "bytecount 1", "hold release"):
                self.send(command)
        elif line.startswith((">CLIENT:CONNECT,", ">CLIENT:REAUTH,")):
            kind, cid, kid = line.split(":", 1)[1].split(",")
            return (kind, cid, kid, {})
        elif line.startswith(">CLIENT:ENV,") and block is not None:
            entry = line[len(">CLIENT:ENV,"):]
            if entry != "END":
                name, _, value = entry.partition("=")
                block[3][name] = value
                return block
            kind, cid, kid, env = block
            if env.get("password") and LEASES.get(env.get("username")) == env["password"]:
                if kind == "CONNECT":
                    self.send(f"client-auth {cid} {kid}\n"
                              "ifconfig-push 100.65.0.2 255.255.252.0\nEND")
                else:
                    self.send(f"client-auth-nt {cid} {kid}")
            else:
                self.send(f'client-deny {cid} {kid} "bad lease" "no lease"')
            return None
        return block

    def cids(self):
        with self.lock:
            return [line.split(",")[1] for line in self.lines
                    if line.startswith(">>> >CLIENT:ESTABLISHED,")]

    def save(self, path, version, what):
        self.server.close()
        header = ("# Captured from {version} in network namespaces, {what}.\n"
                  "# \">>> \" lines are what openvpn wrote on its management connection\n"
                  "# (--management-client), \"<<< \" lines (and the lines after them up to\n"
                  "# the next prefix) what the capture tool sent; \"--- EOF\" ends a connection.\n")
        with self.lock, open(path, "w") as f:
            f.write(header.format(version=version, what=what))
            f.write("".join(line + "\n" for line in self.lines))


def serverArgv(pki, sock):
    return ["openvpn", "--mode", "server", "--tls-server", "--dev", "ovs0", "--dev-type", "tun",
            "--topology", "subnet", "--proto", "udp6", "--port", "1194", "--multihome",
            "--ifconfig", "100.65.0.1", "255.255.252.0", "--push", "topology subnet",
            "--push", "route-gateway 100.65.0.1", "--ca", pki.ca, "--cert", pki.cert,
            "--key", pki.key, "--dh", "none", "--verify-client-cert", "none",
            "--username-as-common-name", "--management", sock, "unix", "--management-client",
            "--management-hold", "--management-client-auth", "--keepalive", str(PING),
            str(PING_EXIT), "--verb", "3", "--suppress-timestamps", "--disable-dco",
            "--explicit-exit-notify", "1"]


def clientConfig(node, name, pki, sock, user, password, extra=()):
    directory = os.path.join(node.tmp, name)
    os.makedirs(directory)
    credentials = os.path.join(directory, "credentials")
    with open(os.open(credentials, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        f.write(f"{user}\n{password}\n")
    path = os.path.join(directory, "client.conf")
    lines = ["client", f"dev {name}", "dev-type tun", "proto udp", f"remote {GATEWAY} 1194",
             "nobind", f"ca {pki.ca}", "remote-cert-tls server", f"auth-user-pass {credentials}",
             "auth-retry none", f"management {sock} unix", "management-client",
             "management-hold", "route-noexec", 'pull-filter ignore "ping"', f"ping {PING}",
             f"ping-exit {PING_EXIT}", "disable-dco", "verb 3", "suppress-timestamps", *extra]
    with open(path, "w") as f:
        f.write("".join(line + "\n" for line in lines))
    return ["openvpn", "--config", path]


def connected(recorder, count):
    return lambda: len(recorder.cids()) >= count


def capture(out):
    with Mesh(None) as mesh:
        gw, client = mesh.node("gw"), mesh.node("client")
        mesh.link(gw, client, "10.77.0.1/24", "10.77.0.2/24")
        gw.run(["ip", "addr", "add", f"{GATEWAY}/32", "dev", "lo"])
        client.run(["ip", "route", "add", f"{GATEWAY}/32", "via", "10.77.0.1"])
        version = client.run(["openvpn", "--version"], check=False).stdout.split(" [")[0]
        pki = loadOrCreateServerPKI(os.path.join(mesh.tmp, "pki"))
        sock = lambda name: os.path.join(mesh.tmp, f"{name}.sock")  # noqa: E731

        # server-session and three client transcripts
        server = Recorder(sock("gw"))
        a, b, c = (Recorder(sock(n)) for n in ("a", "b", "c"))
        process = gw.spawn(serverArgv(pki, sock("gw")))
        waitUntil(lambda: any("CONNECTED,SUCCESS" in x for x in server.lines), 10,
                  message="the server")
        client.spawn(clientConfig(client, "ova", pki, sock("a"), "lease1", "tok1"))
        waitUntil(connected(server, 1), 10, message="client A")
        client.run(clientConfig(client, "ovb", pki, sock("b"), "lease1", "wrong"), check=False)
        client.spawn(clientConfig(client, "ovc", pki, sock("c"), "lease1", "tok1",
                                  ["reneg-sec 3"]))
        waitUntil(connected(server, 2), 10, message="client C")
        time.sleep(4.5)  # a renegotiation or two
        for command in ("client-kill 99", "version", "state", "status 3"):
            server.send(command)
        time.sleep(1)
        server.send(f"client-kill {server.cids()[0]} HALT")
        time.sleep(1)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        time.sleep(PING_EXIT + 1.5)
        server.save(os.path.join(out, "server-session.txt"), version, "gateway side: clients admitted, "
                    "denied (wrong password), one replaced by a second session of the same "
                    "lease (username-as-common-name), REAUTH every 3 s, ERROR replies, "
                    "multi-line replies (version, state, status 3), then the server was SIGKILLed")
        b.save(os.path.join(out, "client-denied.txt"), version,
               "client side: the password is refused (client-deny)")
        c.save(os.path.join(out, "client-pingexit.txt"), version,
               "client side: connected, then the server was SIGKILLed: ping-exit")
        a.server.close()

        # server-halt and the halted-then-reset client
        server = Recorder(sock("gw2"))
        d = Recorder(sock("d"))
        process = gw.spawn(serverArgv(pki, sock("gw2")))
        waitUntil(lambda: any("CONNECTED,SUCCESS" in x for x in server.lines), 10,
                  message="the second server")
        argv = clientConfig(client, "ovd", pki, sock("d"), "lease2", "tok2")
        first = client.spawn(argv)
        waitUntil(connected(server, 1), 10, message="client D")
        time.sleep(2)
        server.send(f"client-kill {server.cids()[0]} HALT")
        first.wait(10)
        time.sleep(1)
        client.spawn(argv)
        waitUntil(connected(server, 2), 10, message="client E")
        time.sleep(2)
        process.send_signal(signal.SIGTERM)
        process.wait(10)
        time.sleep(1)
        server.save(os.path.join(out, "server-halt.txt"), version, "gateway side: a client admitted, "
                    "killed with client-kill HALT, a second one admitted, then the server "
                    "stopped with TERM")
        d.save(os.path.join(out, "client-halted-reset.txt"), version, "client side: connected and "
               "halted by client-kill HALT; then a second process connected and the server "
               "stopped (explicit-exit-notify): RECONNECTING and a new hold")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=DATA)
    args = parser.parse_args()
    missing = missingForNamespaces("openvpn")
    if missing:
        raise SystemExit(f"cannot capture: {missing}")
    os.makedirs(args.out, exist_ok=True)
    capture(args.out)


if __name__ == "__main__":
    main()
