"""
One Yggdrasil discovery, run inside the benchmark's client namespace by
bench/_yggdrasilcase.py: a walk of the overlay by
L{mnigs.routing.yggdrasil.YggdrasilRouteSource} (the client's default
[sources.yggdrasil] settings, the given admin socket), then
L{mnigs.client.discovery.Discovery} (the client's default discovery
settings, a real RPCClient) over what the walk found, as the mnigs client
does it.

    python bench/_yggdrasilprobe.py unix:///PATH/ygg.sock

Prints one JSON line: the walk's duration, nodes found and calls made,
and seconds from the start of the walk to the first verified offer.
"""

import json
import os
import sys
import tempfile
import time


def defaultSettings():
    from mnigs.client.config import loadClientConfig

    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        path = f.name
    try:
        config = loadClientConfig(path)
    finally:
        os.unlink(path)
    return config.discovery, config.sources.yggdrasil


def main():
    from twisted.internet import reactor

    from mnigs.client.discovery import Discovery
    from mnigs.rpc.client import RPCClient
    from mnigs.routing.yggdrasil import YggdrasilAdmin, YggdrasilRouteSource

    discoverySettings, yggdrasilSettings = defaultSettings()
    admin = YggdrasilAdmin(reactor, sys.argv[1], timeout=yggdrasilSettings.timeout)
    source = YggdrasilRouteSource(reactor, admin, budget=yggdrasilSettings.budget,
                                  concurrency=yggdrasilSettings.concurrency)
    discovery = Discovery(reactor, RPCClient(reactor, timeout=discoverySettings.timeout,
                                             persistent=False),
                          ports=discoverySettings.ports, concurrency=discoverySettings.concurrency,
                          timeout=discoverySettings.timeout)
    result = {"budget_s": yggdrasilSettings.budget, "concurrency": yggdrasilSettings.concurrency}
    started = time.monotonic()

    def walked(candidates):
        walk = source.lastWalk
        result.update(walk_s=round(time.monotonic() - started, 4), nodes=len(candidates),
                      remote_calls=walk.asked, remote_answered=walk.answered,
                      distances={str(c.address): c.distance for c in candidates})
        return discovery.scan(candidates, onFound=found)

    def found(seen):
        if "first_offer_s" not in result:
            result["first_offer_s"] = round(time.monotonic() - started, 4)
            result["first_offer_host"] = seen.host
            result["first_offer_distance"] = seen.distance

    def scanned(seen):
        result["scan_done_s"] = round(time.monotonic() - started, 4)
        result["offers"] = len(seen)

    def failed(failure):
        result["error"] = failure.getErrorMessage()

    def begin():
        d = source.candidates()
        d.addCallback(walked).addCallbacks(scanned, failed).addBoth(lambda _: reactor.stop())

    reactor.callLater(120, lambda: reactor.running and reactor.stop())
    reactor.callWhenRunning(begin)
    reactor.run()
    result.setdefault("first_offer_s", None)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
