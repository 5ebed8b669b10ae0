"""
Runs inside the benchmark's client namespace for bench/methods.py: for
each method asked, N times, the mnigs client's own steps, timed:

    gateway.info, gateway.register signed with a fresh client key (RPCClient),
    the lease checked against the offer -> method.connect(step, lease)
    (mnigs.methods.*: tunnel up, default route in mnigs's table)
    -> ICMP echo to the internet host every 20 ms until the first reply

then disconnect and gateway.unregister, so every run gets a fresh grant.

    python bench/_methodprobe.py GATEWAY STATE_DIR RUNS METHOD=IFNAME ...

Prints one JSON line: {"METHOD": [{"total_s", "register_s", "connect_s"}, ...]}
(register_s and connect_s are when those steps finished, from the start).
"""

import json
import sys
import time

INTERNET = "198.51.100.1"
PROBE_INTERVAL = 0.02
FIRST_PACKET_TIMEOUT = 30.0


def makeMethod(reactor, name, ifname, routing, stateDir):
    if name == "wireguard":
        from mnigs.methods.wireguard import WireGuardClient
        from mnigs.wireguard.uapi import generatePrivateKey

        return WireGuardClient(reactor, ifname, generatePrivateKey(), routing, keepalive=5,
                               handshakeTimeout=10.0)
    if name == "openvpn":
        from mnigs.methods.openvpn import OpenVPNClient

        return OpenVPNClient(reactor, ifname, routing, stateDir, connectTimeout=10.0)
    if name == "softether":
        from mnigs.methods.softether import SoftEtherClient
        from mnigs.system.netlink import Netlink

        return SoftEtherClient(reactor, ifname, routing, Netlink(), stateDir,
                               connectTimeout=10.0)
    raise SystemExit(f"no client method {name!r} here")


def main(reactor, gateway, stateDir, runs, methods):
    from twisted.internet import defer
    from twisted.internet.task import deferLater

    from nacl.signing import SigningKey

    from mnigs.client.effects import checkLease
    from mnigs.client.routes import PolicyRouting
    from mnigs.protocol import keyId, signRegistration, verifyOffer
    from mnigs.system.icmp import Pinger
    from mnigs.rpc.client import RPCClient

    rpc = RPCClient(reactor, timeout=5.0)
    pinger = Pinger(reactor)
    routing = PolicyRouting(8150, 8150)
    routing.clear()
    results = {}

    @defer.inlineCallbacks
    def firstReply(deadline):
        while time.monotonic() < deadline:
            rtt = yield pinger.ping(INTERNET, PROBE_INTERVAL)
            if rtt is not None:
                return
        raise RuntimeError("no packet through the tunnel")

    @defer.inlineCallbacks
    def once(name, method):
        started = time.monotonic()
        offer = verifyOffer((yield rpc.call(gateway, 8150, "gateway.info", {})))
        entry = offer.method(name)
        key = SigningKey.generate()
        clientId = keyId(key.verify_key)
        answer = yield rpc.call(gateway, 8150, "gateway.register", signRegistration(
            {"client": {"id": clientId, "name": f"bench-{name}"}, "gateway": offer.gatewayId,
             "nonce": offer.nonce, "method": name, "params": method.registerParams(entry)}, key))
        registered = time.monotonic()
        lease = checkLease(answer, reactor.seconds(), offer, clientId, name,
                           lambda config: method.checkAgainstOffer(entry, config))
        connection = yield method.connect(None, lease)
        connected = time.monotonic()
        try:
            yield firstReply(started + FIRST_PACKET_TIMEOUT)
            through = time.monotonic()
        finally:
            yield connection.disconnect()
            yield rpc.call(gateway, 8150, "gateway.unregister",
                           {"lease": lease["id"], "token": lease["token"]})
        return {"total_s": through - started, "register_s": registered - started,
                "connect_s": connected - started}

    @defer.inlineCallbacks
    def run():
        try:
            for name, ifname in methods:
                method = makeMethod(reactor, name, ifname, routing, stateDir)
                results[name] = []
                for _ in range(runs):
                    results[name].append((yield once(name, method)))
                    yield deferLater(reactor, 0.5)
        finally:
            routing.clear()
            pinger.close()
            yield rpc.close()
        print(json.dumps(results), flush=True)

    return run()


if __name__ == "__main__":
    from twisted.internet.task import react

    gateway, stateDir, runs, *pairs = sys.argv[1:]
    methods = [tuple(pair.split("=", 1)) for pair in pairs]
    react(main, (gateway, stateDir, int(runs), methods))
