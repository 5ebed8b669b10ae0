"""
What both daemons share: the config base and its checks, the admin socket,
the manhole, hooks, logging levels, reloads on SIGHUP and the ed25519 keys.
"""
