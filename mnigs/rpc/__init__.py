"""
JSON-RPC 2.0 over HTTP on txjsonrpc-ng: L{mnigs.rpc.server} (the
gateway's resource and site) and L{mnigs.rpc.client} (calls with timeouts
and bounded answers).  Two modules, so that the client daemon does not
load the server half; this package imports neither.
"""
