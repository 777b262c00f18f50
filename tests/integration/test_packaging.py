"""
The package as a user installs it: ``pip install .`` into a new virtual
environment.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.servers import ROOT


class InstalledPackageTests(SynchronousTestCase):
    def test_twistd_lists_plugin_after_pip_install(self) -> None:
        """
        After ``pip install .`` into a fresh virtual environment, ``twistd
        --help`` lists ``twistedq``, ``twistd twistedq --help`` shows its
        options, the ``twistedq-deadletter`` command is installed, and the
        packaged AMQP spec loads from outside the source tree.
        """
        work = Path(tempfile.mkdtemp(prefix="twistedq-install-"))
        venv = work / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        installed = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(ROOT)],
            capture_output=True,
            text=True,
            cwd=work,
            timeout=600,
        )
        self.assertEqual(installed.returncode, 0, installed.stderr[-3000:])

        listing = subprocess.run(
            [str(venv / "bin" / "twistd"), "--help"], capture_output=True, text=True, cwd=work
        )
        self.assertIn("twistedq", listing.stdout)

        options = subprocess.run(
            [str(venv / "bin" / "twistd"), "twistedq", "--help"],
            capture_output=True,
            text=True,
            cwd=work,
        )
        self.assertIn("--result-backend", options.stdout)

        command = subprocess.run(
            [str(venv / "bin" / "twistedq-deadletter"), "--help"],
            capture_output=True,
            text=True,
            cwd=work,
        )
        self.assertIn("republish", command.stdout)

        spec = subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-c",
                "from twistedq.amqp.protocol import load_spec; print(load_spec().file)",
            ],
            capture_output=True,
            text=True,
            cwd=work,
        )
        self.assertIn(str(venv), spec.stdout)
