"""
A stand-in status page until the real pages land: the daemon's status as
JSON.  C{describe} is the admin socket's C{status} command.
"""

from __future__ import annotations

import json

from twisted.web.resource import Resource


class StatusJSON(Resource):
    isLeaf = True

    def __init__(self, describe):
        super().__init__()
        self.describe = describe

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        return json.dumps(self.describe(), default=str, indent=1).encode("utf-8")
