"""
C{mnigs-rpc HOST METHOD [PARAMS-JSON]}: call a gateway's JSON-RPC method
and print the answer as JSON.  For operators poking at a gateway, and for
the namespace tests, which run it inside a mesh node.

Exit status: 0 with the result on stdout; 1 with
C{{"error": {"code": .., "message": ..}}} on stdout for a JSON-RPC error;
2 for a timeout or transport failure (message on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys

from mnigs.protocol import DEFAULT_PORT, RPCError


def parseArgs(argv):
    parser = argparse.ArgumentParser(prog="mnigs-rpc", description=__doc__.split("\n\n")[0])
    parser.add_argument("host", help="gateway address (IPv4 or IPv6 literal)")
    parser.add_argument("method", help="e.g. gateway.info")
    parser.add_argument("params", nargs="?", default="{}", help="params as a JSON object")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    try:
        args.params = json.loads(args.params)
    except ValueError as e:
        parser.error(f"params are not JSON: {e}")
    if not isinstance(args.params, dict):
        parser.error("params must be a JSON object")
    return args


def main(argv=None):
    args = parseArgs(sys.argv[1:] if argv is None else argv)
    from twisted.internet import defer, task

    from mnigs.rpc.client import RPCClient

    async def run(reactor):
        client = RPCClient(reactor, timeout=args.timeout, persistent=False)
        try:
            result = await client.call(args.host, args.port, args.method, args.params)
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
