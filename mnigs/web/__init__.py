"""
The status listener a daemon serves when C{[web] enabled}: a read-only
HTTP site (C{/}: the daemon's status page; C{/metrics}: its Prometheus
metrics).  Off by default; on loopback by default when on.
"""
