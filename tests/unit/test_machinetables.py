"""
docs/machines/tables.md is the transition table of every Automat machine as
the code builds it (tests/machinetables.py makes it).
"""

import os

from twisted.trial.unittest import SynchronousTestCase

from tests.machinetables import machines, markdown

HERE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class MachineTablesTests(SynchronousTestCase):
    def test_docsMatchTheCode(self):
        with open(os.path.join(HERE, "docs", "machines", "tables.md"), encoding="utf-8") as f:
            documented = f.read()
        self.assertEqual(documented, markdown(),
                         "docs/machines/tables.md is out of date: run "
                         "PYTHONPATH=. .venv/bin/python -m tests.machinetables "
                         "> docs/machines/tables.md")

    def test_everyMachineIsThere(self):
        names = {name for name, machine in machines()}
        for expected in ("mnigs.client.machine.ClientMachine",
                         "mnigs.server.machine.makeGateway",
                         "mnigs.client.health._makeMonitor",
                         "mnigs.wireguard.device._DeviceMachine"):
            self.assertIn(expected, names)
