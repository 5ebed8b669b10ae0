"""
cjdns support: bencode, the names cjdns gives keys, addresses and switch
labels, and a client for its admin API.  cjdns itself is never linked in:
everything here is checked against cjdns's own sources (the comments name
the file each fact comes from).
"""
