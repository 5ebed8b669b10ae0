"""
The systemd units in etc/systemd/: they parse, their exposure score is at
most 5.0 (with and without the SoftEther drop-in), a broken config exits
with a status the units do not restart on, and the real daemons work under
the units' restrictions.  systemd does not run on these machines, so the
restrictions are reproduced from the unit files with setpriv and a seccomp
filter (L{tests.mesh.confine} says what is and is not reproduced); nothing
is mocked.
"""

import ctypes.util
import os
import re
import secrets
import shutil
import stat
import subprocess
import sys

from twisted.trial.unittest import TestCase

from tests.mesh.clientproc import ClientProcess
from tests.mesh.confine import UNITS, UnitRestrictions, readSection, unitPath
from tests.mesh.gatewayproc import GatewayProcess, daemonEnvironment, merge, twistdArgv
from tests.mesh.harness import INTERNET_HOST, Mesh, requireNamespaces, skipOrFail

SERVER, CLIENT = "mnigs-server.service", "mnigs-client.service"
DROPIN = os.path.join(UNITS, "softether.conf")
MAX_EXPOSURE = 5.0
# What each method runs below mnigs-server and mnigs-client.
DAEMONS = {"wireguard": ("wireguard-go", "wireguard-go"), "openvpn": ("openvpn", "openvpn"),
           "softether": ("vpnserver", "vpnclient")}


def requireTools(testcase, *tools):
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        skipOrFail(testcase, "needs " + ", ".join(missing) + " on PATH")


def installedCopy(directory, name, dropin=False):
    """
    A copy of unit C{name} in C{directory} whose ExecStart runs a twistd
    that exists here (the units name /opt/mnigs/bin/twistd, where a real
    install puts it), with the SoftEther drop-in beside it if C{dropin}.
    """
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    if not os.access(twistd, os.X_OK):
        twistd = sys.executable  # verify only checks that the program exists
    with open(unitPath(name)) as f:
        text = f.read()
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(text.replace("ExecStart=/opt/mnigs/bin/twistd ", f"ExecStart={twistd} "))
    if dropin:
        os.makedirs(path + ".d", exist_ok=True)
        shutil.copy(DROPIN, os.path.join(path + ".d", "softether.conf"))
    return path


def analyze(*argv):
    result = subprocess.run(["systemd-analyze", *argv], capture_output=True, text=True,
                            timeout=60)
    return result.returncode, (result.stdout + result.stderr).strip()


def exposure(path):
    code, output = analyze("security", "--offline=true", path)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", output)
    if code != 0 or found is None:
        raise AssertionError(f"systemd-analyze security {path} said:\n{output}")
    return float(found.group(1))


class UnitFileTests(TestCase):
    def setUp(self):
        requireTools(self, "systemd-analyze")

    def test_unitsVerifyCleanOnceTwistdIsWhereTheyNameIt(self):
        """
        C{systemd-analyze verify} finds nothing wrong with either unit
        (nor with the SoftEther drop-in) but, where mnigs is not installed
        under /opt/mnigs, the missing twistd.
        """
        directory = self.mktemp()
        for name in (SERVER, CLIENT):
            code, output = analyze("verify", installedCopy(directory, name, dropin=True))
            self.assertEqual((code, output), (0, ""), name)
            code, output = analyze("verify", unitPath(name))
            if os.access("/opt/mnigs/bin/twistd", os.X_OK):
                self.assertEqual((code, output), (0, ""), name)
            else:
                self.assertEqual(output, f"{name}: Command /opt/mnigs/bin/twistd is not "
                                 "executable: No such file or directory")

    def test_exposureIsAtMostFive(self):
        directory = self.mktemp()
        for name in (SERVER, CLIENT):
            self.assertLessEqual(exposure(unitPath(name)), MAX_EXPOSURE, name)
            withSoftEther = exposure(installedCopy(directory, name, dropin=True))
            self.assertLessEqual(withSoftEther, MAX_EXPOSURE, f"{name} with softether.conf")

    def test_brokenConfigExitsWithAStatusThatIsNotRestarted(self):
        """
        The real twistd with a config naming an unknown key exits with a
        status listed in the unit's C{RestartPreventExitStatus=}.
        """
        broken = self.mktemp()
        with open(broken, "w") as f:
            f.write("[nonsense]\nkey = 1\n")
        for name, plugin in ((SERVER, "mnigs-server"), (CLIENT, "mnigs-client")):
            statuses = " ".join(readSection(unitPath(name))["RestartPreventExitStatus"]).split()
            argv = twistdArgv(plugin, broken, "-", "")
            result = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                                    env={**os.environ, **daemonEnvironment()})
            self.assertIn("configuration error", result.stderr, name)
            self.assertIn(str(result.returncode), statuses, name)


def processStatus(pid):
    with open(f"/proc/{pid}/status") as f:
        return dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)


