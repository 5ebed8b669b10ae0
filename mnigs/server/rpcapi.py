"""
The C{gateway.*} JSON-RPC methods: check params, apply the rate limit, and
hand clean inputs to the gateway machine.  No policy lives here.
"""

from __future__ import annotations

from txjsonrpc_ng.jsonrpc import BaseSubhandler

from mnigs.protocol import invalidParams, parseLeaseCredentials, parseRegister
from mnigs.rpc.server import JSONRPCResource


class GatewayCalls(BaseSubhandler):
    def __init__(self, gateway, rateLimiter):
        super().__init__()
        self.gateway = gateway
        self.rateLimiter = rateLimiter

    def jsonrpc_info(self, call):
        if call.params:
            raise invalidParams("gateway.info takes no params")
        return self.gateway.info(call.localHost)

    def jsonrpc_register(self, call):
        request = parseRegister(call.params)
        self.rateLimiter.check(call.clientHost)
        return self.gateway.register(request, call.clientHost, call.localHost)

    def jsonrpc_renew(self, call):
        leaseId, token = parseLeaseCredentials(call.params)
        self.rateLimiter.check(call.clientHost)
        return self.gateway.renew(leaseId, token)

    def jsonrpc_unregister(self, call):
        leaseId, token = parseLeaseCredentials(call.params)
        self.rateLimiter.check(call.clientHost)
        return self.gateway.unregister(leaseId, token)


def makeResource(gateway, rateLimiter) -> JSONRPCResource:
    resource = JSONRPCResource()
    resource.putSubHandler("gateway", GatewayCalls(gateway, rateLimiter))
    return resource
