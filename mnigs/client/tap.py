"""
C{twistd mnigs-client --config FILE}.
"""

from __future__ import annotations

import sys

from twisted.logger import Logger
from twisted.python import usage

from mnigs.daemon.config import ConfigError
from mnigs.daemon.configcheck import CLIENT, checkClient, errorLine, logWarnings
from mnigs.daemon.daemonlog import LevelFilter, levelled
from mnigs.daemon.gcpause import pauseWhileStarting

log = Logger()

DEFAULT_CONFIG = "/etc/mnigs/mnigs-client.toml"


class Options(usage.Options):
    optParameters = [
        ["config", "c", DEFAULT_CONFIG, "The client's TOML configuration file."],
    ]


def makeService(options, reactor=None):
    if reactor is None:
        from twisted.internet import reactor
    # Before the imports below: most of the start's objects are made from here on.
    pauseWhileStarting(reactor)
    from mnigs.client.service import ClientService

    try:
        checked = checkClient(options["config"])
    except ConfigError as e:
        sys.stderr.write(errorLine(CLIENT, e) + "\n")
        raise SystemExit(1) from None
    # Logged before twistd starts its log observer: the global log
    # beginner keeps these events and writes them out once it does.
    logWarnings(log, checked)
    levelFilter = LevelFilter(checked.config.log.level)
    service = ClientService(reactor, checked.config, configPath=options["config"],
                           levelFilter=levelFilter)
    return levelled(service, options, levelFilter)
