"""
Running a real C{twistd mnigs-client} inside a mesh node.
"""

import json
import os
import secrets
import signal
import sys

from mnigs.cli.ctl import ask
from tests.mesh.commands import fileTail, waitUntil
from tests.mesh.gatewayproc import daemonEnvironment, merge, toTOML, twistdArgv
from tests.mesh.logcheck import assertNoCriticalLines


class ClientProcess:
    """
    One mnigs-client in C{node}; C{wrapper} and C{umask} as for
    L{tests.mesh.gatewayproc.GatewayProcess}.
    """

    def __init__(self, node, overrides=None, name="client", wrapper=(), umask=None):
        self.node = node
        self.wrapper, self.umask = list(wrapper), umask
        self.dir = os.path.join(node.tmp, f"mnigs-{name}")
        os.makedirs(self.dir, exist_ok=True)
        self.wgInterface = "mc" + secrets.token_hex(4)
        base = {
            "client": {"name": name, "state_dir": os.path.join(self.dir, "state")},
            "discovery": {"timeout": 1.0, "rescan_interval": 5.0, "sources": ["babel"]},
            "methods": {"order": ["wireguard", "forward"], "connect_timeout": 5.0,
                        "wireguard": {"interface": self.wgInterface, "keepalive": 1}},
            "policy": {"switch_hold": 3600.0},
            # Never the host's resolvers: a test that wants DNS says how.
            "dns": {"mode": "off"},
            "admin": {"socket": os.path.join(self.dir, "admin.sock")},
            "manhole": {"enabled": False, "socket": os.path.join(self.dir, "manhole.sock")},
        }
        self.config = merge(base, overrides or {})
        self.configPath = os.path.join(self.dir, "client.toml")
        with open(self.configPath, "w") as f:
            f.write(toTOML(self.config))
        self.logPath = os.path.join(self.dir, "client.log")
        self.process = None

    def start(self):
        argv = self.wrapper + twistdArgv("mnigs-client", self.configPath, self.logPath,
                                         os.path.join(self.dir, "twistd.pid"))
        self.process = self.node.spawn(argv, log=os.path.join(self.dir, "stdout.log"),
                                       env=daemonEnvironment(), umask=self.umask)
        return self

    def status(self):
        """
        The client's C{status} from its admin socket, asked from this
        process as C{mnigsctl status} asks it (tests poll this; a Python
        started per look would compete with the daemons for the CPU).
        C{mnigsctl} itself runs in L{ctl} and in tests.mesh.test_installed.
        """
        try:
            answer = ask(os.path.join(self.dir, "admin.sock"), "status")
        except (OSError, ValueError) as e:
            return {"state": None, "error": str(e)}
        if "error" in answer:
            return {"state": None, "error": answer["error"]}
        return answer

    def ctl(self, *args, json_=True):
        """
        C{mnigsctl --socket ADMIN ARGS [--json]}, run in the client's node:
        its JSON answer, or (C{json_} false) its exit status and output.
        """
        result = self.node.run(["env", f"PYTHONPATH={daemonEnvironment()['PYTHONPATH']}",
                                sys.executable, "-m", "mnigs.cli.ctl", "--socket",
                                os.path.join(self.dir, "admin.sock"), *args]
                               + (["--json"] if json_ else []), check=False)
        if json_:
            return json.loads(result.stdout)
        return result.returncode, result.stdout

    def waitState(self, state, timeout=30, gateway=None):
        def reached():
            if self.process.poll() is not None:
                return True
            status = self.status()
            if status.get("state") != state:
                return False
            return gateway is None or status.get("current", {}).get("name") == gateway

        try:
            waitUntil(reached, timeout, interval=0.1, message=f"client {state} {gateway or ''}")
        except AssertionError as e:
            raise AssertionError(f"{e}\nlast status: {self.status()}\n--- client log ---\n"
                                 f"{self.logTail()}") from None
        if self.process.poll() is not None:
            raise AssertionError(f"mnigs-client exited with {self.process.returncode}:\n{self.logTail()}")
        return self.status()

    def stop(self, timeout=20):
        """
        Stop the client if it runs, then fail if it ever logged a critical
        line (see L{tests.mesh.logcheck}).
        """
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout)
        assertNoCriticalLines(self.logPath, f"mnigs-client {self.config['client']['name']}")

    def logTail(self):
        return fileTail(self.logPath, 8000) + fileTail(os.path.join(self.dir, "stdout.log"))
