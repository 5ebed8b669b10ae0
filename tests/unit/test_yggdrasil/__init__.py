"""
Unit tests of mnigs's Yggdrasil support: parsing from answers CAPTURED from
real yggdrasil 0.4.7 daemons (tests/unit/data/ygg_*.json), the admin client
over in-memory transports, the walk against a FAKE admin
(tests.unit.fakeyggdrasil).  The real daemons are in
tests.mesh.test_yggdrasil.
"""
