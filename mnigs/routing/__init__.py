"""
The registry of route sources: one L{RouteSource} per name a client's
configuration can choose.

The client's configuration schema (C{discovery.sources},
C{discovery.scan}, the C{[sources.NAME]} tables) and its service
(L{mnigs.client.service.buildSources}) read L{SOURCES}.  Adding a route
source is its module(s), one entry below, its sample config section
(etc/mnigs-client.toml) and its docs (docs/configuration.md); see
docs/architecture.md, "Adding a route source".

Kept light (the client's config loader reads it): builders are named as
C{"package.module.function"} and imported only when the client builds the source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from twisted.python.reflect import namedAny

from mnigs.daemon.config import Field, addresses, between, port

#: The C{discovery.scan} word that stands for every source chosen by
#: C{discovery.sources}: destinations in routing tables.
ROUTES = "routes"


@dataclass(frozen=True)
class SourceContext:
    """
    What a source's builder is given besides its own C{[sources.NAME]}
    section: the reactor and the whole config.
    """
    reactor: Any
    config: Any


@dataclass(frozen=True)
class RouteSource:
    """
    One route source.

    @ivar build: C{build(SourceContext, section)} -> an
        L{mnigs.interfaces.IRouteSource}, or C{None} when the config gives
        it nothing to look at; a callable or its dotted name.
    @ivar settings: its C{[sources.NAME]} keys, or C{None} for none.
    @ivar scan: the C{discovery.scan} word that turns it on: L{ROUTES}
        for a source of routes, which C{discovery.sources} names, in the
        order given there; or a word of its own (C{static},
        C{neighbours}).  Sources come in registry order, the routes'
        sources all at the place of the first of them: a candidate keeps
        the distance of the first source that reports it.
    """
    name: str
    build: Any
    settings: Mapping | None = None
    scan: str = ROUTES

    def buildSource(self, context: SourceContext, section):
        return resolve(self.build)(context, section)


def resolve(builder):
    """The callable C{builder} names (C{"package.module.function"}), imported now."""
    return namedAny(builder) if isinstance(builder, str) else builder


SOURCES: dict[str, RouteSource] = {}


def register(source: RouteSource) -> callable:
    """
    Add C{source}; returns what removes it again (a test's cleanup).
    """
    if source.name in SOURCES:
        raise ValueError(f"a route source {source.name!r} is registered already")
    SOURCES[source.name] = source
    return lambda: SOURCES.pop(source.name, None)


def routeSources() -> tuple[str, ...]:
    """The names C{discovery.sources} may list."""
    return tuple(name for name, source in SOURCES.items() if source.scan == ROUTES)


def scans() -> tuple[str, ...]:
    """The words C{discovery.scan} may list, in the order sources come."""
    return tuple(dict.fromkeys(source.scan for source in SOURCES.values()))


def sections() -> dict:
    """The client's C{[sources.NAME]} schemas, for sources that have one."""
    return {name: dict(source.settings) for name, source in SOURCES.items()
            if source.settings is not None}


def chosen(discovery) -> list[RouteSource]:
    """
    The sources a C{[discovery]} section turns on, in the order they are
    asked (see L{RouteSource.scan}).
    """
    out = []
    for scan in scans():
        if scan not in discovery.scan:
            continue
        if scan == ROUTES:
            out.extend(SOURCES[name] for name in discovery.sources)
        else:
            out.extend(source for source in SOURCES.values() if source.scan == scan)
    return out


def _babelHost(value):
    return str(addresses([value])[0])


def _adminEndpoint(value):
    from mnigs.yggdrasil.admin import adminEndpoint

    return adminEndpoint(value)


register(RouteSource("static", "mnigs.routing.neighbours.buildStatic", scan="static"))
register(RouteSource("babel", "mnigs.routing.babel.buildSource", {
    "host": Field(str, "::1", _babelHost),
    "port": Field(int, 33123, port),
}))
register(RouteSource("kernel", "mnigs.routing.kernel.buildSource", {
    "tables": Field(list, [254], lambda v: [between(1, 2**32 - 1)(t) for t in v]),
    "protocols": Field(list, [], lambda v: [between(0, 255)(p) for p in v]),
}))
register(RouteSource("yggdrasil", "mnigs.routing.yggdrasil.buildSource", {
    "admin": Field(str, "unix:///var/run/yggdrasil/yggdrasil.sock", _adminEndpoint),
    "timeout": Field(float, 10.0, between(0.5, 120)),
    "budget": Field(float, 20.0, between(0.5, 3600)),
    "concurrency": Field(int, 8, between(1, 256)),
    "poll_interval": Field(float, 10.0, between(0.5, 3600)),
}))
register(RouteSource("cjdns", "mnigs.routing.cjdns.buildSource", {
    "budget": Field(float, 30.0, between(0.1, 3600)),
    # At most 200 calls out at once: each holds a query of our cjdns node
    # into the mesh, and their answers come back in bursts (see
    # mnigs.cjdns.admin on the receive buffer).
    "concurrency": Field(int, 8, between(1, 200)),
    "max_nodes": Field(int, 20000, between(1, 1_000_000)),
    "poll_interval": Field(float, 30.0, between(1, 86400)),
}))
register(RouteSource("neighbours", "mnigs.routing.neighbours.buildNeighbours", scan="neighbours"))
