"""
Tests of cjdns support (mnigs.cjdns, the cjdns route source and method).
cjdns cannot be installed here: whatever talks to cjdns is tested against
the FAKE admin endpoint of tests.unit.fakecjdns, which follows cjdns's code.
"""
