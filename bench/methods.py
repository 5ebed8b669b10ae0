"""
Connection-method benchmark: per method, the time from the client's
C{gateway.register} call to the first packet through the new tunnel
(median of 5 runs, each with a fresh lease).

Topology: one mesh link, client -- gw, and the internet namespace behind
the gateway (198.51.100.1, reachable only through the gateway's NAT for
lease holders).  gw runs a real twistd mnigs-server offering wireguard
(wireguard-go) and openvpn (an openvpn 2.6 server).  In the client
namespace, bench/_methodprobe.py runs the mnigs client's own code for each
step: RPCClient register, the method's connect() (tunnel up, default route
in mnigs's table), then an ICMP echo to 198.51.100.1 every 20 ms until
one is answered.

SoftEther (a vpnserver on the gateway, a vpnclient per connection on the
client, each in its own mount namespace) is measured when Debian's
softether packages are installed; otherwise its figure is null.

OpenVPN's figure is bimodal, about 0.02-0.05 s or about 1.05 s: mnigs
admits each client through the management interface (client-auth), and
openvpn 2.6 does not wake the client's instance when such an answer
succeeds (multi.c, management_client_auth, schedules a wakeup only on a
failure).  If the answer arrives before openvpn has finished the TLS
handshake, the PUSH_REPLY goes out at once; if it arrives just after, it
waits for the client's PUSH_REQUEST retry, one second later.  (Seen in
both daemons' logs: "Peer Connection Initiated" before or after
"MANAGEMENT: CMD 'client-auth ...'".)

Progress on stderr; the last line of stdout is one JSON object:
{"wireguard_s": .., "openvpn_s": .., "softether_s": .., ...runs...}

From the root of a checkout (as root where it needs namespaces):

    PYTHONPATH=. .venv/bin/python bench/methods.py [--runs 5]
"""

import argparse
import importlib.util
import json
import os
import secrets
import statistics
import sys

from bench._common import keepLogs, progress, unwindOnSignals
from tests.mesh.gatewayproc import GatewayProcess, daemonEnvironment
from tests.mesh.harness import Mesh, missingForNamespaces

HERE = os.path.dirname(os.path.abspath(__file__))
PROBE = os.path.join(HERE, "_methodprobe.py")
METHODS = ("wireguard", "openvpn", "softether")
# A method is measured when its client side exists in mnigs.methods.
CLIENT_CLASSES = {"wireguard": ("mnigs.methods.wireguard", "WireGuardClient"),
                  "openvpn": ("mnigs.methods.openvpn", "OpenVPNClient"),
                  "softether": ("mnigs.methods.softether", "SoftEtherClient")}
# What bench/_methodprobe.py knows how to drive (its makeMethod): a method
# is measured when it is here and its client class exists.
PROBED = ("wireguard", "openvpn", "softether")


def available(method):
    module, name = CLIENT_CLASSES[method]
    if importlib.util.find_spec(module) is None:
        return False
    return hasattr(importlib.import_module(module), name)


def softetherInstalled():
    from mnigs.softether import VPNCLIENT, VPNCMD, VPNSERVER

    return all(os.access(path, os.X_OK) for path in (VPNSERVER, VPNCLIENT, VPNCMD))


def measure(runs, keep):
    methods = [m for m in METHODS if m in PROBED and available(m)
               and (m != "softether" or softetherInstalled())]
    with Mesh(None, hello=0) as mesh:
        client, gw = mesh.node("client"), mesh.node("gw")
        _, gwSide = mesh.link(client, gw)
        mesh.internet(gw)
        gwAddress = gw.interfaceAddresses[gwSide].split("/")[0]
        offered = {"openvpn": {"interface": "mo" + secrets.token_hex(4),
                               "pool": "100.65.0.0/24"}}
        if "softether" in methods:
            offered["softether"] = {"bridge": "mb" + secrets.token_hex(4),
                                    "pool": "100.66.0.0/24"}
        gateway = GatewayProcess(gw, {"methods": offered, "terms": {"lease_seconds": 600}})
        try:
            progress(f"starting mnigs-server (wireguard, {', '.join(offered)})")
            gateway.start(timeout=40)
            pairs = [f"{m}={'mb' + secrets.token_hex(4)}" for m in methods]
            stateDir = os.path.join(client.tmp, "state")
            os.makedirs(stateDir)
            progress(f"measuring {', '.join(methods)}, {runs} runs each")
            result = client.run(["env", f"PYTHONPATH={daemonEnvironment()['PYTHONPATH']}",
                                 sys.executable, PROBE, gwAddress, stateDir, str(runs), *pairs],
                                check=False, timeout=600)
            if result.returncode != 0:
                raise RuntimeError(f"probe failed ({result.returncode}):\n{result.stderr[-4000:]}"
                                   f"\n--- server log ---\n{gateway.logTail()}")
            return json.loads(result.stdout.strip().splitlines()[-1])
        finally:
            gateway.stop()
            if keep:
                keepLogs(mesh.tmp, keep)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep-logs", metavar="DIR")
    args = parser.parse_args()
    missing = missingForNamespaces("openvpn", "wireguard-go", "wg", "nft")
    if missing:
        raise SystemExit(f"cannot run: {missing}")
    unwindOnSignals()
    runs = measure(args.runs, args.keep_logs)
    summary = {}
    for method in METHODS:
        totals = [r["total_s"] for r in runs.get(method, [])]
        summary[f"{method}_s"] = round(statistics.median(totals), 3) if totals else None
        if totals:
            progress(f"{method}: median {summary[f'{method}_s']:.3f} s over {len(totals)} runs "
                     f"({', '.join(f'{t:.3f}' for t in totals)})")
    for method, items in runs.items():
        summary[f"{method}_runs"] = [{k: round(v, 3) for k, v in item.items()} for item in items]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
