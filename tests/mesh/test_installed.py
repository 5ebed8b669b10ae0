"""
mnigs as an operator installs it: the wheel built from this checkout,
installed into a fresh virtualenv, and run with nothing of the checkout
on the path (no PYTHONPATH, working directory outside the checkout, the
virtualenv's own C{bin/twistd}, C{bin/mnigsctl} and C{bin/mnigs-rpc}),
both daemons from the C{etc/} samples with only paths, interface names
and addresses changed::

    client --- r1 --- gw === inet (198.51.100.1)

The dependencies come from pip's configured indexes, through pip's cache.
Nothing is mocked.
"""

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile

from twisted.logger import Logger
from twisted.trial.unittest import TestCase

import mnigs
from tests.mesh.commands import fileTail
from tests.mesh.gatewayproc import merge, toTOML
from tests.mesh.harness import Mesh, requireNamespaces, waitUntil

log = Logger()

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INTERNET = "198.51.100.1"

# Not the project's source: left out of the copy the wheel is built from.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                                    "*.pyc", "_trial_temp*", ".hypothesis")


def environmentWithoutCheckout():
    """
    This process's environment without what would put the checkout (or
    the test virtualenv) on a Python path: pip's settings and cache stay.
    """
    return {k: v for k, v in os.environ.items()
            if not k.startswith("PYTHON") and k != "VIRTUAL_ENV"}


