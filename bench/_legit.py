"""
The legitimate client of bench/attack.py, run inside its namespace:
C{gateway.info} and C{gateway.register} (forward, its one client key, so
the same lease again) alternately, each on a fresh connection, RATE calls
a second for SECONDS.  Prints one JSON object: every call's kind, outcome
and latency.

    python bench/_legit.py HOST PORT SECONDS RATE KEY_SEED_HEX
"""

import json
import sys
import time

from nacl.signing import SigningKey

from bench._rpcwire import call, registerParams


def main(host, port, seconds, rate, seed):
    key = SigningKey(bytes.fromhex(seed))
    port, seconds, rate = int(port), float(seconds), float(rate)
    calls = []
    offer = None
    started = time.monotonic()
    n = 0
    while time.monotonic() < started + seconds:
        due = started + n / rate
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        if n % 2 == 0 or offer is None:
            ok, took, detail = call(host, port, "gateway.info")
            kind = "info"
            if ok:
                offer = detail
        else:
            ok, took, detail = call(host, port, "gateway.register",
                                    registerParams(key, offer, "forward", {}))
            kind = "register"
        calls.append({"kind": kind, "ok": ok, "s": round(took, 4),
                      **({} if ok else {"why": detail})})
        n += 1
    print(json.dumps({"calls": calls}))


if __name__ == "__main__":
    main(*sys.argv[1:])
