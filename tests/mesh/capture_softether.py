"""
Regenerate C{tests/unit/data/softether/*.json} from a real SoftEther 5.01
vpnserver and vpnclient (needs root and Debian's softether packages)::

    python -m tests.mesh.capture_softether

One network namespace with a vpnserver and a vpnclient, each started
through L{mnigs.softether.launch} in its own mount namespace, and vpncmd
batches built with L{mnigs.softether.vpncmd} / L{mnigs.softether.hub}, run
exactly as mnigs runs them (the batch file, C{/CSV}, answers on stdin).
Each file holds the batch lines and vpncmd's raw output:
C{{"lines": [...], "stdout": "...", "exit": N}}.  The passwords are fixed
dummies (vpncmd echoes them as stars anyway).
"""

import ipaddress
import json
import os
import sys
import tempfile

from mnigs.softether import VPNCLIENT, VPNCMD, VPNSERVER
from mnigs.softether import hub as h
from mnigs.softether.launch import launchArgv
from mnigs.softether.vpncmd import (
    Command,
    batchArgv,
    batchStdin,
    clientTarget,
    command,
    serverTarget,
)
from tests.mesh.gatewayproc import daemonEnvironment
from tests.mesh.harness import Mesh, missingForNamespaces, waitUntil

DATA = os.path.join(os.path.dirname(__file__), os.pardir, "unit", "data", "softether")
ADMIN = "capture-admin-password"
USER = h.HubUser(h.userName("capture-lease"), "capture-user-password",
                 ipaddress.ip_address("100.66.0.2"))


class Capture:
    def __init__(self, node, scratch):
        self.node = node
        self.scratch = scratch

    def run(self, name, target, commands, password=None, hub=None):
        fd, path = tempfile.mkstemp(dir=self.scratch, suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write("".join(c.line() + "\n" for c in commands))
        result = self.node.run(batchArgv(VPNCMD, target, path, hub), check=False, timeout=20,
                               input=batchStdin(password, commands).decode())
        os.unlink(path)
        if name:
            with open(os.path.join(DATA, name + ".json"), "w") as f:
                json.dump({"lines": [c.line() for c in commands], "stdout": result.stdout,
                           "exit": result.returncode}, f, indent=1)
                f.write("\n")
        return result


def main():
    missing = missingForNamespaces()
    if missing:
        raise SystemExit(missing)
    os.makedirs(DATA, exist_ok=True)
    with Mesh(None) as mesh:
        node = mesh.node("se")
        scratch = os.path.join(node.tmp, "scratch")
        os.makedirs(scratch)
        for program, root in ((VPNSERVER, "server"), (VPNCLIENT, "client")):
            node.spawn(launchArgv(sys.executable, os.path.join(node.tmp, root), program,
                                  "start", "--foreground"), env=daemonEnvironment())
        cap = Capture(node, scratch)
        os.chdir(scratch)  # vpncmd writes ServerCertGet's file where it runs
        server = serverTarget("127.0.0.1", 5555)
        setPassword = command("ServerPasswordSet", prompts=(ADMIN, ADMIN))
        waitUntil(lambda: cap.run(None, server, [setPassword], ADMIN).returncode == 0, 20,
                  message="vpnserver to answer")
        cap.run("connect_failed", serverTarget("127.0.0.1", 5999), [command("ServerInfoGet")],
                ADMIN)
        listing = [command("ListenerList"), command("HubList"), command("BridgeList")]
        cap.run("server_fresh_listing", server, listing, ADMIN)
        settings = h.serverSettingsCommands(5555, {443, 992, 1194, 5555}, {"DEFAULT"}, "mnigs",
                                            "capture-hub-password", set(), "capture", "cert.pem")
        cap.run("server_settings", server, settings, ADMIN)
        cap.run("server_cleanup", server, h.listenerCleanupCommands(5555, {443, 992, 1194, 5555}),
                ADMIN)
        cap.run("server_listing", server, listing, ADMIN)
        cap.run("hub_add_user", server, h.addUserCommands(USER), ADMIN, hub="mnigs")
        cap.run("hub_tables", server, [command("SecureNatDisable"), command("UserList"),
                                       command("AccessList"), command("SessionList")],
                ADMIN, hub="mnigs")
        cap.run("hub_add_user_again", server, h.addUserCommands(USER)[:1], ADMIN, hub="mnigs")
        cap.run("hub_errors", server, [command("UserDelete", "m" + "0" * 24),
                                       command("SessionDisconnect", "SID-NOPE-1"),
                                       Command("ServerCertGet", ("/absolute",))],
                ADMIN, hub="mnigs")
        client = clientTarget()
        cap.run("client_password", client, [command("PasswordSet", REMOTEONLY="no",
                                                    prompts=(ADMIN, ADMIN))], ADMIN)
        with open(os.path.join(scratch, "cert.pem")) as f:
            certificate = os.path.join(scratch, "pinned.pem")
            with open(certificate, "w") as g:
                g.write(f.read())
        from mnigs.softether.client import accountCommands
        cap.run("client_connect", client, accountCommands(
            "cap0", "127.0.0.1:5555", "mnigs", USER.name, USER.password, certificate), ADMIN)
        waitUntil(lambda: "Connected" in cap.run(None, client, [command("AccountList")],
                                                 ADMIN).stdout, 10, message="the session")
        cap.run("client_status", client, [command("AccountList"),
                                          command("AccountStatusGet", "mnigs")], ADMIN)
        cap.run("hub_sessions", server, [command("SessionList")], ADMIN, hub="mnigs")
    print(f"wrote {DATA}")


if __name__ == "__main__":
    main()
