"""
Benchmark of a real mnigs-server's JSON-RPC side (not a unit test).

Run as root from the working tree::

    python bench/server_rpc.py [--duration 10] [--leases 10000] [--py-spy DIR] [--web]

It builds its own network namespace (L{tests.mesh.harness.Mesh} as a
context manager: a gateway node with an internet uplink, so the gateway is
"available"), starts C{twistd mnigs-server} there with wireguard-go and
nftables, and measures from inside the namespace over loopback:

  1. C{gateway.info} calls per second: 16 keep-alive HTTP/1.1 connections,
     one call in flight on each (no pipelining);
  2. C{gateway.register} + C{gateway.unregister} pairs per second with the
     C{wireguard} method (C{forward} needs a direct mesh neighbour, which
     loopback is not): each pair registers a fresh client (its own ed25519 key,
     signing the registration over the offer's nonce) with a fresh
     key from L{mnigs.wireguard.uapi.generatePrivateKey}/C{publicKey} and
     unregisters it at once; 8 workers, each on its own keep-alive
     connection.  Every pair costs the server a WireGuard peer add and
     remove (UAPI), two nftables transactions (netlink) and two lease
     journal commits (fsync);
  3. the server's RSS (C{VmRSS}) holding 10,000 live wireguard leases
     (registered by 16 workers), and then pairs per second again with
     those 10,000 leases in the book.

CPU placement: the server is started as C{taskset -c 0 twistd ...}, so
twistd and everything it spawns (wireguard-go, nft, hooks) share CPU 0; the
load generator (this file run with C{loadgen}, inside the namespace) is
started as C{taskset -c 1 python ...}.  With a single CPU nothing is pinned
and the figures say so.

Progress goes to stderr; the last line of stdout is one JSON object with
C{info_per_s}, C{register_unregister_per_s}, C{rss_mb_10k_leases} and
extras: latencies, the server's CPU time per call or pair and how busy its
CPU was (twistd, its reaped children and wireguard-go, read from /proc by
the load generator over the measured window only), lease store sizes.
Targets (the gateway issue): >= 1,500 info/s, >= 300 pairs/s, <= 150 MB.

C{--web} runs the server with its status listener on (C{[web] enabled}:
the metrics are counted) and has the load generator scrape C{/metrics}
every C{--scrape-interval} seconds (default 1) during the timed phases, as
a Prometheus server would (every 15 s, usually): run it after a run
without C{--web} to see what the metrics cost (C{"web": true} in the
figures, and the scrapes made in each timed phase).

Other work on the machine shows in the figures: run it on a quiet one.
C{--py-spy DIR} samples the server during each phase (py-spy on PATH or
next to this python) into collapsed-stack files.
"""

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if TOP not in sys.path:
    sys.path.insert(0, TOP)

PORT = 8150
WEB_PORT = 8151
HOST = "127.0.0.1"
PATH = "/mnigs/v2"


def progress(message, *args):
    print(f"[{time.strftime('%H:%M:%S')}] " + (message % args if args else message),
          file=sys.stderr, flush=True)


# -- the server seen from /proc (shared by every network namespace) ----------

