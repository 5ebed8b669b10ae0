"""
pyroute2, without the price of its package C{__init__}.

C{import pyroute2} (and so C{from pyroute2.iproute import IPRoute}, which
runs it first) imports every part of the library: NDB with sqlite3, IPDB,
IPVS, nl80211, devlink, plan9, ...  In the client that was about 5 MB of
its resident memory for the few rtnetlink calls it makes.  Every mnigs
module takes pyroute2 from here instead: the C{pyroute2} package object is
created without running its C{__init__}, so only the submodules asked for
load; the first time anything asks the package itself for a name that is
not a submodule (C{from pyroute2 import NDB}), its C{__init__} runs after
all and that name is there, so other code (and tests) importing pyroute2
the ordinary way keep working, only paying the full price.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys


def _leanPackage():
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    package = importlib.util.module_from_spec(spec)

    def __getattr__(name):
        if name.startswith("__"):
            raise AttributeError(name)
        if importlib.util.find_spec(f"pyroute2.{name}") is not None:
            return importlib.import_module(f"pyroute2.{name}")
        del package.__getattr__
        spec.loader.exec_module(package)
        return getattr(package, name)

    package.__getattr__ = __getattr__
    sys.modules["pyroute2"] = package


_leanPackage()

from pyroute2 import netns  # noqa: E402
from pyroute2.iproute import IPRoute  # noqa: E402
from pyroute2.netlink.exceptions import NetlinkError  # noqa: E402
from pyroute2.netlink.rtnl import (  # noqa: E402
    RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_ROUTE, RTMGRP_LINK, RTMGRP_NEIGH)

__all__ = ["IPRoute", "NetlinkError", "RTMGRP_IPV4_ROUTE", "RTMGRP_IPV6_ROUTE", "RTMGRP_LINK",
           "RTMGRP_NEIGH", "netns"]
