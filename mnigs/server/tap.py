"""
C{twistd mnigs-server --config FILE}.
"""

from __future__ import annotations

import sys

from twisted.python import usage

from mnigs.config import ConfigError
from mnigs.daemonlog import levelled

DEFAULT_CONFIG = "/etc/mnigs/mnigs-server.toml"


class Options(usage.Options):
    optParameters = [
        ["config", "c", DEFAULT_CONFIG, "The server's TOML configuration file."],
    ]


def makeService(options, reactor=None):
    if reactor is None:
        from twisted.internet import reactor
    from mnigs.server.config import loadServerConfig
    from mnigs.server.service import GatewayService

    try:
        config = loadServerConfig(options["config"])
    except ConfigError as e:
        # twistd prints SystemExit's message and exits with status 1.
        sys.stderr.write(f"mnigs-server: configuration error: {e}\n")
        raise SystemExit(1) from None
    return levelled(GatewayService(reactor, config), options, config.log.level)
