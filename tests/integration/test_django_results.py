"""
The results admin with a real daemon storing in the project's database
(the click counter example), on SQLite, PostgreSQL and MariaDB, with
Django 5.2 and 4.2 (:py:mod:`tests.integration.django_versions`):
arguments kept by ``TWISTEDQ_TASK_ARGUMENTS_IN_RESULTS`` shown, filters
by status, task, daemon, periodic task and date, the run-again and revoke
actions (and neither offered to a user who may only view), a
taskset's progress and members, the link to the live dashboard; and the
settings checked when Django starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.django_versions import Django42, DjangoVersion
from tests.integration.servers import ROOT, Daemon, amqp_url, server_url, unique_queue

SETTINGS = "examples.clickcounter.settings"


class DjangoProjectCase(DjangoVersion):
    """
    The click counter project, its database on SQLite unless a subclass
    says otherwise; ``script`` runs the test's Django process.
    """

    def database_url(self) -> str:
        return f"sqlite:///{tempfile.mkdtemp(prefix='results-admin-')}/db.sqlite3"

    def setUp(self) -> None:
        self.queue = unique_queue()
        self.name = f"daemon-{uuid.uuid4().hex[:8]}"
        self.env = {
            "DJANGO_SETTINGS_MODULE": SETTINGS,
            "CLICKCOUNTER_DATABASE_URL": self.database_url(),
            "TWISTEDQ_BROKER_URL": amqp_url(),
            "TWISTEDQ_QUEUE": self.queue,
            "TWISTEDQ_TASK_ARGUMENTS_IN_RESULTS": "true",
            "CLICK_URL": f"http://example.com/{uuid.uuid4().hex}",
            "DAEMON_NAME": self.name,
        }

    def script(self, mode: str) -> Any:
        env = {**os.environ, **self.env, "PYTHONPATH": self.python_path()}
        completed = subprocess.run(
            [sys.executable, "-m", "tests.integration.django_results_script", mode],
            capture_output=True,
            text=True,
            timeout=180,
            env=env,
            cwd=ROOT,
        )
        if completed.returncode != 0:
            raise AssertionError(f"{mode} failed:\n{completed.stdout}\n{completed.stderr}")
        return json.loads(completed.stdout.strip().splitlines()[-1])


class ResultsAdminSQLiteTests(DjangoProjectCase, SynchronousTestCase):
    """
    The results admin on SQLite.
    """

    def test_results_admin(self) -> None:
        """
        A daemon stores results with their arguments and its name, and no
        row for a task published with ignore_result; the admin filters
        them, runs one again with its arguments (and says why a pending one
        cannot be), revokes a task not yet run, shows a
        taskset's progress and members and links to the dashboard.
        """
        migrated = self.script("migrate")
        self.assertEqual(migrated["django"][:3], self.django)
        daemon = Daemon(
            Path(tempfile.mkdtemp(prefix="twistedq-results-admin-")),
            queue=self.queue,
            result_backend="django://",
            tasks="",
            extra=("--django-settings", SETTINGS, "--name", self.name),
            env={**self.env, "PYTHONPATH": self.python_path()},
        )
        self.addCleanup(daemon.stop)
        daemon.wait_ready()
        report = self.script("admin")
        self.assertEqual(
            report["titles"], ["status", "task name", "daemon", "periodic task", "date done"]
        )
        self.assertTrue(report["dashboard_link"])
        self.assertEqual(report["ignored_rows"], 0)
        self.assertEqual(
            report["found"],
            {
                "daemon": ["bad", "ok"],
                "status": ["bad"],
                "periodic": ["ok"],
                "name": ["bad"],
                "date": ["bad", "ok"],
            },
        )
        self.assertTrue(report["detail_has_arguments"])
        messages = "\n".join(report["messages"])
        self.assertIn("Published again as increment_click[", messages)
        self.assertIn(
            f"[{report['ids']['later']}] not run again: its arguments were not stored", messages
        )
        self.assertIn("1 of 1 task(s) revoked.", messages)
        self.assertEqual(report["later_status"], "REVOKED")
        self.assertEqual(report["reran_with"], [[self.env["CLICK_URL"]]])
        self.assertTrue(report["taskset_progress"])
        self.assertTrue(report["taskset_members"])
        self.assertEqual(report["viewer_actions"], [])


class ResultsAdminPostgreSQLTests(ResultsAdminSQLiteTests):
    """
    The results admin on PostgreSQL.
    """

    def database_url(self) -> str:
        return server_url("TWISTEDQ_TEST_POSTGRES_URL")


class ResultsAdminMariaDBTests(ResultsAdminSQLiteTests):
    """
    The results admin on MariaDB.
    """

    def database_url(self) -> str:
        return server_url("TWISTEDQ_TEST_MYSQL_URL")


class ResultsAdminSQLiteDjango42Tests(Django42, ResultsAdminSQLiteTests):
    """
    The results admin on SQLite, with Django 4.2.
    """


class ResultsAdminPostgreSQLDjango42Tests(Django42, ResultsAdminPostgreSQLTests):
    """
    The results admin on PostgreSQL, with Django 4.2.
    """


class ResultsAdminMariaDBDjango42Tests(Django42, ResultsAdminMariaDBTests):
    """
    The results admin on MariaDB, with Django 4.2.
    """


class SettingsCheckTests(DjangoProjectCase, SynchronousTestCase):
    """
    The settings checked when Django starts (the database plays no part).
    """

    def test_settings_checked_at_start(self) -> None:
        """
        A wrong value of a twistedq setting stops ``manage.py check`` (any
        Django start) with an error naming the setting.
        """
        folder = Path(tempfile.mkdtemp(prefix="results-settings-"))
        (folder / "wrongsettings.py").write_text(
            textwrap.dedent(
                f"""
                from {SETTINGS} import *  # noqa
                TWISTEDQ_RESULT_EXPIRES = "1 day"
                """
            )
        )
        env = {
            **os.environ,
            **self.env,
            "DJANGO_SETTINGS_MODULE": "wrongsettings",
            "PYTHONPATH": os.pathsep.join([str(folder), self.python_path()]),
        }
        completed = subprocess.run(
            [sys.executable, "-m", "django", "check"],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=ROOT,
        )
        self.assertNotEqual(completed.returncode, 0)
        self.assertIn("ImproperlyConfigured: TWISTEDQ_RESULT_EXPIRES must be", completed.stderr)


class SettingsCheckDjango42Tests(Django42, SettingsCheckTests):
    """
    The settings checked when Django 4.2 starts.
    """
