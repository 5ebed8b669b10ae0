"""
Where the mnigs client's resident memory goes at import time: imports what
a running `twistd mnigs-client` imports, in the same order, and charges
the growth of VmRSS to the package that was being imported (exclusive of
what it imported in turn, which is charged to those packages).  Pages of
shared libraries touched by an import (OpenSSL's libcrypto behind
_hashlib, cryptography's Rust extension) count, as they do in VmRSS.

No namespaces or root needed.  Progress and the table on stderr; the last
line of stdout is one JSON object.

From the root of a checkout (as root where it needs namespaces):

    PYTHONPATH=. .venv/bin/python bench/client_imports.py
"""

import builtins
import json
import os
import sys

_PAGE = os.sysconf("SC_PAGE_SIZE")

# What the client loads: twistd, the plugin, the service and what the
# service imports lazily once it runs (route sources, WireGuard device).
CLIENT_MODULES = [
    "twisted.scripts.twistd",
    "twisted.internet.reactor",
    "twisted.plugins.mnigs_plugins",
    "mnigs.client.tap",
    "mnigs.client.config",
    "mnigs.client.service",
    "mnigs.routing.babel",
    "mnigs.routing.kernel",
    "mnigs.routing.neighbours",
    "mnigs.wireguard.device",
    "mnigs.protocol",
]


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE / 2**20


def group(name):
    parts = name.split(".")
    if parts[0] in ("mnigs", "twisted") and len(parts) > 1:
        return ".".join(parts[:2])
    return parts[0]


def measure(modules):
    original = builtins.__import__
    nested = []
    exclusive = {}
    firstImporter = {}

    def charging(name, globals=None, locals=None, fromlist=(), level=0):
        if level != 0 or name in sys.modules:
            return original(name, globals, locals, fromlist, level)
        key = group(name)
        firstImporter.setdefault(key, (globals or {}).get("__name__", "?"))
        before = rss()
        nested.append(0.0)
        try:
            return original(name, globals, locals, fromlist, level)
        finally:
            inner = nested.pop()
            grown = rss() - before
            exclusive[key] = exclusive.get(key, 0.0) + grown - inner
            if nested:
                nested[-1] += grown

    started = rss()
    builtins.__import__ = charging
    try:
        for module in modules:
            __import__(module)
    finally:
        builtins.__import__ = original
    return started, rss(), exclusive, firstImporter


def main():
    import importlib.util

    missing = [m for m in CLIENT_MODULES if importlib.util.find_spec(m.split(".")[0]) is None]
    if missing:
        sys.exit(f"cannot import {missing}")
    started, ended, exclusive, importer = measure(CLIENT_MODULES)
    ranked = sorted(exclusive.items(), key=lambda kv: -kv[1])
    print(f"interpreter at start: {started:.1f} MB; after the client's imports: "
          f"{ended:.1f} MB ({len(sys.modules)} modules)", file=sys.stderr)
    for name, mb in ranked:
        if mb >= 0.25:
            print(f"  {mb:5.2f} MB  {name:32} (first imported by {importer[name]})",
                  file=sys.stderr)
    print(json.dumps({
        "start_mb": round(started, 1), "after_imports_mb": round(ended, 1),
        "modules": len(sys.modules),
        "exclusive_mb": {name: round(mb, 2) for name, mb in ranked if mb >= 0.1},
        "first_imported_by": {name: importer[name] for name, mb in ranked if mb >= 0.1},
    }))


if __name__ == "__main__":
    main()
