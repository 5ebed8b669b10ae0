"""
The mnigs demo: a small mesh in network namespaces, two Internet gateways,
one client that finds them, goes online, and fails over when the gateway
it uses goes silent.  Nothing is simulated: real babeld, real mnigs-server
and mnigs-client daemons (twistd), real wireguard-go tunnels, real pings.

    scripts/mnigs-dev demo [--keep]        (as root; installs what it needs)
    python demo/run.py [--keep]            (as root, in a ready environment)

Everything it starts is stopped and everything it creates is removed when
it ends: on success, on failure and on Ctrl-C.  Exit status 0 on success,
1 when the demo failed (it says why and shows the relevant log), 2 when
the machine cannot run it, 130 when interrupted.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if TOP not in sys.path:
    sys.path.insert(0, TOP)

from tests.mesh.clientproc import ClientProcess  # noqa: E402
from tests.mesh.commands import waitUntil  # noqa: E402
from tests.mesh.gatewayproc import GatewayProcess, daemonEnvironment  # noqa: E402
from tests.mesh.harness import INTERNET_HOST, Mesh, missingForNamespaces  # noqa: E402

HELLO = 0.5
ONLINE_TIMEOUT = 60
FAILOVER_TIMEOUT = 30
PING_INTERVAL = 0.05  # 20 pings a second
WIREGUARD_SOCKETS = "/var/run/wireguard"

TOPOLOGY = """\
      laptop (mnigs client)
        |
        r1 ------ r3 ------ gwB ===> internet B
        |
        r2
        |
       gwA ===> internet A

   ---  mesh links (veth pairs, babeld runs on them)
   ===> each gateway's uplink to its own "internet" namespace, where
        the host 198.51.100.1 answers pings"""


class DemoFailed(Exception):
    """The demo could not show what it meant to; the message says why."""


class Stopped(BaseException):
    """SIGTERM or SIGHUP: clean up as on Ctrl-C."""


# ---------------------------------------------------------------- output

_started = time.monotonic()


def say(text=""):
    stamp = f"[{time.monotonic() - _started:5.1f}s] "
    lines = text.split("\n")
    print(stamp + lines[0])
    for line in lines[1:]:
        print(" " * len(stamp) + line)
    sys.stdout.flush()


def heading(text):
    print()
    print(f"=== {text} " + "=" * max(3, 66 - len(text)))
    sys.stdout.flush()


def indented(text, prefix="    | "):
    return "\n".join(prefix + line for line in text.rstrip("\n").split("\n"))


def logTail(title, text, lines=40):
    # Twisted's "Starting factory"/"Stopping factory" lines say nothing here.
    kept = [line for line in text.rstrip("\n").split("\n")
            if "Starting factory" not in line and "Stopping factory" not in line]
    tail = "\n".join(kept[-lines:])
    return f"--- {title} (last lines) ---\n{tail}\n--- end of {title} ---"


def setUpWarnings():
    """
    Show the harness's cleanup warnings (Twisted logger) on stderr.
    """
    from twisted.logger import (
        FilteringLogObserver, LogLevel, LogLevelFilterPredicate,
        globalLogBeginner, textFileLogObserver)
    observer = FilteringLogObserver(
        textFileLogObserver(sys.stderr),
        [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


# ---------------------------------------------------------------- pinger

_REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from [^:]+: icmp_seq=(\d+)")


class Pinger:
    """
    C{ping -i 0.05} running in a namespace, its replies recorded as
    (receive time, icmp_seq) by a reader thread.
    """

    def __init__(self, mesh, node, host, interval):
        self.replies = []
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", node.ns, "ping", "-n", "-D", "-i", str(interval),
             "-W", "1", host],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, bufsize=1, start_new_session=True)
        mesh.track(self.process)
        self.output = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.process.stdout:
            self.output.append(line)
            match = _REPLY.match(line)
            if match:
                self.replies.append((float(match.group(1)), int(match.group(2))))

    def lastReply(self):
        return self.replies[-1] if self.replies else None

    def stop(self):
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGINT)
                self.process.wait(5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        self.thread.join(2)

    def summary(self):
        return "".join(line for line in self.output[-3:] if "transmitted" in line or "rtt" in line)

    def longestGap(self, since):
        """
        The longest time between two consecutive replies received after
        C{since}, as (last reply before, first reply after), or C{None}.
        """
        replies = [r for r in self.replies if r[0] >= since]
        gaps = [(b[0] - a[0], a, b) for a, b in zip(replies, replies[1:])]
        if not gaps:
            return None
        _, before, after = max(gaps)
        return before, after


# ---------------------------------------------------------------- the demo


def silence(node):
    """
    Make C{node} drop every packet, as a crashed or wedged box would: no
    link goes down, so babel and the client only notice by their timers.
    (The same rules as tests/mesh/test_client.py.)
    """
    node.run(["nft", "-f", "-"], input="""
