"""
Yggdrasil 0.4 support: a client for its admin socket and the parsing of
its answers.  Yggdrasil itself is never linked in: every fact here was
checked against yggdrasil 0.4.7 (Debian's package) answering on a real
admin socket; tests/unit/data/ygg_*.json are such answers, captured by
tests/mesh/capture_yggdrasil.py.
"""
