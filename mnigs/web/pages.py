"""
The status listener's read-only resources: L{StatusPage} (the daemon's
status rendered as HTML by a pure function) and L{StatusJSON} (the same
status as JSON).  Both answer GET and HEAD only (anything else: 405, with
C{Allow}), and 404 to any path below them.
"""

from __future__ import annotations

import json

from twisted.web.resource import NoResource, Resource

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
    allowedMethods = (b"GET", b"HEAD")
    contentType = b"text/plain; charset=utf-8"

    def __init__(self, describe):
        super().__init__()
        self.describe = describe

    def body(self, status: dict) -> bytes:
        raise NotImplementedError()

    def render(self, request):
        # Twisted answers 501 to methods it does not know (PUT, DELETE...);
        # here every method but GET and HEAD gets the same 405.
        if request.method not in self.allowedMethods:
            request.setResponseCode(405)
            request.setHeader(b"allow", b", ".join(self.allowedMethods))
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"read-only: GET or HEAD\n"
        return super().render(request)

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
