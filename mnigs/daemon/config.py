"""
Reading TOML configuration into checked values.  Every error names the
file, the dotted key and the reason; unknown keys are errors too, since a
misspelt key silently ignored is a gateway configured otherwise than its
owner thinks.

The schema language is deliberately small: a section is a dict of key ->
L{Field}; nested sections are dicts.  The server and the client describe
their files with it (L{mnigs.server.config}, L{mnigs.client.config}).

What is wrong stops the daemon (L{ConfigError}); what is only worth
saying (a deprecated spelling) is a L{ConfigWarning}, which a loader
appends to the list it was given, if any.  Checks that need the machine
(do the named interfaces exist?) are kept out of the loaders, in
L{mnigs.daemon.configcheck}.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable


class ConfigError(Exception):
    def __init__(self, path: str, key: str, reason: str):
        super().__init__(f"{path}: {key}: {reason}" if key else f"{path}: {reason}")
        self.path = path
        self.key = key
        self.reason = reason


@dataclass(frozen=True)
class ConfigWarning:
    """
    Something in a configuration file that does not stop the daemon but
    that its operator should hear of, named like a L{ConfigError}.
    """
    path: str
    key: str
    reason: str

    def __str__(self):
        return f"{self.path}: {self.key}: {self.reason}"


_REQUIRED = object()


@dataclass(frozen=True)
class Field:
    """
    One key: C{kind} is a python type or tuple of types the TOML value must
    have; C{check} turns the value into its final form or raises
    ValueError with the reason.
    """
    kind: Any
    default: Any = _REQUIRED
    check: Callable[[Any], Any] | None = None


@dataclass(frozen=True)
class Table:
    """
    An optional table of tables, like [methods.wireguard]: each member
    that is present is read with the schema in C{members}.
    """
    members: Mapping


class Computed(Mapping):
    """
    A section (or a L{Table}'s members) made when it is read, by
    C{make()}: what a registry (L{mnigs.methods}, L{mnigs.routing}) holds
    at that moment, so that an entry registered later is in the schema.
    """

    def __init__(self, make: Callable[[], Mapping]):
        self.make = make

    def __getitem__(self, key):
        return self.make()[key]

    def __iter__(self):
        return iter(self.make())

    def __len__(self):
        return len(self.make())

    def __repr__(self):
        return f"Computed({dict(self.make())!r})"


class Section(dict):
    """
    A read section: a dict that also allows attribute access.
    """

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _typeName(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {bool: "true/false", int: "an integer", float: "a number",
             str: "a string", list: "a list", dict: "a table"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _readField(path: str, key: str, field: Field, value):
    kinds = field.kind if isinstance(field.kind, tuple) else (field.kind,)
    if float in kinds and type(value) is int:
        value = float(value)
    if type(value) not in kinds:
        raise ConfigError(path, key, f"must be {_typeName(field.kind)}, not {type(value).__name__} {value!r}")
    if field.check is not None:
        try:
            value = field.check(value)
        except (ValueError, TypeError) as e:
            raise ConfigError(path, key, str(e)) from None
    return value


def readSection(path: str, prefix: str, schema: dict, data) -> Section:
    if not isinstance(data, dict):
        raise ConfigError(path, prefix, "must be a table")
    unknown = sorted(set(data) - set(schema))
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(path, key, f"unknown key (known: {', '.join(sorted(schema))})")
    out = Section()
    for name, spec in schema.items():
        key = f"{prefix}.{name}" if prefix else name
        if isinstance(spec, Mapping):
            out[name] = readSection(path, key, spec, data.get(name, {}))
        elif isinstance(spec, Table):
            members = data.get(name, {})
            if not isinstance(members, dict):
                raise ConfigError(path, key, "must be a table")
            unknownMembers = sorted(set(members) - set(spec.members))
            if unknownMembers:
                raise ConfigError(path, f"{key}.{unknownMembers[0]}",
                                  f"unknown (known: {', '.join(sorted(spec.members))})")
            out[name] = Section(
                (member, readSection(path, f"{key}.{member}", spec.members[member], members[member]))
                for member in members)
        elif name in data:
            out[name] = _readField(path, key, spec, data[name])
        elif spec.default is _REQUIRED:
            raise ConfigError(path, key, "is required")
        else:
            default = spec.default
            if spec.check is not None:
                default = spec.check(list(default) if isinstance(default, list) else default)
            out[name] = default
    return out


def readTOML(path: str) -> dict:
    """
    The file's TOML as plain data, unchecked.
    """
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(path, "", "no such file") from None
    except PermissionError:
        raise ConfigError(path, "", "permission denied") from None
    except IsADirectoryError:
        raise ConfigError(path, "", "is a directory, not a file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(path, "", f"not UTF-8 text: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, "", f"not valid TOML: {e}") from None
    return data


def loadTOML(path: str, schema: dict) -> Section:
    return readSection(path, "", schema, readTOML(path))


# -- checks shared by the server's and the client's schemas -------------

def between(low, high):
    def check(value):
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, not {value}")
        return value
    return check


def port(value):
    return between(1, 65535)(value)


def address(value):
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None


def addresses(value):
    return [address(v) for v in _strings(value)]


def network(value):
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as e:
        raise ValueError(f"{value!r} is not a network: {e}") from None


def ifname(value):
    if not 0 < len(value) <= 15 or "/" in value or value.strip() != value or value in (".", ".."):
        raise ValueError(f"{value!r} is not a valid interface name (1-15 characters, no '/' or spaces)")
    return value


def ifnames(value):
    return [ifname(v) for v in _strings(value)]


def _strings(value):
    if not all(isinstance(v, str) for v in value):
        raise ValueError("must be a list of strings")
    return value


def strings(value):
    return list(_strings(value))


def absolutePath(value):
    if not os.path.isabs(value):
        raise ValueError(f"{value!r} must be an absolute path")
    return value


def executable(value):
    absolutePath(value)
    if not os.path.isfile(value) or not os.access(value, os.X_OK):
        raise ValueError(f"{value!r} is not an executable file")
    return value


def oneOf(*choices):
    def check(value):
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(map(repr, choices))}, not {value!r}")
        return value
    return check


def decimalAmount(value):
    from decimal import Decimal, InvalidOperation

    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a decimal amount") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError("must be a non-negative amount")
    return amount


def text(limit):
    """
    Text of at most C{limit} characters, all printable (no controls,
    bidi overrides or zero-width characters: it ends up in offers, logs
    and status output).
    """
    from mnigs.protocol import unprintable

    def check(value):
        if len(value) > limit:
            raise ValueError(f"must be at most {limit} characters")
        bad = unprintable(value)
        if bad is not None:
            raise ValueError(f"has a character that is not printable: {bad}")
        return value
    return check
