"""
The status listener: one read-only HTTP site per daemon, on the
addresses of its C{[web]} section.  C{makeWebService} takes the resources
to serve (path segment to resource) and answers anything else with 404
and any method but GET or HEAD with 405.
"""

from __future__ import annotations

from twisted.application.internet import TCPServer
from twisted.application.service import MultiService
from twisted.web.resource import Resource
from twisted.web.server import Site


class WebRoot(Resource):
    """
    The site's root: its children are the daemon's pages; nothing here
    takes a request body or changes anything.
    """

    def __init__(self, children: dict[bytes, Resource]):
        super().__init__()
        for name, child in children.items():
            self.putChild(name, child)


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
