"""
SoftEther VPN 5.01 (Debian's softether-vpnserver, -vpnclient, -vpncmd) for
the C{softether} method: a launcher that gives each daemon its own mount
namespace (L{mnigs.softether.launch}), C{vpncmd} batches and their output
(L{mnigs.softether.vpncmd}), the gateway's vpnserver
(L{mnigs.softether.server}) and the client's vpnclient
(L{mnigs.softether.client}).
"""

import os

SOFTETHER_LIBEXEC = "/usr/libexec/softether"
VPNSERVER = os.path.join(SOFTETHER_LIBEXEC, "vpnserver", "vpnserver")
VPNCLIENT = os.path.join(SOFTETHER_LIBEXEC, "vpnclient", "vpnclient")
VPNCMD = os.path.join(SOFTETHER_LIBEXEC, "vpncmd", "vpncmd")

# Compiled into the binaries: config and state, logs, pid and control files.
# Each instance gets its own directories bind-mounted over these, in a mount
# namespace of its own (see mnigs.softether.launch).
COMPILED_PATHS = {"lib": "/var/lib/softether", "log": "/var/log/softether",
                  "run": "/run/softether"}
