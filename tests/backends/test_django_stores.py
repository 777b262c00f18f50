"""
The contract on the Django database backend, on SQLite, PostgreSQL and
MariaDB, each in a trial process of its own (Django's settings are global
to a process); on MariaDB with Django 4.2 too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.backends.contract import BackendContract, ClaimStoreContract, ScheduleStoreContract
from tests.integration.django_versions import django42_path
from tests.integration.servers import ROOT, server_url

HERE = Path(__file__).parent


def run_contract(database_url: str, python_path: str = str(ROOT)) -> str:
    env = dict(
        os.environ,
        PYTHONPATH=python_path,
        DJANGO_SETTINGS_MODULE="examples.clickcounter.settings",
        CLICKCOUNTER_DATABASE_URL=database_url,
    )
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "twisted.trial",
            "--temp-directory",
            os.path.join(tempfile.mkdtemp(prefix="twistedq-django-"), "_trial_temp"),
            "tests.backends.contract_django",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )
    output = completed.stdout + completed.stderr
    if completed.returncode != 0:
        raise AssertionError(output[-5000:])
    return output


class DjangoStoreTests(SynchronousTestCase):
    def assert_contract(self, database_url: str, python_path: str = str(ROOT)) -> None:
        output = run_contract(database_url, python_path)
        shared = dir(BackendContract) + dir(ScheduleStoreContract) + dir(ClaimStoreContract)
        own = re.findall(
            r"^    async def (test_\w+)", (HERE / "contract_django.py").read_text(), re.M
        )
        expected = len([name for name in shared if name.startswith("test_")]) + len(own)
        ran = re.search(r"^PASSED \((?:skips=(\d+), )?successes=(\d+)\)$", output, re.M)
        self.assertIsNotNone(ran, output[-5000:])
        assert ran is not None
        self.assertEqual(int(ran.group(1) or 0) + int(ran.group(2)), expected, output[-5000:])

    def test_sqlite(self) -> None:
        """
        The Django backend keeps the contract on SQLite.
        """
        self.assert_contract(f"sqlite:///{tempfile.mkdtemp()}/db.sqlite3")

    def test_postgresql(self) -> None:
        """
        The Django backend keeps the contract on PostgreSQL.
        """
        self.assert_contract(server_url("TWISTEDQ_TEST_POSTGRES_URL"))

    def test_mariadb(self) -> None:
        """
        The Django backend keeps the contract on MariaDB.
        """
        self.assert_contract(server_url("TWISTEDQ_TEST_MYSQL_URL"))

    def test_mariadb_django42(self) -> None:
        """
        The Django backend keeps the contract on MariaDB with Django 4.2
        (its upserts take no conflict target there).
        """
        path = django42_path()
        self.assert_contract(server_url("TWISTEDQ_TEST_MYSQL_URL"), f"{path}{os.pathsep}{ROOT}")