def cpuSeconds(pid):
    """
    User + system CPU of C{pid} and of its reaped children (nft runs).
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / ticks


def rssMB(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def childPids(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def serverCPU(pid):
    """
    CPU seconds of twistd, its reaped children and its live ones
    (wireguard-go).
    """
    total = cpuSeconds(pid)
    for child in childPids(pid):
        try:
            total += cpuSeconds(child)
        except OSError:
            pass
    return total



# -- load generator (runs inside the namespace) ------------------------------

class Connection:
    """
    One keep-alive HTTP/1.1 connection making JSON-RPC calls one at a time.
    """

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer
        self.nextId = 0

    @classmethod
    async def open(cls, host, port):
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def call(self, method, params=None):
        self.nextId += 1
        message = {"jsonrpc": "2.0", "method": method, "id": self.nextId}
        if params is not None:
            message["params"] = params
        body = json.dumps(message, separators=(",", ":")).encode()
        return await self.send(body)

    async def send(self, body):
        self.writer.write(b"POST %s HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (PATH.encode(), len(body), body))
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        if length is None:
            raise RuntimeError(f"answer without Content-Length: {head[:200]!r}")
        answer = json.loads(await self.reader.readexactly(length))
        if "error" in answer:
            raise CallFailed(answer["error"])
        return answer["result"]

    def close(self):
        self.writer.close()


class CallFailed(Exception):
    pass


def percentile(values, fraction):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def scrapeMetrics(interval, until):
    """
    GET C{/metrics} every C{interval} seconds until C{until}
    (C{time.perf_counter}); how many scrapes were answered with 200.
    """
    scrapes = 0
    while time.perf_counter() < until:
        reader, writer = await asyncio.open_connection(HOST, WEB_PORT)
        writer.write(b"GET /metrics HTTP/1.0\r\nHost: gw\r\n\r\n")
        answer = await reader.read()
        writer.close()
        if answer.split(b"\r\n", 1)[0].split()[1:2] != [b"200"]:
            raise RuntimeError(f"/metrics answered {answer[:200]!r}")
        scrapes += 1
        await asyncio.sleep(interval)
    return scrapes


async def timedWorkers(count, warmup, duration, step, serverPid=None, scrapeInterval=0.0):
    """
    Run C{count} workers, each calling C{step(worker, connection)} in a loop
    for C{warmup + duration} seconds; count what completes in the last
    C{duration} seconds, and the CPU time the server (C{serverPid}, read
    from /proc, which the namespace shares) spent in them.  With
    C{scrapeInterval}, scrape the server's C{/metrics} meanwhile.
    """
    connections = [await Connection.open(HOST, PORT) for _ in range(count)]
    started = time.perf_counter()
    measureFrom = started + warmup
    end = measureFrom + duration
    done = 0
    latencies = []
    cpu = []

    async def sampleCPU():
        for when in (measureFrom, end):
            await asyncio.sleep(max(0, when - time.perf_counter()))
            cpu.append(serverCPU(serverPid))

    async def worker(n):
        nonlocal done
        connection = connections[n]
        while True:
            t0 = time.perf_counter()
            if t0 >= end:
                return
            await step(n, connection)
            t1 = time.perf_counter()
            if t1 >= measureFrom and t1 < end:
                done += 1
                latencies.append(t1 - t0)

    samplers = [sampleCPU()] if serverPid else []
    scrapers = [scrapeMetrics(scrapeInterval, end)] if scrapeInterval else []
    outcomes = await asyncio.gather(*scrapers, *(worker(n) for n in range(count)), *samplers)
    for connection in connections:
        connection.close()
    result = {"per_s": done / duration, "calls": done, "duration_s": duration,
              "concurrency": count, "latency_ms_p50": 1000 * percentile(latencies, 0.5),
              "latency_ms_p99": 1000 * percentile(latencies, 0.99)}
    if scrapers:
        result["scrapes"] = outcomes[0]
    if cpu:
        result["server_cpu_s"] = cpu[1] - cpu[0]
        result["server_cpu_us_per_call"] = 1e6 * result["server_cpu_s"] / max(1, done)
        result["server_cpu_busy"] = result["server_cpu_s"] / duration
    return result


def wireguardKeys(count):
    from mnigs.wireguard.uapi import generatePrivateKey, publicKey
    return [publicKey(generatePrivateKey()) for _ in range(count)]


def clientKeys(count):
    from nacl.signing import SigningKey
    return [SigningKey.generate() for _ in range(count)]


class Registrations:
    """
    Signed gateway.register params (protocol version 2): each with its own
    client key, over the gateway id and a nonce at most a minute old.
    """

    def __init__(self):
        self.offer = None
        self.fetchedAt = 0.0

    async def params(self, connection, key, method, methodParams):
        from mnigs.protocol import keyId, signRegistration

        if self.offer is None or time.monotonic() - self.fetchedAt > 60:
            self.offer = await connection.call("gateway.info")
            self.fetchedAt = time.monotonic()
        return signRegistration({"client": {"id": keyId(key.verify_key)},
                                 "gateway": self.offer["gateway"]["id"],
                                 "nonce": self.offer["nonce"], "method": method,
                                 "params": methodParams}, key)


async def benchInfo(args):
    body = json.dumps({"jsonrpc": "2.0", "method": "gateway.info", "id": 1}).encode()

    async def step(n, connection):
        result = await connection.send(body)
        if not result["available"]:
            raise RuntimeError("the gateway says it is unavailable")

    return await timedWorkers(args.concurrency, args.warmup, args.duration, step,
                              args.server_pid, args.scrape_interval)


async def benchPairs(args):
    # Enough keys for a generous upper bound of pairs, made before timing.
    keys = wireguardKeys(args.keys)
    clients = clientKeys(args.keys)
    registrations = Registrations()

    async def step(n, connection):
        params = await registrations.params(connection, clients.pop(), "wireguard",
                                            {"public_key": keys.pop()})
        lease = (await connection.call("gateway.register", params))["lease"]
        released = await connection.call("gateway.unregister",
                                         {"lease": lease["id"], "token": lease["token"]})
        if released != {"released": True}:
            raise RuntimeError(f"unregister answered {released}")

    return await timedWorkers(args.concurrency, args.warmup, args.duration, step,
                              args.server_pid, args.scrape_interval)


async def fillLeases(args):
    keys = wireguardKeys(args.leases)
    clients = clientKeys(args.leases)
    registrations = Registrations()
    todo = list(range(args.leases))
    connections = [await Connection.open(HOST, PORT) for _ in range(args.concurrency)]
    started = time.perf_counter()

    async def worker(connection):
        while todo:
            n = todo.pop()
            await connection.call("gateway.register", await registrations.params(
                connection, clients[n], "wireguard", {"public_key": keys[n]}))

    await asyncio.gather(*(worker(c) for c in connections))
    elapsed = time.perf_counter() - started
    info = await connections[0].call("gateway.info")
    for connection in connections:
        connection.close()
    return {"leases": args.leases, "duration_s": elapsed, "per_s": args.leases / elapsed,
            "clients_in_offer": info["terms"]["clients"]}


def loadgen(argv):
    parser = argparse.ArgumentParser(prog="server_rpc.py loadgen")
    parser.add_argument("phase", choices=["info", "pairs", "fill"])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--keys", type=int, default=20000)
    parser.add_argument("--leases", type=int, default=10000)
    parser.add_argument("--server-pid", type=int, default=None)
    parser.add_argument("--scrape-interval", type=float, default=0.0)
    args = parser.parse_args(argv)
    phase = {"info": benchInfo, "pairs": benchPairs, "fill": fillLeases}[args.phase]
    print(json.dumps(asyncio.run(phase(args))), flush=True)


# -- orchestration (root namespace) -------------------------------------------

class Bench:
    def __init__(self, args):
        self.args = args
        self.cpus = sorted(os.sched_getaffinity(0))
        self.pinned = len(self.cpus) >= 2
        self.serverCpu = str(self.cpus[0])
        self.loadCpu = str(self.cpus[1]) if self.pinned else None

    def run(self):
        from tests.mesh.gatewayproc import GatewayProcess, daemonEnvironment, twistdArgv
        from tests.mesh.harness import Mesh, missingForNamespaces

        missing = missingForNamespaces("wireguard-go", "nft", "taskset")
        if missing:
            raise SystemExit(f"cannot run the benchmark: {missing}")
        bench = self
        overrides = {
            "server": {"sweep_interval": 5.0},
            # One load generator holds every lease: the per-address shares
            # (issue 12) are lifted, as the rate limit is.
            "rpc": {"rate_limit": 0.0, "max_connections": 4096, "idle_timeout": 120.0,
                    "max_connections_per_address": 4096},
            "terms": {"max_clients": 20000, "lease_seconds": 3600, "max_leases_per_address": 0},
            # No client ever shakes hands here: a fill slower than the
            # handshake timeout (60 s: a busy machine) would see its first
            # leases swept as unconfirmed.
            "methods": {"wireguard": {"pool": "100.64.0.0/16", "handshake_timeout": 0}},
        }
        if self.args.web:
            overrides["web"] = {"enabled": True, "listen": [HOST], "port": WEB_PORT}

        class PinnedGateway(GatewayProcess):
            def start(self, wait=True, timeout=30):
                argv = twistdArgv("mnigs-server", self.configPath, self.logPath,
                                  os.path.join(self.dir, "twistd.pid"))
                if bench.pinned:
                    argv = ["taskset", "-c", bench.serverCpu] + argv
                self.process = self.node.spawn(argv, log=os.path.join(self.dir, "stdout.log"),
                                               env=daemonEnvironment())
                if wait:
                    self.waitServing(timeout)
                return self

        results = {"web": self.args.web, "cpus": len(self.cpus), "pinned": self.pinned,
                   "server_cpu": self.serverCpu if self.pinned else None,
                   "loadgen_cpu": self.loadCpu}
        with Mesh(None) as mesh:
            gw = mesh.node("gw")
            mesh.internet(gw)
            self.gw = gw
            self.env = daemonEnvironment()
            progress("starting mnigs-server in %s (%s)", gw.ns,
                     f"CPU {self.serverCpu}" if self.pinned else "not pinned")
            server = PinnedGateway(gw, overrides, name="bench")
            server.start()
            try:
                self.pid = server.process.pid
                results["rss_mb_start"] = rssMB(self.pid)
                results.update(self.measure(server))
            finally:
                server.stop()
        return results

    def loadgen(self, phase, *options):
        argv = [sys.executable, os.path.abspath(__file__), "loadgen", phase,
                "--server-pid", str(self.pid), *map(str, options)]
        if self.args.web and phase != "fill":
            argv += ["--scrape-interval", str(self.args.scrape_interval)]
        if self.pinned:
            argv = ["taskset", "-c", self.loadCpu] + argv
        profiler = self.profile(phase)
        result = self.gw.run(["env", f"PYTHONPATH={self.env['PYTHONPATH']}"] + argv,
                             timeout=3600)
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            profiler.wait(60)
        if result.stderr.strip():
            progress("loadgen %s said: %s", phase, result.stderr.strip()[-2000:])
        return json.loads(result.stdout.strip().splitlines()[-1])

    def profile(self, phase):
        """
        With --py-spy DIR: sample the server during the phase into
        DIR/PHASE-N.txt (collapsed stacks, for flamegraph.pl or speedscope).
        """
        if not self.args.py_spy:
            return None
        os.makedirs(self.args.py_spy, exist_ok=True)
        self.profiles = getattr(self, "profiles", 0) + 1
        path = os.path.join(self.args.py_spy, f"{self.profiles}-{phase}.txt")
        progress("  sampling the server with py-spy into %s", path)
        pySpy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
        return subprocess.Popen([pySpy, "record", "--pid", str(self.pid), "--rate", "200",
                                 "--format", "raw", "--output", path, "--nonblocking"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def measure(self, server):
        a = self.args
        out = {}
        progress("phase 1: gateway.info, %d connections, %.0f s", a.info_connections, a.duration)
        info = self.loadgen("info", "--concurrency", a.info_connections, "--duration", a.duration,
                            "--warmup", a.warmup)
        progress("  %.0f calls/s (p50 %.2f ms, p99 %.2f ms)", info["per_s"],
                 info["latency_ms_p50"], info["latency_ms_p99"])
        out["info_per_s"] = round(info["per_s"], 1)
        out["info_latency_ms_p50"] = round(info["latency_ms_p50"], 3)
        out["info_latency_ms_p99"] = round(info["latency_ms_p99"], 3)
        out["info_server_cpu_us_per_call"] = round(info["server_cpu_us_per_call"], 1)
        out["info_server_cpu_busy"] = round(info["server_cpu_busy"], 2)
        if "scrapes" in info:
            out["info_scrapes"] = info["scrapes"]
        out["rss_mb_after_info"] = rssMB(self.pid)

        progress("phase 2: register+unregister (wireguard), %d workers, %.0f s",
                 a.pair_workers, a.duration)
        pairs = self.loadgen("pairs", "--concurrency", a.pair_workers, "--duration", a.duration,
                             "--warmup", a.warmup, "--keys", a.keys)
        progress("  %.0f pairs/s (p50 %.2f ms, p99 %.2f ms per pair)", pairs["per_s"],
                 pairs["latency_ms_p50"], pairs["latency_ms_p99"])
        out["register_unregister_per_s"] = round(pairs["per_s"], 1)
        out["pair_latency_ms_p50"] = round(pairs["latency_ms_p50"], 3)
        out["pair_latency_ms_p99"] = round(pairs["latency_ms_p99"], 3)
        out["pair_server_cpu_us"] = round(pairs["server_cpu_us_per_call"], 1)
        out["pair_server_cpu_busy"] = round(pairs["server_cpu_busy"], 2)
        if "scrapes" in pairs:
            out["pair_scrapes"] = pairs["scrapes"]

        progress("phase 3: filling %d wireguard leases with %d workers", a.leases, a.fill_workers)
        fill = self.loadgen("fill", "--concurrency", a.fill_workers, "--leases", a.leases)
        progress("  %d leases in %.1f s (%.0f registrations/s); the offer says %d clients",
                 fill["leases"], fill["duration_s"], fill["per_s"], fill["clients_in_offer"])
        if fill["clients_in_offer"] < a.leases:
            raise SystemExit(f"only {fill['clients_in_offer']} leases are live")
        out["fill_register_per_s"] = round(fill["per_s"], 1)
        out["fill_duration_s"] = round(fill["duration_s"], 2)
        out["rss_mb_10k_leases"] = round(rssMB(self.pid), 1)
        stateDir = server.config["server"]["state_dir"]
        out["lease_snapshot_bytes_10k"] = _sizeOf(os.path.join(stateDir, "leases.json"))
        out["lease_journal_bytes_10k"] = _sizeOf(os.path.join(stateDir, "leases.journal"))
        progress("  RSS with %d leases: %.1f MB; lease snapshot %s bytes, journal %s bytes",
                 a.leases, out["rss_mb_10k_leases"], out["lease_snapshot_bytes_10k"],
                 out["lease_journal_bytes_10k"])

        progress("phase 4: register+unregister again with %d leases live, %.0f s",
                 a.leases, a.duration)
        pairs = self.loadgen("pairs", "--concurrency", a.pair_workers, "--duration", a.duration,
                             "--warmup", a.warmup, "--keys", a.keys)
        progress("  %.0f pairs/s (p50 %.2f ms, p99 %.2f ms per pair)", pairs["per_s"],
                 pairs["latency_ms_p50"], pairs["latency_ms_p99"])
        out["register_unregister_per_s_10k_leases"] = round(pairs["per_s"], 1)
        out["pair_latency_ms_p50_10k_leases"] = round(pairs["latency_ms_p50"], 3)
        out["pair_latency_ms_p99_10k_leases"] = round(pairs["latency_ms_p99"], 3)
        out["pair_server_cpu_us_10k_leases"] = round(pairs["server_cpu_us_per_call"], 1)
        out["pair_server_cpu_busy_10k_leases"] = round(pairs["server_cpu_busy"], 2)
        out["rss_mb_end"] = round(rssMB(self.pid), 1)
        return out


def _sizeOf(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return None


def main(argv):
    if argv[:1] == ["loadgen"]:
        return loadgen(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0,
                        help="seconds measured per throughput phase (after the warm-up)")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--info-connections", type=int, default=16)
    parser.add_argument("--pair-workers", type=int, default=8)
    parser.add_argument("--fill-workers", type=int, default=16)
    parser.add_argument("--leases", type=int, default=10000)
    parser.add_argument("--py-spy", metavar="DIR", default=None,
                        help="sample the server with py-spy (on PATH or next to python) during each phase")
    parser.add_argument("--keys", type=int, default=None,
                        help="keys made ahead for the pairs phases (default: 2000 per second)")
    parser.add_argument("--web", action="store_true",
                        help="run the server with [web] enabled (its metrics counted) and "
                             "scrape /metrics during the timed phases")
    parser.add_argument("--scrape-interval", type=float, default=1.0,
                        help="with --web: seconds between scrapes")
    args = parser.parse_args(argv)
    if args.keys is None:
        args.keys = int(2000 * (args.duration + args.warmup)) + 1000
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark builds a network namespace")
    started = time.perf_counter()
    results = Bench(args).run()
    results["total_s"] = round(time.perf_counter() - started, 1)
    results["targets_met"] = {
        "info_per_s": results["info_per_s"] >= 1500,
        "register_unregister_per_s": results["register_unregister_per_s"] >= 300,
        "rss_mb_10k_leases": results["rss_mb_10k_leases"] <= 150,
    }
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
