"""
The C{gateway.*} JSON-RPC methods: check params, apply the rate limit,
check registration proofs, and hand clean inputs to the gateway machine;
register answers leave signed.  No policy lives here.
"""

from __future__ import annotations

from txjsonrpc_ng.jsonrpc import BaseSubhandler

from mnigs.protocol import invalidParams, parseLeaseCredentials, parseRegister
from mnigs.rpc.server import JSONRPCResource


class GatewayCalls(BaseSubhandler):
    """
    @param signer: checks registration proofs and signs register answers
        (L{mnigs.server.offer.OfferMaker}).
    """

    def __init__(self, gateway, rateLimiter, signer):
        super().__init__()
        self.gateway = gateway
        self.rateLimiter = rateLimiter
        self.signer = signer

    def jsonrpc_info(self, call):
        if call.params:
            raise invalidParams("gateway.info takes no params")
        return self.gateway.info(call.localHost)

    def jsonrpc_register(self, call):
        request = parseRegister(call.params)
        self.rateLimiter.check(call.clientHost)
        self.signer.checkProof(request)
        d = self.gateway.register(request, call.clientHost, call.localHost)
        return d.addCallback(self.signer.signLease, request.clientId)

    def jsonrpc_renew(self, call):
        leaseId, token = parseLeaseCredentials(call.params)
        self.rateLimiter.check(call.clientHost)
        return self.gateway.renew(leaseId, token)

    def jsonrpc_unregister(self, call):
        leaseId, token = parseLeaseCredentials(call.params)
        self.rateLimiter.check(call.clientHost)
        return self.gateway.unregister(leaseId, token)


def makeResource(gateway, rateLimiter, signer, observer=None) -> JSONRPCResource:
    """
    @param observer: told about every call (an L{mnigs.interfaces.IRPCObserver}:
        the gateway's metrics), or None.
    """
    resource = JSONRPCResource(observer)
    resource.putSubHandler("gateway", GatewayCalls(gateway, rateLimiter, signer))
    return resource
