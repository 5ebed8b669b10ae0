"""
The attacker of bench/attack.py, run inside its namespace, for SECONDS:

  - C{idle N}: hold N connections open, sending nothing; every one the
    server closes is opened again (10 times a second at most each).
  - C{loris N}: N connections each trickling a valid C{gateway.info}
    request one byte a second, opened again when closed.
  - C{flood K}: K concurrent workers registering (WireGuard, a new client
    key and WireGuard key each time) as fast as answers come.

Prints one JSON object: what it achieved (connections the server closed,
requests answered, registrations granted, error codes).

    python bench/_attacker.py HOST PORT SECONDS MODE N
"""

import asyncio
import collections
import json
import resource
import sys
import time

from bench._rpcwire import acall, newClientKey, randomWireGuardKey, registerParams, request


class Tally:
    def __init__(self):
        self.counts = collections.Counter()
        self.open = 0
        self.maxOpen = 0

    def opened(self):
        self.open += 1
        self.maxOpen = max(self.maxOpen, self.open)
        self.counts["opened"] += 1

    def closed(self):
        self.open -= 1


async def hold(host, port, until, tally, trickle):
    body = request("gateway.info")
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            tally.counts["connect_failed"] += 1
            await asyncio.sleep(0.1)
            continue
        tally.opened()
        sent = 0
        try:
            while time.monotonic() < until:
                if trickle and sent < len(body):
                    writer.write(body[sent:sent + 1])
                    sent += 1
                try:
                    data = await asyncio.wait_for(reader.read(65536), 1.0)
                except asyncio.TimeoutError:
                    continue
                if not data:
                    tally.counts["closed_by_server"] += 1
                    break
                tally.counts["answered"] += 1  # a loris request got through whole
                break
        except OSError:
            tally.counts["reset_by_server"] += 1
        finally:
            tally.closed()
            writer.close()
        await asyncio.sleep(0.1)


async def flood(host, port, until, tally):
    offer = None
    while time.monotonic() < until:
        if offer is None:
            ok, offer = await acall(host, port, "gateway.info")
            if not ok:
                offer = None
                await asyncio.sleep(0.01)
                continue
        ok, detail = await acall(host, port, "gateway.register",
                                 registerParams(newClientKey(), offer, "wireguard",
                                                {"public_key": randomWireGuardKey()}))
        tally.counts["granted" if ok else f"error {detail}"] += 1


async def run(host, port, seconds, mode, n):
    tally = Tally()
    until = time.monotonic() + seconds
    if mode == "flood":
        workers = [flood(host, port, until, tally) for _ in range(n)]
    else:
        workers = [hold(host, port, until, tally, mode == "loris") for _ in range(n)]
    await asyncio.gather(*workers)
    return dict(tally.counts, max_open=tally.maxOpen)


def main(host, port, seconds, mode, n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    result = asyncio.run(run(host, int(port), float(seconds), mode, int(n)))
    print(json.dumps(dict(result, mode=mode, n=int(n))))


if __name__ == "__main__":
    main(*sys.argv[1:])