def runOutsideCheckout(argv, cwd, timeout=600):
    """
    Run C{argv} in C{cwd} with L{environmentWithoutCheckout}; fail with
    its output if it fails.
    """
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                            env=environmentWithoutCheckout(), stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise AssertionError(f"{argv} exited with {result.returncode}:\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def scratchDirectory(testcase):
    """
    A directory outside the checkout, removed when C{testcase} ends.
    """
    path = tempfile.mkdtemp(prefix="mnigs-installed-")
    testcase.addCleanup(shutil.rmtree, path, ignore_errors=True)
    if os.path.commonpath([path, TOP]) == TOP:
        testcase.fail(f"the temporary directory {path} is inside the checkout {TOP}")
    return path


def buildWheel(scratch):
    """
    Build the wheel with C{pip wheel --no-deps} from a copy of the
    checkout: the build writes C{build/} and C{*.egg-info} next to
    C{setup.cfg}, and must neither touch the checkout nor pick up a stale
    C{build/} left in it.  The copy gets a C{twisted/plugins/dropin.cache},
    as twistd leaves one in a checkout it ran from.

    @return: the wheel's path and the copy's path.
    """
    source = os.path.join(scratch, "source")
    shutil.copytree(TOP, source, ignore=NOT_SOURCE)
    with open(os.path.join(source, "twisted", "plugins", "dropin.cache"), "w") as f:
        f.write("left by twistd\n")
    wheels = os.path.join(scratch, "wheels")
    runOutsideCheckout([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                        "--wheel-dir", wheels, source], cwd=scratch)
    [name] = os.listdir(wheels)
    return os.path.join(wheels, name), source


def sourceFiles(source):
    """
    Every module of C{mnigs/} in C{source}, and the twistd plugin file, as
    paths inside a wheel.
    """
    found = {"twisted/plugins/mnigs_plugins.py"}
    for directory, _, files in os.walk(os.path.join(source, "mnigs")):
        relative = os.path.relpath(directory, source).replace(os.sep, "/")
        found.update(f"{relative}/{name}" for name in files if name.endswith(".py"))
    return found


class InstalledVenv:
    """
    A fresh virtualenv under C{scratch} with one wheel installed, and its
    commands run with a clean environment from a directory outside the
    checkout.
    """

    def __init__(self, scratch):
        self.path = os.path.join(scratch, "venv")
        self.home = os.path.join(scratch, "home")
        os.mkdir(self.home)

    def install(self, wheel):
        # pip from the test's environment installs into the new one
        # (--python): no ensurepip, which would only copy a second pip.
        for argv in ([sys.executable, "-m", "venv", "--without-pip", self.path],
                     [sys.executable, "-m", "pip", "--python", self.bin("python"),
                      "install", "-q", wheel]):
            runOutsideCheckout(argv, cwd=self.home)
        return self

    def bin(self, name):
        return os.path.join(self.path, "bin", name)

    def argv(self, name, *args):
        """
        Run the virtualenv's C{bin/NAME} with only C{PATH}, C{HOME} and
        C{LANG} set, in C{home}.
        """
        return ["env", "-i", "-C", self.home,
                f"PATH={os.path.dirname(self.bin(name))}:/usr/local/sbin:/usr/local/bin"
                ":/usr/sbin:/usr/bin:/sbin:/bin",
                f"HOME={self.home}", "LANG=C.UTF-8", self.bin(name), *args]

    def run(self, name, *args, node=None, timeout=60):
        """
        Run C{bin/NAME} (in C{node}, if given) and return its output.
        """
        argv = self.argv(name, *args)
        if node is None:
            return runOutsideCheckout(argv, cwd=self.home, timeout=timeout).stdout
        result = node.run(argv, check=False, timeout=timeout)
        if result.returncode != 0:
            raise AssertionError(f"{name} {' '.join(args)} exited with {result.returncode}:\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result.stdout


def sample(name):
    with open(os.path.join(TOP, "etc", name), "rb") as f:
        return tomllib.load(f)


def clientMethodSection(config, method):
    """
    The client sample's section for C{method}: C{[methods.NAME]} (the
    server's spelling) or the older C{[method.NAME]}, whichever it uses.
    """
    for section in ("methods", "method"):
        if isinstance(config.get(section, {}).get(method), dict):
            return section
    raise AssertionError(f"etc/mnigs-client.toml has no [methods.{method}] nor [method.{method}]")


class InstalledDaemon:
    """
    One twistd daemon of the virtualenv in C{node}, from C{config}, with
    its files in a directory of the node.
    """

    def __init__(self, venv, node, plugin, config):
        self.venv = venv
        self.node = node
        self.plugin = plugin
        self.config = config
        self.dir = os.path.join(node.tmp, plugin)
        os.makedirs(self.dir)
        self.configPath = os.path.join(self.dir, f"{plugin}.toml")
        text = toTOML(config)
        assert tomllib.loads(text) == config, text
        with open(self.configPath, "w") as f:
            f.write(text)
        self.logPath = os.path.join(self.dir, "twistd.log")
        self.process = None

    def start(self):
        self.process = self.node.spawn(
            self.venv.argv("twistd", "--nodaemon", f"--pidfile={self.dir}/twistd.pid",
                           f"--logfile={self.logPath}", self.plugin, "--config", self.configPath),
            log=os.path.join(self.dir, "stdout.log"))
        return self

    def waitFor(self, what, predicate, timeout):
        """
        Wait until C{predicate()} holds, failing with the daemon's log if
        it exits or the deadline passes.
        """
        def reachedOrGone():
            return self.process.poll() is not None or predicate()

        try:
            waitUntil(reachedOrGone, timeout, interval=0.2, message=what)
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- {self.plugin} log ---\n{self.logTail()}") from None
        if self.process.poll() is not None:
            raise AssertionError(f"{self.plugin} exited with {self.process.returncode} "
                                 f"while waiting for {what}:\n{self.logTail()}")

    def stop(self, timeout=20):
        """
        TERM the daemon (C{ip netns exec} and C{env} exec it: the pid is
        twistd's own) and return its exit status.
        """
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout)
        return None if self.process is None else self.process.returncode

    def logTail(self):
        return fileTail(self.logPath, 8000) + fileTail(os.path.join(self.dir, "stdout.log"))


class WheelTests(TestCase):
    timeout = 600

    def test_wheelHoldsEveryModuleAndThePluginButNoTests(self):
        """
        Packages are found, not listed: every module under C{mnigs/} and
        C{twisted/plugins/mnigs_plugins.py} are in the wheel; the tests,
        twistd's C{dropin.cache} and an C{__init__.py} in C{twisted/} or
        C{twisted/plugins/} (which would hide Twisted's own) are not.
        """
        wheel, source = buildWheel(scratchDirectory(self))
        with zipfile.ZipFile(wheel) as z:
            inWheel = set(z.namelist())
        self.assertEqual(sorted(sourceFiles(source) - inWheel), [])
        stray = [name for name in inWheel
                 if name.startswith("tests/") or name.endswith("dropin.cache")
                 or name in ("twisted/__init__.py", "twisted/plugins/__init__.py")]
        self.assertEqual(stray, [])


class InstalledDaemonsTests(TestCase):
    timeout = 900

    def setUp(self):
        requireNamespaces(self, "babeld", "wireguard-go", "wg", "nft", "ping", "openvpn")

    def test_installedWheelRunsTheSamplesUntilAClientIsOnline(self):
        """
        From a fresh virtualenv holding only the wheel and its
        dependencies: the installed code imports from the virtualenv
        alone, twistd knows both plugins, C{mnigsctl --version} says the
        distribution's version, and a gateway and a client run from the
        C{etc/} samples bring the client online through the gateway, with
        WireGuard (the client sample's first method), and to the internet
        host.
        """
        started = time.monotonic()
        scratch = scratchDirectory(self)
        wheel, _ = buildWheel(scratch)
        venv = InstalledVenv(scratch).install(wheel)
        installed = time.monotonic()

        where = json.loads(venv.run("python", "-c", (
            "import importlib.metadata, json, pkgutil, sys, importlib\n"
            "import mnigs, twisted.plugins.mnigs_plugins as plugins\n"
            "modules = [m.name for m in pkgutil.walk_packages(mnigs.__path__, 'mnigs.')]\n"
            "for m in modules: importlib.import_module(m)\n"
            "print(json.dumps({'files': [mnigs.__file__, plugins.__file__], 'path': sys.path,\n"
            "                  'modules': len(modules),\n"
            "                  'version': importlib.metadata.version('mnigs')}))")))
        for path in where["files"]:
            self.assertTrue(path.startswith(venv.path + os.sep), path)
        self.assertEqual([p for p in where["path"] if p.startswith(TOP)], [])
        self.assertGreater(where["modules"], 50)
        self.assertEqual(where["version"], mnigs.__version__)
        self.assertEqual(venv.run("mnigsctl", "--version"), f"mnigs {where['version']}\n")
        plugins = venv.run("twistd", "--help")
        self.assertIn("mnigs-server", plugins)
        self.assertIn("mnigs-client", plugins)

        m = Mesh(self)
        client, r1, gw = m.node("client"), m.node("r1"), m.node("gw")
        m.link(client, r1)
        m.link(r1, gw)
        m.internet(gw)
        m.startBabel()
        m.waitConverged()

        server = self.serverFromSample(venv, gw).start()
        offers = []

        def serving():
            offer = json.loads(venv.run("mnigs-rpc", "--timeout", "2", "127.0.0.1",
                                        "gateway.info", node=gw))
            offers.append(offer)
            return offer["available"]

        server.waitFor("the gateway to serve", serving, 60)
        enabled = sorted(name for name, section in sample("mnigs-server.toml")["methods"].items()
                         if isinstance(section, dict) and section.get("enabled"))
        self.assertEqual(enabled, ["forward", "openvpn", "wireguard"])
        self.assertEqual(sorted(method["type"] for method in offers[-1]["methods"]), enabled)

        meshClient = self.clientFromSample(venv, client).start()

        def status():
            return json.loads(venv.run("mnigsctl", "--socket", meshClient.config["admin"]["socket"],
                                       "status", "--json", node=client))

        meshClient.waitFor("the client to be online", lambda: status()["state"] == "online", 60)
        current = status()["current"]
        self.assertEqual((current["name"], current["method"]),
                         (sample("mnigs-server.toml")["server"]["name"], "wireguard"))
        meshClient.waitFor("the internet host to answer", lambda: client.ping(INTERNET), 20)
        online = time.monotonic()

        # twistd re-raises the TERM it shut down on.
        for daemon in (meshClient, server):
            self.assertIn(daemon.stop(), (0, -signal.SIGTERM), daemon.logTail())
            self.assertIn("Server Shut Down.", fileTail(daemon.logPath, 500))
        log.info("installed wheel: built and installed in {install:.1f} s, client online and "
                 "pinging {online:.1f} s later", install=installed - started,
                 online=online - installed)

    def serverFromSample(self, venv, node):
        config = sample("mnigs-server.toml")
        directory = os.path.join(node.tmp, "mnigs-server")
        config = merge(config, {
            "server": {"state_dir": os.path.join(directory, "state")},
            "mesh": {"interfaces": list(node.meshInterfaces)},
            "uplink": {"interface": node.uplink},
            # wireguard-go's control sockets are shared by every namespace
            "methods": {"wireguard": {"interface": "mw" + secrets.token_hex(4)}},
            "admin": {"socket": os.path.join(directory, "admin.sock")},
            "manhole": {"socket": os.path.join(directory, "manhole.sock")},
        })
        daemon = InstalledDaemon(venv, node, "mnigs-server", config)
        self.addCleanup(daemon.stop)
        return daemon

    def clientFromSample(self, venv, node):
        config = sample("mnigs-client.toml")
        directory = os.path.join(node.tmp, "mnigs-client")
        section = clientMethodSection(config, "wireguard")
        config = merge(config, {
            "client": {"state_dir": os.path.join(directory, "state")},
            section: {"wireguard": {"interface": "mc" + secrets.token_hex(4)}},
            "admin": {"socket": os.path.join(directory, "admin.sock")},
            "manhole": {"socket": os.path.join(directory, "manhole.sock")},
        })
        daemon = InstalledDaemon(venv, node, "mnigs-client", config)
        self.addCleanup(daemon.stop)
        return daemon