def descendants(pid):
    """C{pid} and every process below it, as C{(pid, name)}."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                status = processStatus(entry)
            except (FileNotFoundError, ProcessLookupError):
                continue
            children.setdefault(int(status["PPid"]), []).append((int(entry), status["Name"]))
    found, pending = [], [(pid, processStatus(pid)["Name"])]
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(children.get(current[0], []))
    return found


class RestrictedStartTests(TestCase):
    timeout = 180

    def setUp(self):
        requireNamespaces(self, "babeld", "wireguard-go", "wg", "nft", "ping", "setpriv",
                          "systemd-analyze")
        if ctypes.util.find_library("seccomp") is None:
            skipOrFail(self, "needs libseccomp (libseccomp2)")
        self.mesh = Mesh(self)

    def assertConfined(self, process, restrictions, expectNames):
        mask = f"{restrictions.capabilityMask():016x}"
        names = set()
        for pid, name in descendants(process.pid):
            try:
                status = processStatus(pid)
            except (FileNotFoundError, ProcessLookupError):
                continue  # a ping that just ended
            names.add(name)
            seen = {key: status[key] for key in ("CapBnd", "CapPrm", "CapEff", "CapInh",
                                                 "CapAmb", "NoNewPrivs", "Seccomp", "Umask")}
            self.assertEqual(seen, {"CapBnd": mask, "CapPrm": mask, "CapEff": mask,
                                    "CapInh": "0" * 16, "CapAmb": "0" * 16,
                                    "NoNewPrivs": "1" if restrictions.noNewPrivileges else "0",
                                    "Seccomp": "2", "Umask": f"{restrictions.umask:04o}"},
                             f"{name} ({pid})")
        self.assertLessEqual(set(expectNames), names)

    def assertFilesFollowUmask(self, daemon, restrictions):
        """
        The state directory, everything in it and the admin socket have no
        permission bit the umask takes away (the client id file, for one,
        is written 0644).
        """
        state = daemon.config.get("server", daemon.config.get("client"))["state_dir"]
        paths = [state, daemon.config["admin"]["socket"]]
        for top, directories, files in os.walk(state):
            paths += [os.path.join(top, n) for n in directories + files]
        modes = {path: stat.S_IMODE(os.lstat(path).st_mode) for path in paths}
        self.assertEqual({p: oct(m) for p, m in modes.items() if m & restrictions.umask}, {})
        self.assertGreater(len(modes), 3)

    def onlineUnderTheUnits(self, method, gatewayOverrides, clientOverrides,
                            units=(unitPath(SERVER), unitPath(CLIENT))):
        """
        client - gw: an mnigs-server and an mnigs-client, each with its
        unit's capability bounding set (as permitted and effective set),
        no_new_privs, umask, system call filter and address families, and
        their children alike: the gateway's uplink probes (raw ICMP) succeed,
        the client goes online over C{method} and reaches the internet
        host.  Returns the two daemons' processes.
        """
        client, gw = self.mesh.clientNextToGateway()
        serverUnit, clientUnit = (UnitRestrictions.fromUnit(unit) for unit in units)
        gateway = GatewayProcess(gw, {"uplink": {"probe": [INTERNET_HOST]}, **gatewayOverrides},
                                 name="gw", wrapper=serverUnit.wrapper(), umask=serverUnit.umask)
        self.addCleanup(gateway.stop)
        gateway.start()
        daemon = ClientProcess(client, merge({"health": {"beyond": [INTERNET_HOST]},
                                              "methods": {"order": [method]}}, clientOverrides),
                               wrapper=clientUnit.wrapper(), umask=clientUnit.umask)
        self.addCleanup(daemon.stop)
        status = daemon.start().waitState("online", 30, gateway="gw")
        self.assertEqual(status["current"]["method"], method)
        self.assertTrue(client.ping(INTERNET_HOST))
        self.assertConfined(gateway.process, serverUnit, [DAEMONS[method][0]])
        self.assertConfined(daemon.process, clientUnit, [DAEMONS[method][1]])
        self.assertFilesFollowUmask(gateway, serverUnit)
        self.assertFilesFollowUmask(daemon, clientUnit)

    def test_clientOnlineOverWireGuardUnderTheUnitsRestrictions(self):
        """wireguard-go on both sides, under the units' restrictions."""
        self.onlineUnderTheUnits("wireguard", {}, {})

    def test_clientOnlineOverOpenVPNUnderTheUnitsRestrictions(self):
        """openvpn on both sides, under the units' restrictions."""
        requireTools(self, "openvpn")
        self.onlineUnderTheUnits(
            "openvpn",
            {"methods": {"openvpn": {"interface": "mo" + secrets.token_hex(4),
                                     "pool": "100.65.0.0/24", "port": 1194}}},
            {"methods": {"openvpn": {"interface": "mp" + secrets.token_hex(4)}}})

    def test_clientOnlineOverSoftEtherUnderTheUnitsWithTheDropIn(self):
        """
        vpnserver and vpnclient (each in its mount namespace) under the
        units with etc/systemd/softether.conf added.
        """
        from tests.mesh.test_softether import softetherMissing
        missing = softetherMissing()
        if missing:
            skipOrFail(self, missing)
        directory = self.mktemp()
        self.onlineUnderTheUnits(
            "softether",
            {"methods": {"softether": {"pool": "100.66.0.0/24", "port": 5555,
                                       "bridge": "s" + secrets.token_hex(4)}}},
            {"methods": {"connect_timeout": 10.0,
                         "softether": {"nic": "c" + secrets.token_hex(3)}}},
            units=[installedCopy(directory, unit, dropin=True) for unit in (SERVER, CLIENT)])
