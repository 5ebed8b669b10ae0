"""
The daemons as an operator meets them: twistd lists the plugins, a broken
config stops the server with status 1 naming file, key and reason, debug
lines reach the log only at [log] level "debug", the
manhole is a mode-0600 socket holding the live objects, hooks get their
argv, and a corrupt lease file is kept aside.  Real twistd processes in a
namespace; nothing is mocked.
"""

import json
import os
import socket
import stat
import subprocess
import sys

from twisted.trial.unittest import TestCase

from mnigs.wireguard.uapi import generatePrivateKey, publicKey
from tests.mesh.clientproc import ClientProcess
from tests.mesh.gatewayproc import GatewayProcess, daemonEnvironment, rpc, twistdArgv
from tests.mesh.harness import Mesh, requireNamespaces, waitUntil


def twistdEnv():
    return {**os.environ, **daemonEnvironment()}


class PluginTests(TestCase):
    def test_twistdListsBothPlugins(self):
        result = subprocess.run([sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                                 "--help"], capture_output=True, text=True, env=twistdEnv(),
                                timeout=60)
        self.assertIn("mnigs-server", result.stdout)
        self.assertIn("mnigs-client", result.stdout)

    def test_brokenConfigExitsNamingFileKeyReason(self):
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write('[uplink]\ninterface = "up0"\n[methods.forward]\n[rpc]\nport = 70000\n')
        for plugin in ("mnigs-server", "mnigs-client"):
            if plugin == "mnigs-client":
                with open(path, "w") as f:
                    f.write("[discovery]\nconcurrency = 0\n")
            argv = twistdArgv(plugin, path, os.devnull, path + ".pid")
            result = subprocess.run(argv, capture_output=True, text=True, env=twistdEnv(), timeout=60)
            self.assertEqual(result.returncode, 1, result.stderr)
            key = "rpc.port" if plugin == "mnigs-server" else "discovery.concurrency"
            self.assertIn(f"{path}: {key}: must be between", result.stderr)
            self.assertNotIn("Traceback", result.stderr)


class GatewayDaemonTests(TestCase):
    timeout = 120

    def setUp(self):
        requireNamespaces(self, "wireguard-go", "nft")
        self.mesh = Mesh(self)
        self.gw = self.mesh.node("gw")
        self.mesh.internet(self.gw)

    def start(self, **overrides):
        process = GatewayProcess(self.gw, overrides)
        self.addCleanup(process.stop)
        return process

    def test_manholeIsPrivateAndHoldsTheService(self):
        process = self.start()
        process.config["manhole"]["enabled"] = True
        from tests.mesh.gatewayproc import toTOML
        with open(process.configPath, "w") as f:
            f.write(toTOML(process.config))
        process.start()
        path = process.config["manhole"]["socket"]
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        # The socket lives in the filesystem, not the namespace: talk to it
        # from here.
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(path)
            s.sendall(b"print('state=' + gateway.describe()['state'])\r\n")
            seen = b""
            try:
                while b"state=serving" not in seen:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    seen += chunk
            except socket.timeout:
                pass
        self.assertIn(b"state=serving", seen)

    def test_hooksGetArgv(self):
        out = os.path.join(self.gw.tmp, "hook.out")
        hook = os.path.join(self.gw.tmp, "hook.sh")
        with open(hook, "w") as f:
            f.write(f'#!/bin/sh\nprintf "%s|" "$@" >> {out}\necho >> {out}\n')
        os.chmod(hook, 0o755)
        self.start(hooks={"register": hook, "release": hook}).start()
        key = publicKey(generatePrivateKey())
        kind, answer = rpc(self.gw, "127.0.0.1", "gateway.register",
                           {"method": "wireguard", "params": {"public_key": key}})
        self.assertEqual(kind, "result", answer)
        lease = answer["lease"]
        rpc(self.gw, "127.0.0.1", "gateway.unregister", {"lease": lease["id"], "token": lease["token"]})

        def lines():
            if not os.path.exists(out):
                return None
            with open(out) as f:
                found = [line.rstrip("\n") for line in f if line.strip()]
            return found if len(found) == 2 else None

        found = waitUntil(lines, 10, message="both hooks to run")
        # docs/operations.md, "Hooks": EVENT LEASE METHOD CLIENT_ADDRESS
        # INNER_ADDRESS CLIENT_ID CLIENT_NAME, and for release BYTES_IN
        # BYTES_OUT DURATION REASON after them.
        register, release = (line.split("|")[:-1] for line in sorted(found))
        common = [lease["id"], "wireguard", "127.0.0.1", "100.64.0.2/32"]
        self.assertEqual(register[:5], ["register"] + common)
        self.assertEqual(release[:5], ["release"] + common)
        self.assertTrue(register[5].startswith("ed25519:"), register)
        self.assertEqual(release[5:7], register[5:7])
        self.assertEqual(len(register), 7)
        bytesIn, bytesOut, duration, reason = release[7:]
        for counted in (bytesIn, bytesOut):
            self.assertRegex(counted, r"^(\d+|-)$")
        self.assertRegex(duration, r"^\d+$")
        self.assertEqual(reason, "released")

    def test_corruptLeaseFileKeptAsideServerStarts(self):
        process = self.start()
        stateDir = process.config["server"]["state_dir"]
        os.makedirs(stateDir, exist_ok=True)
        with open(os.path.join(stateDir, "leases.json"), "w") as f:
            f.write('{"version": 1, "leases": [{"id": ')
        process.start()
        kept = [name for name in os.listdir(stateDir) if name.startswith("leases.json.corrupt-")]
        self.assertEqual(len(kept), 1)
        with open(os.path.join(stateDir, kept[0])) as f:
            self.assertEqual(f.read(), '{"version": 1, "leases": [{"id": ')
        with open(process.logPath) as f:
            log = f.read()
        self.assertIn("leases.json: unreadable", log)
        self.assertEqual(json.loads(json.dumps(process.status()))["clients"], 0)


class LogLevelTests(TestCase):
    """
    twistd has no log level of its own: the [log] level of the config
    decides what its --logfile gets.
    """

    timeout = 120

    def setUp(self):
        requireNamespaces(self)
        self.mesh = Mesh(self)

    def searchingClientLog(self, level):
        """
        The log of a client that looked once for a gateway where none
        answers (an unreachable static address: a debug line per address,
        then an info line for the scan).
        """
        process = ClientProcess(self.mesh.node(f"c{level[0]}"), {
            "discovery": {"scan": ["static"], "static": ["192.0.2.1"]},
            "log": {"level": level}}, name=f"client-{level}")
        self.addCleanup(process.stop)
        process.start()

        def searchedOnce():
            if process.process.poll() is not None:
                raise AssertionError(f"mnigs-client exited:\n{process.logTail()}")
            with open(process.logPath) as f:
                text = f.read()
            return text if "no usable gateway found; searching again later" in text else None

        return waitUntil(searchedOnce, 30, interval=0.1, message=f"a scan at level {level}")

    def test_debugLinesOnlyAtLevelDebug(self):
        debug = self.searchingClientLog("debug")
        info = self.searchingClientLog("info")
        self.assertIn("[mnigs.client.discovery#debug] no gateway at 192.0.2.1:8150", debug)
        self.assertNotIn("#debug]", info)
        self.assertIn("[mnigs.client.machine#info] no usable gateway found", info)
        # twistd's own start lines pass through the same observer.
        self.assertIn("twistd 2", info.splitlines()[0])
