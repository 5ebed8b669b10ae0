"""
The status listener's read-only resources: L{StatusPage} (the daemon's
status rendered as HTML by a pure function) and L{StatusJSON} (the same
status as JSON).  Both answer GET and HEAD (the site answers every other
method with 405: L{mnigs.web.site.WebRoot}), and 404 to any path below
them.
"""

from __future__ import annotations

import json

from twisted.web.resource import NoResource, Resource

from mnigs.web.site import READ_METHODS

#: Nothing but the page itself: no scripts, no outside assets, no forms,
#: no framing.
SECURITY_HEADERS = {
    b"content-security-policy": b"default-src 'none'; style-src 'unsafe-inline'; "
                                b"img-src 'none'; base-uri 'none'; form-action 'none'; "
                                b"frame-ancestors 'none'",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    b"cache-control": b"no-store",
}


class _ReadOnly(Resource):
    isLeaf = True
    allowedMethods = READ_METHODS
    contentType = b"text/plain; charset=utf-8"

    def __init__(self, describe):
        super().__init__()
        self.describe = describe

    def body(self, status: dict) -> bytes:
        raise NotImplementedError()

    def render_GET(self, request):
        if request.postpath:
            return NoResource().render(request)
        for name, value in SECURITY_HEADERS.items():
            request.setHeader(name, value)
        request.setHeader(b"content-type", self.contentType)
        return self.body(self.describe())


class StatusPage(_ReadOnly):
    """C{render(status) -> str}: the page for the daemon's status."""

    contentType = b"text/html; charset=utf-8"

    def __init__(self, describe, render):
        super().__init__(describe)
        self.renderPage = render

    def body(self, status):
        return self.renderPage(status).encode("utf-8")


class StatusJSON(_ReadOnly):
    """The status as the admin socket's C{status} gives it."""

    contentType = b"application/json; charset=utf-8"

    def body(self, status):
        return json.dumps(status, default=str, indent=1).encode("utf-8")
