"""
One discovery scan, run inside the benchmark's client namespace by
bench/discovery.py: mnigs.client.discovery.Discovery with the client's
default discovery settings (read from the config schema, as a client with
an empty config file gets them) and a real RPCClient(persistent=False),
over the candidates given, reporting when each offer arrives.

    python bench/_discoveryprobe.py CANDIDATES.json [--direct-endpoints] [--concurrency N]

CANDIDATES.json: {"candidates": [[address, distance], ...], "gateways": [...]}.
--direct-endpoints is a comparison, not mnigs as it is: the RPCClient's
Agent then connects to IP literals with TCP4/6ClientEndpoint instead of
twisted.web's default HostnameEndpoint, which sends every address, even a
literal, through getaddrinfo in the reactor's thread pool and schedules
happy-eyeballs attempts.

--concurrency N replaces the default concurrency (a what-if).

Prints one JSON line: seconds from the start of the scan to each offer, to
the last expected gateway, and to the end of the scan (which waits out the
silent candidates' timeouts).
"""

import ipaddress
import json
import os
import resource
import sys
import tempfile
import time


def defaultDiscoverySettings():
    from mnigs.client.config import loadClientConfig

    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        path = f.name
    try:
        return loadClientConfig(path).discovery
    finally:
        os.unlink(path)


def directEndpoints(rpc, reactor, timeout):
    """
    Give C{rpc} an Agent that connects to IP literals directly (see the
    module docstring).
    """
    from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
    from twisted.web.client import Agent
    from twisted.web.iweb import IAgentEndpointFactory
    from zope.interface import implementer

    @implementer(IAgentEndpointFactory)
    class LiteralEndpoints:
        def endpointForURI(self, uri):
            address = ipaddress.ip_address(uri.host.decode("ascii").strip("[]"))
            kind = TCP6ClientEndpoint if address.version == 6 else TCP4ClientEndpoint
            return kind(reactor, str(address), uri.port, timeout=timeout)

    rpc.agent = Agent.usingEndpointFactory(reactor, LiteralEndpoints(), pool=rpc.pool)


def main():
    from twisted.internet import reactor

    from mnigs.routing.candidates import Candidate
    from mnigs.client.discovery import Discovery
    from mnigs.client.service import raiseFileLimit
    from mnigs.rpc.client import RPCClient

    with open(sys.argv[1]) as f:
        spec = json.load(f)
    expected = set(spec["gateways"])
    candidates = [Candidate(ipaddress.ip_address(address), float(distance), "bench")
                  for address, distance in spec["candidates"]]
    settings = defaultDiscoverySettings()
    raiseFileLimit()
    rpc = RPCClient(reactor, timeout=settings.timeout, persistent=False)
    options = sys.argv[2:]
    direct = "--direct-endpoints" in options
    if direct:
        directEndpoints(rpc, reactor, settings.timeout)
    concurrency = settings.concurrency
    if "--concurrency" in options:
        concurrency = int(options[options.index("--concurrency") + 1])
    discovery = Discovery(
        reactor, rpc,
        ports=settings.ports, concurrency=concurrency, timeout=settings.timeout,
        maxCandidates=settings.max_candidates)
    order = [str(c.address) for c in discovery.order(candidates)]
    result = {
        "timeout_s": settings.timeout, "concurrency": concurrency,
        "default_concurrency": settings.concurrency,
        "ports": list(settings.ports), "candidates": len(candidates),
        "gateway_positions": sorted(order.index(g) for g in expected),
        "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "direct_endpoints": direct,
        "found": {},
    }
    started = time.monotonic()

    def found(seen):
        result["found"][seen.host] = round(time.monotonic() - started, 3)
        if expected <= set(result["found"]) and "all_found_s" not in result:
            result["all_found_s"] = round(time.monotonic() - started, 3)

    def finished(seen):
        result["scan_done_s"] = round(time.monotonic() - started, 3)
        result["offers"] = len(seen)
        result["rejected"] = dict(discovery.rejected)

    def failed(failure):
        result["error"] = failure.getErrorMessage()

    def stop(_):
        reactor.stop()

    def begin():
        nonlocal started
        started = time.monotonic()
        d = discovery.scan(candidates, onFound=found)
        d.addCallbacks(finished, failed).addBoth(stop)

    # Bounded even if something hangs: every call has its own timeout, this
    # is only a last resort.
    reactor.callLater(120, lambda: reactor.running and reactor.stop())
    reactor.callWhenRunning(begin)
    reactor.run()
    result.setdefault("all_found_s", None)
    result["missing"] = sorted(expected - set(result["found"]))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
