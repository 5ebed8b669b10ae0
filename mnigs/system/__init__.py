"""
Wrappers around the operating system, and nothing of mnigs's policy:
netlink (links, addresses, routes, rules), nftables, ICMP echo sockets,
child processes and their readiness, commands, state files.
"""
