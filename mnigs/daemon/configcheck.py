"""
Checking a configuration file the way a daemon does at start: its loader
(L{mnigs.server.config.loadServerConfig} or
L{mnigs.client.config.loadClientConfig}) and then what only this machine
can tell, whether the interfaces the file names exist.

The warnings API: a loader keeps its call C{load(path)} returning the
config L{Section}; given a list as C{warnings} it appends the
L{ConfigWarning}s of the file's content (e.g. a deprecated spelling).
L{checkServer} / L{checkClient} add the machine's (missing interfaces)
and return a L{Checked}: the config and every warning.  Both daemons
(their tap modules log each warning with C{log.warn}) and C{mnigsctl
check-config} (L{checkConfigFile}, which prints them) go through these,
and word errors and warnings with L{errorLine} and L{warningLine}, so an
operator reads the same lines from either.
"""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass, field
from typing import Callable

from mnigs.daemon.config import ConfigError, ConfigWarning, Section, readTOML

SERVER = "mnigs-server"
CLIENT = "mnigs-client"


@dataclass(frozen=True)
class Checked:
    """
    A configuration that loaded, which daemon it is for, and what is
    worth a warning about it.
    """
    program: str
    config: Section
    warnings: list[ConfigWarning] = field(default_factory=list)


def interfaceExists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def missingInterfaces(path: str, config: Section, keys, exists: Callable[[str], bool]
                      ) -> list[ConfigWarning]:
    """
    A warning for each interface named under one of C{keys} (dotted, a
    name or a list of names) that C{exists} says is not there.
    """
    warnings = []
    for key in keys:
        value = config
        for part in key.split("."):
            value = value[part]
        for name in [value] if isinstance(value, str) else value:
            if not exists(name):
                warnings.append(ConfigWarning(path, key, f"no interface {name!r} on this machine"))
    return warnings


def checkServer(path: str, exists: Callable[[str], bool] = interfaceExists) -> Checked:
    from mnigs.server.config import EXISTING_INTERFACES, loadServerConfig

    warnings: list[ConfigWarning] = []
    config = loadServerConfig(path, warnings)
    return Checked(SERVER, config, warnings + missingInterfaces(path, config, EXISTING_INTERFACES, exists))


def checkClient(path: str, exists: Callable[[str], bool] = interfaceExists) -> Checked:
    from mnigs.client.config import EXISTING_INTERFACES, loadClientConfig

    warnings: list[ConfigWarning] = []
    config = loadClientConfig(path, warnings)
    return Checked(CLIENT, config, warnings + missingInterfaces(path, config, EXISTING_INTERFACES, exists))


def errorLine(program: str, error: ConfigError) -> str:
    return f"{program}: configuration error: {error}"


def warningLine(program: str, warning: ConfigWarning) -> str:
    return f"{program}: configuration warning: {warning}"


def logWarnings(log, checked: Checked) -> None:
    for warning in checked.warnings:
        log.warn("{line}", line=warningLine(checked.program, warning),
                 path=warning.path, key=warning.key, reason=warning.reason)


def kindOf(path: str, data: dict) -> str:
    """
    Which daemon a file's top-level tables are for: by the sections only
    one of the two schemas has.
    """
    from mnigs.client.config import SCHEMA as CLIENT_SCHEMA
    from mnigs.server.config import SCHEMA as SERVER_SCHEMA

    serverOnly = sorted(set(SERVER_SCHEMA) - set(CLIENT_SCHEMA))
    clientOnly = sorted(set(CLIENT_SCHEMA) - set(SERVER_SCHEMA))
    server = [name for name in serverOnly if name in data]
    client = [name for name in clientOnly if name in data]
    if server and client:
        raise ConfigError(path, "", f"has both server sections ([{server[0]}]) and client sections "
                                    f"([{client[0]}]): one file configures one daemon")
    if not server and not client:
        raise ConfigError(path, "", "cannot tell a server's from a client's configuration: "
                                    f"it has none of the server's sections ({_tables(serverOnly)}) "
                                    f"nor of the client's ({_tables(clientOnly)})")
    return SERVER if server else CLIENT


def _tables(names) -> str:
    return ", ".join(f"[{name}]" for name in names)


def checkConfigFile(path: str, out=None, err=None,
                    exists: Callable[[str], bool] = interfaceExists) -> int:
    """
    C{mnigsctl check-config FILE}: 0 when the file would start its
    daemon (warnings or not), 1 when not.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        program = kindOf(path, readTOML(path))
    except ConfigError as e:
        err.write(errorLine("mnigsctl", e) + "\n")
        return 1
    check = checkServer if program == SERVER else checkClient
    try:
        checked = check(path, exists)
    except ConfigError as e:
        err.write(errorLine(program, e) + "\n")
        return 1
    for warning in checked.warnings:
        err.write(warningLine(program, warning) + "\n")
    out.write(f"{path}: valid {program} configuration"
              + (f" ({len(checked.warnings)} warning{'s' * (len(checked.warnings) != 1)})"
                 if checked.warnings else "") + "\n")
    return 0
