"""
The walking process of bench/walk.py: the REAL cjdns route source
(mnigs.routing.cjdns.CjdnsRouteSource, its walk and the real admin client
mnigs.cjdns.admin.CjdnsAdmin over a real UDP socket) against the fake
endpoint of bench/_walkserver.py, then the REAL discovery scan
(mnigs.client.discovery.Discovery) over the candidates it found, with a
STUB JSON-RPC client in place of mnigs.rpc.client.RPCClient: it answers
gateway.info for the gateways' addresses with offers signed by their own
keys (which Discovery verifies as it would a real one), and refuses every
other address at once, as a node without a gateway (a closed port) does.

    python bench/_walker.py SERVER [--concurrency 200] [--budget 60]
        [--max-nodes N]

SERVER: the JSON line _walkserver.py printed.  Prints one JSON line:
nodes found, walk seconds (and this process's CPU seconds in them),
scan seconds, the gateways found in order,
peak queries in flight (the admin client's exchanges awaiting an answer,
sampled at each send) and the process's peak resident memory (VmHWM) at
the end of the walk, and after the scan.
"""

import argparse
import ipaddress
import json
import resource
import sys
import time


def vmHWM() -> float:
    """Peak resident memory of this process, MB (/proc/self/status VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def cpuSeconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("server")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--budget", type=float, default=120.0)
    parser.add_argument("--max-nodes", type=int, default=None)
    options = parser.parse_args()
    server = json.loads(options.server)

    from nacl.signing import SigningKey
    from twisted.internet import defer, reactor
    from twisted.internet.error import ConnectionRefusedError
    from twisted.python.failure import Failure

    from mnigs.cjdns.admin import CjdnsAdmin
    from mnigs.client.discovery import Discovery
    from mnigs.routing.cjdns import CjdnsRouteSource
    from tests.unit.test_protocol import makeOffer

    class CountingAdmin(CjdnsAdmin):
        """The real admin client, counting the exchanges awaiting an answer."""

        peak = 0

        def _send(self, function, build):
            d = super()._send(function, build)
            self.peak = max(self.peak, len(self._pending))
            return d

    gateways = {ipaddress.ip_address(address): hops for address, hops in server["gateways"]}
    offers = {str(address): makeOffer(SigningKey.generate(), gateway__name=f"gw-{n}")[0]
              for n, address in enumerate(gateways)}

    class StubRPC:
        """Answers gateway.info for the gateways only (see the module docstring)."""

        def call(self, host, port, method, params, timeout=None):
            offer = offers.get(host)
            if offer is None:
                return defer.fail(ConnectionRefusedError(host))
            return defer.succeed(offer)

    admin = CountingAdmin(reactor, port=server["port"], password=server["password"], timeout=5)
    extra = {} if options.max_nodes is None else {"maxNodes": options.max_nodes}
    source = CjdnsRouteSource(reactor, admin, budget=options.budget,
                              concurrency=options.concurrency, **extra)
    result = {}

    @defer.inlineCallbacks
    def run():
        started, cpuStarted = time.monotonic(), cpuSeconds()
        candidates = yield source.candidates()
        walked, cpuWalked, rssWalked = time.monotonic(), cpuSeconds(), vmHWM()
        discovery = Discovery(reactor, StubRPC(), maxCandidates=len(candidates) + 1)
        seen = yield discovery.scan(candidates)
        scanned = time.monotonic()
        byAddress = {c.address: c.distance for c in candidates}
        result.update({
            "nodes_found": len(candidates),
            "walk_s": round(walked - started, 2),
            "walk_cpu_s": round(cpuWalked - cpuStarted, 2),
            "scan_s": round(scanned - walked, 2),
            "found_s": round(scanned - started, 2),
            "gateways_found": [[s.host, s.distance] for s in seen],
            "gateways_at_true_hops": all(byAddress.get(a) == float(h) for a, h in gateways.items()),
            "peak_inflight": admin.peak,
            "rss_mb": round(rssWalked, 1),
            "rss_with_scan_mb": round(vmHWM(), 1),
        })

    def done(outcome):
        if isinstance(outcome, Failure):
            result["error"] = repr(outcome.value)
        reactor.stop()

    reactor.callWhenRunning(lambda: run().addBoth(done))
    reactor.run()
    admin.close()
    print(json.dumps(result), flush=True)
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main())
