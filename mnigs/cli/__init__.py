"""
The command lines: C{mnigsctl} (status, drain, check-config) and
C{mnigs-rpc} (raw JSON-RPC calls to a gateway).
"""
