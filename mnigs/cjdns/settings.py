"""
The [cjdns] section both daemons share: how to reach the local cjdns
node's admin API, and the node's own key and tun interface.
"""

from __future__ import annotations

from mnigs.daemon.config import Field, absolutePath, between, ifname, port, text


def _host(value):
    import ipaddress

    return str(ipaddress.ip_address(value))


def _optionalPath(value):
    return absolutePath(value) if value else ""


def _key(value):
    if not value:
        return ""
    from mnigs.cjdns.names import canonicalKey

    return canonicalKey(value)


SCHEMA = {
    "admin_host": Field(str, "127.0.0.1", _host),
    "admin_port": Field(int, 11234, port),
    "password": Field(str, "", text(256)),        # "": from admin_file; "NONE": no authentication
    "admin_file": Field(str, "", _optionalPath),  # "": ~/.cjdnsadmin
    "public_key": Field(str, "", _key),           # this node's key (…k); required by the cjdns method
    "tun_interface": Field(str, "tun0", ifname),
    "timeout": Field(float, 5.0, between(0.1, 120)),
}


def makeAdmin(reactor, settings):
    from mnigs.cjdns.admin import CjdnsAdmin, loadAdminConfig

    if settings.password:
        return CjdnsAdmin(reactor, settings.admin_host, settings.admin_port,
                          settings.password, settings.timeout)
    stored = loadAdminConfig(settings.admin_file or None)
    return CjdnsAdmin.fromConfig(reactor, stored, settings.timeout)
