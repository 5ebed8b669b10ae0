"""
C{mnigsctl --version}.
"""

import io
from contextlib import redirect_stdout

from twisted.trial.unittest import SynchronousTestCase

import mnigs
from mnigs.cli.ctl import main


class VersionTests(SynchronousTestCase):
    def test_versionPrintsMnigsVersionAndExitsZero(self):
        """
        C{--version} prints mnigs's own version (the one setup.cfg puts in
        the distribution's metadata) on stdout, needs no command and asks
        no daemon.
        """
        out = io.StringIO()
        with redirect_stdout(out), self.assertRaises(SystemExit) as exited:
            main(["--version"])
        self.assertEqual(exited.exception.code, 0)
        self.assertEqual(out.getvalue(), f"mnigs {mnigs.__version__}\n")
