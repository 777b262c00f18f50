"""
The Django app tried as a new user would, with the click counter example
(``examples/clickcounter``): migrate, start the daemon with the project's
settings, call a task from a view, see the result in the admin and through
the status URL; on SQLite, PostgreSQL and MariaDB, and on PostgreSQL with
Django 4.2 too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.django_versions import Django42, DjangoVersion
from tests.integration.servers import ROOT, Daemon, amqp_url, server_url, unique_queue

SETTINGS = "examples.clickcounter.settings"


class DjangoTestCase(DjangoVersion, SynchronousTestCase):
    def database_url(self) -> str:
        return f"sqlite:///{tempfile.mkdtemp(prefix='clickcounter-')}/db.sqlite3"

    def setUp(self) -> None:
        self.queue = unique_queue()
        self.env = {
            "DJANGO_SETTINGS_MODULE": SETTINGS,
            "CLICKCOUNTER_DATABASE_URL": self.database_url(),
            "TWISTEDQ_BROKER_URL": amqp_url(),
            "TWISTEDQ_QUEUE": self.queue,
            "CLICK_URL": f"http://example.com/{uuid.uuid4().hex}",
        }
        self.script("migrate")

    def script(self, mode: str) -> Any:
        env = {**os.environ, **self.env, "PYTHONPATH": self.python_path()}
        completed = subprocess.run(
            [sys.executable, "-m", "tests.integration.django_script", mode],
            capture_output=True,
            text=True,
            timeout=180,
            env=env,
            cwd=ROOT,
        )
        if completed.returncode != 0:
            raise AssertionError(f"{mode} failed:\n{completed.stdout}\n{completed.stderr}")
        return json.loads(completed.stdout.strip().splitlines()[-1])


class ClickCounterSQLiteTests(DjangoTestCase):
    """
    The whole path on the project's SQLite database.
    """

    def test_view_task_status_and_admin(self) -> None:
        """
        ``twistd twistedq --django-settings`` runs the task a view published
        (found by autodiscovery, writing with the ORM); its result is in the
        project's database, the seed's status and done URLs answer it, and
        the admin lists it under its status.
        """
        daemon = Daemon(
            Path(tempfile.mkdtemp(prefix="twistedq-django-")),
            queue=self.queue,
            result_backend="django://",
            tasks="",
            extra=("--django-settings", SETTINGS),
            env={**self.env, "PYTHONPATH": self.python_path()},
        )
        self.addCleanup(daemon.stop)
        daemon.wait_ready()
        report = self.script("click")
        task = report["status"]["task"]
        self.assertEqual((task["status"], task["result"]), ("SUCCESS", 1))
        self.assertEqual(report["done"]["task"]["executed"], True)
        self.assertEqual(report["bad_id"], 404)
        self.assertEqual(report["clicks"], 1)
        self.assertEqual(report["admin_code"], 200)
        self.assertTrue(report["admin_lists_task"])
        self.assertIn("Incremented click count for", daemon.log())


class ClickCounterPostgreSQLTests(ClickCounterSQLiteTests):
    """
    The whole path on PostgreSQL.
    """

    def database_url(self) -> str:
        return server_url("TWISTEDQ_TEST_POSTGRES_URL")


class ClickCounterMariaDBTests(ClickCounterSQLiteTests):
    """
    The whole path on MariaDB.
    """

    def database_url(self) -> str:
        return server_url("TWISTEDQ_TEST_MYSQL_URL")


class ClickCounterPostgreSQLDjango42Tests(Django42, ClickCounterPostgreSQLTests):
    """
    The whole path on PostgreSQL with Django 4.2 (daemon and project).
    """


class DelayOnCommitTests(DjangoTestCase):
    def test_publishes_only_after_commit(self) -> None:
        """
        ``delay_on_commit`` inside a rolled-back transaction publishes
        nothing; inside a committed one it publishes after the commit, not
        before.
        """
        report = self.script("on_commit")
        self.assertEqual(report["after_rollback"], 0)
        self.assertEqual(report["inside_transaction"], 0)
        self.assertEqual(report["after_commit"], 1)
