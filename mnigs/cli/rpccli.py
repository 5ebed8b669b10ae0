"""
C{mnigs-rpc HOST METHOD [PARAMS-JSON]}: call a gateway's JSON-RPC method
and print the answer as JSON.  For operators poking at a gateway, and for
the namespace tests, which run it inside a mesh node.

C{gateway.register} is signed with C{--key FILE} (an ed25519 key in PKCS#8
PEM, as C{identity.pem}; made, mode 0600, if the file does not exist):
what PARAMS leave out of C{client.id}, C{gateway} and C{nonce} is filled
in (the id from the key, the others from a C{gateway.info} call first),
then C{proof} is set unless PARAMS have one.  Without C{--key} PARAMS go as
they are.

Exit status: 0 with the result on stdout; 1 with
C{{"error": {"code": .., "message": ..}}} on stdout for a JSON-RPC error;
2 for a timeout or transport failure (message on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from mnigs.protocol import DEFAULT_PORT, RPCError, keyId, signRegistration


def parseArgs(argv):
    parser = argparse.ArgumentParser(prog="mnigs-rpc", description=__doc__.split("\n\n")[0])
    parser.add_argument("host", help="gateway address (IPv4 or IPv6 literal)")
    parser.add_argument("method", help="e.g. gateway.info")
    parser.add_argument("params", nargs="?", default="{}", help="params as a JSON object")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--key", metavar="FILE",
                        help="sign gateway.register with this client key (made if missing)")
    args = parser.parse_args(argv)
    try:
        args.params = json.loads(args.params)
    except ValueError as e:
        parser.error(f"params are not JSON: {e}")
    if not isinstance(args.params, dict):
        parser.error("params must be a JSON object")
    return args


def loadOrCreateKeyFile(path: str):
    from nacl.signing import SigningKey

    from mnigs.daemon.identity import decodeKey, encodeKey
    from mnigs.system.statefile import atomicWrite

    try:
        with open(path, "rb") as f:
            return decodeKey(f.read())
    except FileNotFoundError:
        key = SigningKey.generate()
        atomicWrite(os.path.abspath(path), encodeKey(key), mode=0o600)
        return key


def registration(params: dict, key, offer: dict | None) -> dict:
    """
    C{params} completed and signed with C{key}: the client id from the key,
    the gateway id and nonce from C{offer}, unless C{params} have them;
    and the proof, unless C{params} have one.
    """
    params = dict(params)
    client = params.get("client")
    client = dict(client) if isinstance(client, dict) else {}
    client.setdefault("id", keyId(key.verify_key))
    params["client"] = client
    if offer is not None:
        params.setdefault("gateway", (offer.get("gateway") or {}).get("id"))
        params.setdefault("nonce", offer.get("nonce"))
    params.setdefault("params", {})
    if "proof" in params:
        return params
    return signRegistration(params, key)


def main(argv=None):
    args = parseArgs(sys.argv[1:] if argv is None else argv)
    from twisted.internet import defer, task

    from mnigs.rpc.client import RPCClient

    async def run(reactor):
        client = RPCClient(reactor, timeout=args.timeout, persistent=False)
        try:
            params = args.params
            if args.key and args.method == "gateway.register":
                offer = None
                if "gateway" not in params or "nonce" not in params:
                    offer = await client.call(args.host, args.port, "gateway.info", {})
                params = registration(params, loadOrCreateKeyFile(args.key), offer)
            result = await client.call(args.host, args.port, args.method, params)
        except RPCError as e:
            print(json.dumps({"error": {"code": e.code, "message": e.message}}))
            raise SystemExit(1)
        except Exception as e:
            print(f"mnigs-rpc: {e or type(e).__name__}", file=sys.stderr)
            raise SystemExit(2)
        print(json.dumps(result))

    task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor)))


if __name__ == "__main__":
    main()
