"""
C{twistd mnigs-client --config FILE}.
"""

from __future__ import annotations

import sys

from twisted.python import usage

from mnigs.config import ConfigError
from mnigs.daemonlog import levelled

DEFAULT_CONFIG = "/etc/mnigs/mnigs-client.toml"


class Options(usage.Options):
    optParameters = [
        ["config", "c", DEFAULT_CONFIG, "The client's TOML configuration file."],
    ]


def makeService(options, reactor=None):
    if reactor is None:
        from twisted.internet import reactor
    from mnigs.client.config import loadClientConfig
    from mnigs.client.service import ClientService

    try:
        config = loadClientConfig(options["config"])
    except ConfigError as e:
        sys.stderr.write(f"mnigs-client: configuration error: {e}\n")
        raise SystemExit(1) from None
    return levelled(ClientService(reactor, config), options, config.log.level)
