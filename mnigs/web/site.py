"""
The status listener: one read-only HTTP site per daemon, on the
addresses of its C{[web]} section.  C{makeWebService} takes the resources
to serve (path segment to resource) and answers anything else with 404
and any method but GET or HEAD, on any path, with 405.
"""

from __future__ import annotations

from twisted.application.internet import TCPServer
from twisted.application.service import MultiService
from twisted.web.resource import Resource
from twisted.web.server import Site


#: The only methods the listener answers; anything else gets 405.
READ_METHODS = (b"GET", b"HEAD")


class NotAllowed(Resource):
    """
    405 for every method but GET and HEAD, whatever the path: Twisted
    itself would answer 501 to methods it does not know (PUT, DELETE).
    """

    isLeaf = True

    def render(self, request):
        request.setResponseCode(405)
        request.setHeader(b"allow", b", ".join(READ_METHODS))
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"read-only: GET or HEAD\n"


class WebRoot(Resource):
    """
    The site's root: its children are the daemon's pages; nothing here
    takes a request body or changes anything.
    """

    def __init__(self, children: dict[bytes, Resource]):
        super().__init__()
        for name, child in children.items():
            self.putChild(name, child)

    def getChildWithDefault(self, path, request):
        if request.method not in READ_METHODS:
            return NotAllowed()
        return super().getChildWithDefault(path, request)


def makeWebSite(children: dict[bytes, Resource], reactor=None) -> Site:
    # No request body is ever read: nothing here takes a form.
    site = Site(WebRoot(children), reactor=reactor, parsePOSTFormSubmission=False)
    site.displayTracebacks = False
    return site


def makeWebService(reactor, addresses, port: int, children: dict[bytes, Resource]) -> MultiService:
    service = MultiService()
    site = makeWebSite(children, reactor)
    for address in addresses:
        TCPServer(port, site, interface=str(address), reactor=reactor).setServiceParent(service)
    return service