table inet mnigs_chaos {
  chain input { type filter hook input priority -300; policy drop; }
  chain forward { type filter hook forward priority -300; policy drop; }
  chain output { type filter hook output priority -300; policy drop; }
}
""")


class Demo:
    def __init__(self, keep):
        self.keep = keep
        self.mesh = None
        self.client = None
        self.gateways = {}
        self.pinger = None
        self.wgInterfaces = []
        self.leftovers = []
        self.pid = os.getpid()

    # -- helpers

    def ctl(self, node, socket, command="status"):
        """
        C{mnigsctl --socket SOCKET status}, run inside C{node} as a user
        there would; its human output.
        """
        result = node.run(["env", f"PYTHONPATH={daemonEnvironment()['PYTHONPATH']}",
                           sys.executable, "-m", "mnigs.cli.ctl", "--socket", socket, command],
                          check=False)
        return (result.stdout + result.stderr).rstrip("\n")

    def clientStatus(self):
        from mnigs.cli.ctl import ask
        try:
            return ask(self.client.config["admin"]["socket"], "status", timeout=2)
        except (OSError, ValueError):
            return {"state": None}

    def clientFailed(self, message):
        return DemoFailed(f"{message}\n" + logTail("client log", self.client.logTail()))

    def followClient(self, until, timeout, since, why):
        """
        Poll the client's status, saying each change of state, until
        C{until(status)} holds; return that status.
        """
        last = None
        deadline = time.monotonic() + timeout
        while True:
            if self.client.process.poll() is not None:
                raise self.clientFailed(
                    f"the mnigs client exited (status {self.client.process.returncode}) "
                    f"while {why}")
            status = self.clientStatus()
            description = self.describe(status)
            if description != last:
                say(f"  +{time.monotonic() - since:4.2f}s  client: {description}")
                last = description
            if until(status):
                return status
            if time.monotonic() > deadline:
                raise self.clientFailed(
                    f"the mnigs client did not finish {why} within {timeout} s "
                    f"(its last state: {description})")
            time.sleep(0.05)

    def listUpdated(self, silent):
        """
        Whether the client's gateway list no longer offers the silenced
        gateway as usable: it is gone (it answers no discovery) or
        excluded.
        """
        gateways = self.clientStatus().get("gateways") or []
        return not any(g.get("name") == silent and g.get("usable", True) for g in gateways)

    @staticmethod
    def describe(status):
        state = status.get("state")
        if state is None:
            return "starting (admin socket not answering yet)"
        if state in ("registering", "connecting"):
            attempt = status.get("attempt") or {}
            return f"{state} with {attempt.get('name')} via {attempt.get('method')}"
        if state in ("online", "degraded"):
            current = status.get("current") or {}
            text = f"{state} via {current.get('name')} ({current.get('method')})"
            return text + (f" - {status['reason']}" if state == "degraded" and status.get("reason") else "")
        if state == "searching":
            return "searching: asking every node the mesh routes to whether it is a gateway"
        if state == "waiting":
            return f"waiting ({status.get('reason')}), retrying in {status.get('retry_in')} s"
        return state

    # -- the story

    def run(self):
        try:
            with Mesh(None, hello=HELLO) as mesh:
                self.mesh = mesh
                try:
                    self.show(mesh)
                finally:
                    if os.getpid() != self.pid:  # see main(): never in a forked child
                        os._exit(1)
                    # Cleaning up must not be cut short by an impatient Ctrl-C.
                    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                        signal.signal(signum, signal.SIG_IGN)
                    heading("Cleaning up")
                    self.stopDaemons()
                    say("stopping babeld, deleting the namespaces and the temporary files")
        finally:
            self.removeWireGuardSockets()
            self.leftovers = self.findLeftovers()
            if self.leftovers:
                print("mnigs demo: cleaning up left these behind:\n  "
                      + "\n  ".join(self.leftovers), file=sys.stderr)
            elif self.mesh is not None:
                say(f"all gone: no {self.mesh.prefix}-* namespaces, processes, WireGuard "
                    "sockets or temporary files are left")

    def show(self, mesh):
        heading("1. A mesh in network namespaces")
        say("Every box below is a Linux network namespace; every line a veth pair.\n"
            + TOPOLOGY)
        laptop, r1, r2, r3, gwA, gwB = (mesh.node(n) for n in ("laptop", "r1", "r2", "r3", "gwA", "gwB"))
        mesh.link(laptop, r1)
        mesh.link(r1, r2)
        mesh.link(r2, gwA)
        mesh.link(r1, r3)
        mesh.link(r3, gwB)
        mesh.internet(gwA)
        mesh.internet(gwB)
        say(f"created {len(mesh.nodes)} namespaces named {mesh.prefix}-*")
        say(f"starting babeld (the mesh routing daemon) on the 6 mesh nodes, with a hello\n"
            f"interval of {HELLO} s instead of the usual 4 s so that the demo is quick")
        mesh.startBabel()
        took = mesh.waitConverged(timeout=30)
        say(f"babel converged in {took:.1f} s: every node has a route to every other,\n"
            f"and a default route towards the gateways, which announce their uplinks")

        say(f"before any mnigs runs, the laptop pings the internet host {INTERNET_HOST}:")
        if laptop.ping(INTERNET_HOST, timeout=1.0):
            raise DemoFailed(f"{INTERNET_HOST} answered without mnigs: the gateways should "
                             "only forward for clients that hold a lease")
        say("  no answer: a gateway forwards (and NATs) only for clients holding a lease")

        heading("2. Two gateways")
        for node in (gwA, gwB):
            gateway = GatewayProcess(node, name=node.name)
            self.gateways[node.name] = gateway
            self.wgInterfaces.append(gateway.wgInterface)
            gateway.start(wait=False)
        say("started mnigs-server (twistd) on gwA and gwB: free of charge, up to 8\n"
            "clients each, WireGuard and plain forwarding; each answers gateway.info\n"
            "(JSON-RPC, port 8150) with a signed offer")
        for name, gateway in self.gateways.items():
            try:
                gateway.waitServing(timeout=30)
            except AssertionError as e:
                raise DemoFailed(f"mnigs-server on {name} did not come up:\n{e}") from None
            say(f"  {name} serves: " + self.ctl(gateway.node, gateway.config["admin"]["socket"])
                .split("\n")[0])

        heading("3. The client finds the gateways and goes online")
        self.client = ClientProcess(laptop, {"health": {"beyond": [INTERNET_HOST]}}, name="laptop")
        self.wgInterfaces.append(self.client.wgInterface)
        started = time.monotonic()
        self.client.start()
        say("started mnigs-client (twistd) on the laptop; it reads babeld's routes,\n"
            "asks each destination for a gateway offer, ranks the answers and connects\n"
            "to the best one, WireGuard first")
        status = self.followClient(lambda s: s.get("state") == "online", ONLINE_TIMEOUT,
                                   started, "going online")
        first = status["current"]["name"]
        other = "gwB" if first == "gwA" else "gwA"
        say(f"online through {first} after {time.monotonic() - started:.1f} s")
        socket = self.client.config["admin"]["socket"]
        say(f"$ mnigsctl --socket {socket} status\n" + indented(self.ctl(laptop, socket))
            + "\nthe ranking: lower score is better; it adds up the routing distance (babel\n"
            "metric), the RPC round trip, the load, the failure history, and a fee if any")
        route = laptop.run(["ip", "route", "get", INTERNET_HOST], check=False).stdout.strip()
        say("the laptop's route to the internet now leads into the tunnel:\n"
            f"$ ip route get {INTERNET_HOST}\n" + indented(route))
        result = laptop.run(["ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", INTERNET_HOST],
                            check=False)
        say(f"$ ping -c 3 {INTERNET_HOST}\n" + indented(result.stdout))
        if result.returncode != 0:
            raise self.clientFailed(f"the client is online through {first} but "
                                    f"{INTERNET_HOST} does not answer")

        heading(f"4. {first} goes silent")
        self.pinger = Pinger(mesh, laptop, INTERNET_HOST, PING_INTERVAL)
        say(f"pinging {INTERNET_HOST} 20 times a second from the laptop...")
        try:
            waitUntil(lambda: len(self.pinger.replies) >= 20, 10, message="20 ping replies")
        except AssertionError:
            raise DemoFailed("the continuous ping got no replies:\n"
                             + "".join(self.pinger.output[-10:])) from None
        say(f"  {len(self.pinger.replies)} replies so far")
        silenceStart = time.time()
        silence(self.gateways[first].node)
        silenced = time.monotonic()
        say(f"{first} now drops every packet (nftables, policy drop on input, forward and\n"
            "output) - like a wedged box: no link goes down, nothing says goodbye; the\n"
            "client's health probes through the tunnel are what notice")
        status = self.followClient(
            lambda s: s.get("state") == "online" and s["current"]["name"] == other,
            FAILOVER_TIMEOUT, silenced, f"failing over from {first} to {other}")
        say(f"online through {other}; waiting for the pings to come back")
        try:
            waitUntil(lambda: self.pinger.lastReply() and self.pinger.lastReply()[0] > silenceStart + 0.3,
                      15, message="ping replies through the new gateway")
        except AssertionError:
            raise self.clientFailed(
                f"the client says it is online through {other}, but no ping came back:\n"
                + "".join(self.pinger.output[-10:])) from None
        time.sleep(1.0)
        self.pinger.stop()
        gap = self.pinger.longestGap(silenceStart - 1.0)
        if gap is None:
            raise DemoFailed("too few ping replies to measure the outage:\n"
                             + "".join(self.pinger.output[-10:]))
        before, after = gap
        outage = after[0] - before[0]
        say(f"ping statistics:\n{indented(self.pinger.summary())}")
        say(f"OUTAGE: {outage:.2f} s, from the last reply through {first} (icmp_seq={before[1]},\n"
            f"{before[0] - silenceStart:+.2f} s from the silencing) to the first reply through "
            f"{other}\n(icmp_seq={after[1]}, {after[0] - silenceStart:+.2f} s); "
            f"{after[1] - before[1] - 1} pings lost")

        heading("5. After the failover")
        if not self.listUpdated(first):
            say(f"the client's gateway list is from its last discovery round, before {first} went\n"
                "silent; it rescans after route changes and every 5 s (in this demo; 60 s by\n"
                "default): waiting for the next round")
            try:
                waitUntil(lambda: self.listUpdated(first), 15, interval=0.1,
                          message="the next discovery round")
            except AssertionError:
                say(f"  (no new round within 15 s: the list below still shows {first} as it was)")
        text = self.ctl(laptop, socket)
        if f" {first} " not in text:
            text += (f"\n({first} is gone from the list: it answers nobody now; the client's"
                     f"\nhistory keeps its failure, so it ranks lower should it come back)")
        say(f"$ mnigsctl --socket {socket} status\n" + indented(text))
        gateway = self.gateways[other]
        say(f"and {other}'s own view ($ mnigsctl --socket {gateway.config['admin']['socket']} status):\n"
            + indented(self.ctl(gateway.node, gateway.config["admin"]["socket"])))

        if self.keep:
            self.pause(laptop, socket, first)
        heading("Demo complete")
        say(f"the client found both gateways, went online through {first}, and when {first}\n"
            f"went silent moved to {other} with an outage of {outage:.2f} s")

    def pause(self, laptop, socket, silenced):
        heading("Left running (--keep)")
        python = f"PYTHONPATH={TOP} {sys.executable} -m mnigs.cli.ctl --socket"
        gateways = "\n".join(f"  {python} {g.config['admin']['socket']} status"
                              for g in self.gateways.values())
        print(f"""Poke at it from another shell, for example:
  {python} {socket} status
{gateways}
  ip netns exec {laptop.ns} ping {INTERNET_HOST}
  ip netns exec {laptop.ns} ip rule
  ip netns exec {laptop.ns} ip route show table all
  ip netns exec {self.gateways[silenced].node.ns} nft delete table inet mnigs_chaos   # {silenced} speaks again
  logs: {self.mesh.tmp}/NODE/mnigs-NAME/*.log, {self.mesh.tmp}/NODE/babeld.log
Press Enter to stop everything and clean up.""")
        sys.stdout.flush()
        try:
            input()
        except EOFError:
            pass

    # -- cleaning up

    def stopDaemons(self):
        if self.pinger is not None:
            self.pinger.stop()
        if self.client is not None and self.client.process is not None:
            say("stopping the client: it takes its tunnel and routes down, releases its lease")
            self._stop(self.client, "the mnigs client")
        for name, gateway in self.gateways.items():
            if gateway.process is not None:
                say(f"stopping mnigs-server on {name}: like a restart, it leaves its "
                    "wireguard-go for the next start to adopt; the namespace teardown ends it")
                self._stop(gateway, f"mnigs-server on {name}")

    @staticmethod
    def _stop(process, what):
        try:
            process.stop()
        except subprocess.TimeoutExpired:
            say(f"  {what} did not stop on SIGTERM: it will be killed")
        except Exception as e:  # the namespace teardown kills it anyway
            say(f"  could not stop {what} ({e!r}): it will be killed")

    def removeWireGuardSockets(self):
        # wireguard-go removes its control socket on a clean exit; one that
        # was killed leaves it behind.  Only this demo's interface names.
        for ifname in self.wgInterfaces:
            path = os.path.join(WIREGUARD_SOCKETS, ifname + ".sock")
            if os.path.exists(path):
                os.unlink(path)

    def findLeftovers(self):
        if self.mesh is None:
            return []
        prefix = self.mesh.prefix
        leftovers = []
        namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        leftovers += [f"namespace {line.split()[0]}" for line in namespaces.splitlines()
                      if line.startswith(prefix)]
        markers = [prefix] + self.wgInterfaces
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if any(marker in cmdline for marker in markers):
                leftovers.append(f"process {entry}: {cmdline.strip()}")
        leftovers += [f"socket {path}" for path in
                      (os.path.join(WIREGUARD_SOCKETS, i + ".sock") for i in self.wgInterfaces)
                      if os.path.exists(path)]
        tmp = tempfile.gettempdir()
        leftovers += [f"directory {os.path.join(tmp, name)}" for name in os.listdir(tmp)
                      if name.startswith(prefix)]
        return leftovers


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="mnigs-dev demo",
        description="Two mnigs gateways and a client in network namespaces with real babeld: "
                    "discovery, ranking, going online, and failover when a gateway goes silent.")
    parser.add_argument("--keep", action="store_true",
                        help="after the failover, leave everything running until Enter is pressed")
    args = parser.parse_args(argv)

    reason = missingForNamespaces("babeld", "wireguard-go", "wg", "nft", "ping")
    if reason:
        print(f"mnigs demo: cannot run here: {reason}", file=sys.stderr)
        return 2

    mainPid = os.getpid()

    def stop(signum, frame):
        if os.getpid() != mainPid:
            # A child forked by pyroute2 to open a socket in a namespace:
            # it must not run the demo's clean-up code.
            os._exit(128 + signum)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt()
        raise Stopped(signal.Signals(signum).name)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)
    setUpWarnings()

    print("mnigs demo: a mesh, two Internet gateways, one client, one gateway failure.")
    demo = Demo(args.keep)
    code = 0
    try:
        demo.run()
    except DemoFailed as e:
        print(f"\nmnigs demo FAILED: {e}", file=sys.stderr)
        code = 1
    except (KeyboardInterrupt, Stopped) as e:
        why = "Ctrl-C" if isinstance(e, KeyboardInterrupt) else e.args[0]
        print(f"\nmnigs demo: interrupted ({why}); cleaned up", file=sys.stderr)
        code = 130
    except Exception:
        traceback.print_exc()
        print("\nmnigs demo FAILED with an unexpected error (above)", file=sys.stderr)
        code = 1
    else:
        say(f"done in {time.monotonic() - _started:.0f} s")
    if demo.leftovers and code == 0:
        code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
