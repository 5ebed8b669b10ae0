"""
C{twistd mnigs-server --config FILE}.
"""

from __future__ import annotations

import sys

from twisted.logger import Logger
from twisted.python import usage

from mnigs.daemon.config import ConfigError
from mnigs.daemon.configcheck import SERVER, checkServer, errorLine, logWarnings
from mnigs.daemon.daemonlog import LevelFilter, levelled

log = Logger()

DEFAULT_CONFIG = "/etc/mnigs/mnigs-server.toml"


class Options(usage.Options):
    optParameters = [
        ["config", "c", DEFAULT_CONFIG, "The server's TOML configuration file."],
    ]


def makeService(options, reactor=None):
    if reactor is None:
        from twisted.internet import reactor
    from mnigs.server.service import GatewayService

    try:
        checked = checkServer(options["config"])
    except ConfigError as e:
        # twistd prints SystemExit's message and exits with status 1.
        sys.stderr.write(errorLine(SERVER, e) + "\n")
        raise SystemExit(1) from None
    # Logged before twistd starts its log observer: the global log
    # beginner keeps these events and writes them out once it does.
    logWarnings(log, checked)
    levelFilter = LevelFilter(checked.config.log.level)
    service = GatewayService(reactor, checked.config, configPath=options["config"],
                            levelFilter=levelFilter)
    return levelled(service, options, levelFilter)
