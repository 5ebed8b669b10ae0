"""
Running a real C{twistd mnigs-server} inside a mesh node for namespace
tests and benchmarks, and talking to it with C{mnigs-rpc} from any node.
"""

import http.client
import json
import os
import secrets
import signal
import sys

from mnigs.protocol import RPC_PATH
from tests.mesh.commands import fileTail, waitUntil
from tests.mesh.logcheck import assertNoCriticalLines


TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def daemonEnvironment():
    """
    The working tree first on the daemon's path, so that its mnigs and its
    twisted/plugins are the ones that run (trial runs in _trial_temp).
    """
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": TOP + (os.pathsep + path if path else "")}


def tomlValue(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(tomlValue(v) for v in value) + "]"
    raise TypeError(value)


def toTOML(config, prefix=""):
    """
    Enough TOML for mnigs configs: nested dicts become [tables].
    """
    scalars = [f"{k} = {tomlValue(v)}" for k, v in config.items() if not isinstance(v, dict)]
    out = []
    if prefix and (scalars or not any(isinstance(v, dict) for v in config.values())):
        out.append(f"[{prefix}]")
    out.extend(scalars)
    for k, v in config.items():
        if isinstance(v, dict):
            out.append(toTOML(v, f"{prefix}.{k}" if prefix else k))
    return "\n".join(out) + "\n"


def merge(base, override):
    result = dict(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(result.get(k), dict):
            result[k] = merge(result[k], v)
        else:
            result[k] = v
    return result


def twistdArgv(plugin, configPath, logPath, pidPath):
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "--nodaemon", "--pidfile", pidPath, "--logfile", logPath, plugin,
            "--config", configPath]


def keyPath(node, name="rpc"):
    """
    The client key file C{mnigs-rpc --key} signs with in C{node} (made on
    first use): one identity per (node, name).
    """
    return os.path.join(node.tmp, f"client-key-{name}.pem")


def rpc(node, host, method, params=None, timeout=3.0, port=8150, key="rpc"):
    """
    Call C{method} on the server at C{host} from inside C{node}.  Returns
    ("result", value), ("error", code) or ("failure", message).
    C{gateway.register} is signed with the node's key named C{key} (see
    L{keyPath}; C{None}: sent as it is): the client id, gateway id and
    nonce that C{params} leave out are filled in.
    """
    argv = [sys.executable, "-m", "mnigs.cli.rpccli", "--port", str(port), "--timeout", str(timeout)]
    if method == "gateway.register" and key is not None:
        argv += ["--key", keyPath(node, key)]
    argv += [host, method, json.dumps(params or {})]
    result = node.run(["env", f"PYTHONPATH={daemonEnvironment()['PYTHONPATH']}"] + argv,
                      check=False, timeout=timeout + 30)
    if result.returncode == 0:
        return "result", json.loads(result.stdout)
    if result.returncode == 1:
        return "error", json.loads(result.stdout)["error"]["code"]
    return "failure", (result.stderr or result.stdout).strip()


def localOffer(node, port=8150, timeout=2.0):
    """
    C{gateway.info} from inside C{node} to its own 127.0.0.1, made in
    this process (a socket in the namespace, plain HTTP): the offer, or
    C{None}.  For polling, where L{rpc} would start a Python per look;
    L{rpc} is what tests the CLI.
    """
    body = json.dumps({"jsonrpc": "2.0", "method": "gateway.info", "params": {},
                       "id": 1}).encode("utf-8")
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    connection.sock = node.openSocket()
    try:
        connection.sock.settimeout(timeout)
        connection.sock.connect(("127.0.0.1", port))
        connection.request("POST", RPC_PATH.decode("ascii"), body,
                           {"Content-Type": "application/json"})
        answer = json.loads(connection.getresponse().read())
    finally:
        connection.close()
    return answer.get("result")


class GatewayProcess:
    """
    One mnigs-server in C{node}, with its config, state and logs under
    C{node.tmp}.  The WireGuard interface name is unique per run
    (wireguard-go's control sockets are shared by all namespaces).
    C{wrapper} is an argv prefix twistd runs under (it must exec twistd, so
    that the process's pid stays twistd's), C{umask} the umask it starts
    with (see L{tests.mesh.confine}).
    """

    def __init__(self, node, overrides=None, name="gw", wrapper=(), umask=None):
        self.node = node
        self.wrapper, self.umask = list(wrapper), umask
        self.dir = os.path.join(node.tmp, f"mnigs-{name}")
        os.makedirs(self.dir, exist_ok=True)
        self.wgInterface = "mw" + secrets.token_hex(4)
        base = {
            "server": {"name": name, "state_dir": os.path.join(self.dir, "state"),
                       "sweep_interval": 0.5},
            "rpc": {"listen": ["0.0.0.0"], "rate_limit": 0.0},
            "mesh": {"interfaces": list(node.meshInterfaces)},
            "uplink": {"interface": node.uplink or "up0", "check_interval": 0.5},
            "terms": {"max_clients": 8, "lease_seconds": 600, "notes": "test gateway"},
            "methods": {"forward": {"enabled": True},
                        "wireguard": {"interface": self.wgInterface, "port": 51820,
                                      "pool": "100.64.0.0/24"}},
            "admin": {"socket": os.path.join(self.dir, "admin.sock")},
            "manhole": {"enabled": False, "socket": os.path.join(self.dir, "manhole.sock")},
        }
        self.configPath = os.path.join(self.dir, "server.toml")
        self.config = base
        self.rewrite(**(overrides or {}))
        self.logPath = os.path.join(self.dir, "server.log")
        self.process = None

    def rewrite(self, **overrides):
        """
        Merge C{overrides} into the config file (for a reload or restart).
        """
        self.config = merge(self.config, overrides)
        with open(self.configPath, "w") as f:
            f.write(toTOML(self.config))

    def start(self, wait=True, timeout=20):
        argv = self.wrapper + twistdArgv("mnigs-server", self.configPath, self.logPath,
                                         os.path.join(self.dir, "twistd.pid"))
        self.process = self.node.spawn(argv, log=os.path.join(self.dir, "stdout.log"),
                                       env=daemonEnvironment(), umask=self.umask)
        if wait:
            self.waitServing(timeout)
        return self

    def info(self, fromNode=None, host="127.0.0.1"):
        kind, value = rpc(fromNode or self.node, host, "gateway.info", timeout=2)
        return value if kind == "result" else None

    def waitServing(self, timeout=20):
        def servingOrGone():
            if self.process.poll() is not None:
                return True
            offer = localOffer(self.node, self.config["rpc"].get("port", 8150))
            return offer is not None and offer["available"]

        try:
            waitUntil(servingOrGone, timeout, interval=0.1, message="mnigs-server to serve")
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- server log ---\n{self.logTail()}") from None
        if self.process.poll() is not None:
            raise AssertionError(f"mnigs-server exited with {self.process.returncode}:\n"
                                 + self.logTail())

    def kill(self, sig=signal.SIGKILL):
        """
        Kill the twistd process alone (its children, like wireguard-go,
        stay, as they would after a crash).
        """
        pid = self._twistdPid()
        os.kill(pid, sig)
        waitUntil(lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid), 10,
                  message="mnigs-server to die")
        self.process.wait(10)

    def stop(self):
        """
        Stop the server if it runs, then fail if it ever logged a critical
        line (see L{tests.mesh.logcheck}).
        """
        if self.process is not None and self.process.poll() is None:
            os.kill(self._twistdPid(), signal.SIGTERM)
            self.process.wait(20)
        assertNoCriticalLines(self.logPath, f"mnigs-server {self.config['server']['name']}")

    def _twistdPid(self):
        # node.spawn runs `ip netns exec NS python ...`, which execs: the
        # Popen pid is twistd's own.
        return self.process.pid

    def logTail(self):
        return fileTail(self.logPath) + fileTail(os.path.join(self.dir, "stdout.log"))

    def status(self):
        return self.ctl("status")

    def ctl(self, *args):
        """
        C{mnigsctl --socket ADMIN ARGS --json}, run in the gateway's node;
        its JSON answer.
        """
        result = self.node.run(["env", f"PYTHONPATH={daemonEnvironment()['PYTHONPATH']}",
                                sys.executable, "-m", "mnigs.cli.ctl", "--socket",
                                os.path.join(self.dir, "admin.sock"), *args, "--json"],
                               check=False)
        return json.loads(result.stdout)


def _zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True
