"""
Periodic tasks defined in the Django admin, as a user defines them: log in
through the login form, add an interval schedule and a periodic task
through the admin's add forms (real POSTs with their CSRF tokens, as a
browser sends them), and watch two ``twistd twistedq`` daemons run it once
per slot, follow an edit within seconds, and stop when it is disabled.
SQLite; the project is ``tests/integration/scheduleproject``.
"""

from __future__ import annotations

import html
import http.cookiejar
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.servers import (
    ROOT,
    Daemon,
    amqp_url,
    free_port,
    server_url,
    unique_queue,
)
from twistedq.scheduler import slot_task_id

SETTINGS = "tests.integration.scheduleproject.settings"
BIN = Path(sys.executable).parent
PASSWORD = "a-password-for-the-test"


class Browser:
    """
    Pages of one site with a browser's cookies, CSRF tokens and Origin.
    """

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, path: str) -> str:
        with self.opener.open(self.base + path, timeout=30) as response:
            return response.read().decode()

    def submit(self, path: str, fields: dict[str, Any]) -> tuple[str, str]:
        """
        Fetch the form at ``path`` and post ``fields`` with its CSRF token;
        the page answered and its address (after redirects).
        """
        page = self.get(path)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert token is not None, page
        body = urllib.parse.urlencode({"csrfmiddlewaretoken": token.group(1), **fields}, True)
        request = urllib.request.Request(
            self.base + path,
            data=body.encode(),
            headers={"Origin": self.base, "Referer": self.base + path},
        )
        with self.opener.open(request, timeout=30) as response:
            return response.read().decode(), response.geturl()


def python_path() -> str:
    """
    The project's folder first, then the path given (a Django of another
    version, say).
    """
    return os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])


def option_value(page: str, text: str) -> str:
    """
    The value of the ``<option>`` showing ``text`` in a form page.
    """
    found = re.search(rf'<option value="(\d+)"[^>]*>{re.escape(text)}</option>', page)
    assert found is not None, f"no option {text!r}"
    return found.group(1)


class AdminScheduleTests(SynchronousTestCase):
    """
    On SQLite.
    """

    def database_url(self) -> str:
        return f"sqlite:///{self.directory}/db.sqlite3"

    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="twistedq-schedules-"))
        self.beats = self.directory / "beats.txt"
        self.beats.touch()
        self.queue = unique_queue()
        self.env = {
            "DJANGO_SETTINGS_MODULE": SETTINGS,
            "BEATS_DATABASE_URL": self.database_url(),
            "BEATS_FILE": str(self.beats),
            "TWISTEDQ_BROKER_URL": amqp_url(),
            "TWISTEDQ_QUEUE": self.queue,
        }
        self.django("migrate")
        # Names of their own: a PostgreSQL or MariaDB database outlives the test.
        self.periodic_name = f"beat-{uuid.uuid4().hex[:8]}"
        self.user = f"admin-{uuid.uuid4().hex[:8]}"
        self.django(
            "shell",
            "-c",
            "from django.contrib.auth.models import User; "
            "from twistedq.contrib.django.models import PeriodicTaskState; "
            "PeriodicTaskState.objects.filter(name__startswith='beat-').delete(); "
            f"User.objects.create_superuser({self.user!r}, 'a@b.example', {PASSWORD!r})",
        )

    def django(self, *command: str) -> str:
        env = dict(os.environ, PYTHONPATH=python_path(), **self.env)
        completed = subprocess.run(
            [str(BIN / "django-admin"), *command],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=self.directory,
        )
        if completed.returncode != 0:
            raise AssertionError(f"{command} failed:\n{completed.stdout}\n{completed.stderr}")
        return completed.stdout

    def serve(self) -> Browser:
        port = free_port()
        server = subprocess.Popen(
            [str(BIN / "django-admin"), "runserver", "--noreload", f"127.0.0.1:{port}"],
            env=dict(os.environ, PYTHONPATH=python_path(), **self.env),
            cwd=self.directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.addCleanup(server.wait)
        self.addCleanup(server.terminate)
        browser = Browser(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        while True:
            try:
                browser.get("/admin/login/")
                return browser
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def daemon(self, number: int) -> Daemon:
        directory = self.directory / f"daemon-{number}"
        directory.mkdir()
        daemon = Daemon(
            directory,
            queue=self.queue,
            result_backend="django://",
            tasks="",
            extra=("--django-settings", SETTINGS),
            env=self.env,
        )
        self.addCleanup(daemon.stop)
        return daemon

    def runs(self) -> list[tuple[str, str]]:
        """
        The task id and process of every run of the task so far.
        """
        lines = self.beats.read_text().splitlines()
        return [(line.split()[0], line.split()[2]) for line in lines]

    def slots(self) -> dict[float, int]:
        """
        The slots run so far (found from their task ids), each to how
        often it ran.
        """
        now = int(time.time())
        names = {
            slot_task_id(self.periodic_name, float(s)): float(s) for s in range(now - 120, now + 5)
        }
        counts: dict[float, int] = {}
        for task_id, _ in self.runs():
            if task_id in names:
                counts[names[task_id]] = counts.get(names[task_id], 0) + 1
        return counts

    def wait_for(self, condition: Any, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                self.fail(f"not within {timeout} s; slots run: {sorted(self.slots())}")
            time.sleep(0.1)

    def test_defined_in_admin_run_once_edited_disabled(self) -> None:
        """
        A task added through the admin's forms runs on its 2-second slots,
        each once across two daemons, which both schedule it; edited to a
        1-second interval, its first odd slot comes within 5 s of the
        save; disabled, no slot later than 5 s after the save runs.  The
        stored run count equals the slots run: no slot was published twice.
        """
        daemons = [self.daemon(1), self.daemon(2)]
        # Runs first: both drain at once, then each stop waits for its own.
        self.addCleanup(
            lambda: [d.process.terminate() for d in daemons if d.process.poll() is None]
        )
        browser = self.serve()
        for daemon in daemons:
            daemon.wait_ready()
        page, url = browser.submit(
            "/admin/login/?next=/admin/",
            {"username": self.user, "password": PASSWORD},
        )
        self.assertTrue(url.endswith("/admin/"), url)
        for every in ("2", "1"):
            page, url = browser.submit(
                "/admin/twistedq/intervalschedule/add/", {"every": every, "period": "seconds"}
            )
            self.assertTrue(url.endswith("/admin/twistedq/intervalschedule/"), page)
        form = browser.get("/admin/twistedq/periodictaskstate/add/")
        fields = {
            "name": self.periodic_name,
            "task": "beats.record",
            "interval": option_value(form, "every 2 seconds"),
            "args": '["tick"]',
            "kwargs": "{}",
            "enabled": "on",
        }
        page, url = browser.submit("/admin/twistedq/periodictaskstate/add/", fields)
        self.assertTrue(url.endswith("/admin/twistedq/periodictaskstate/"), page)
        self.assertIn("every 2 seconds", page)

        self.wait_for(lambda: len(self.slots()) >= 2)
        self.assertEqual({slot % 2 for slot in self.slots()}, {0})
        for daemon in daemons:
            self.assertIn(f"Periodic task {self.periodic_name} defined: beats.record", daemon.log())

        change = re.search(r'href="(/admin/twistedq/periodictaskstate/(\d+)/change/[^"]*)"', page)
        assert change is not None
        fields["interval"] = option_value(form, "every 1 second")
        page, url = browser.submit(html.unescape(change.group(1)), fields)
        edited = time.time()
        self.assertIn("every 1 second", page)
        self.wait_for(lambda: any(slot % 2 for slot in self.slots()))
        self.assertLessEqual(min(slot for slot in self.slots() if slot % 2), edited + 5)
        self.wait_for(lambda: len([slot for slot in self.slots() if slot % 2]) >= 2)

        del fields["enabled"]
        browser.submit(html.unescape(change.group(1)), fields)
        disabled = time.time()
        time.sleep(7)  # what would run meanwhile if the task went on
        slots = self.slots()
        self.assertEqual(len(self.runs()), sum(slots.values()), "a run that is no slot")
        self.assertLessEqual(max(slots), disabled + 5)
        self.assertEqual(set(slots.values()), {1}, "a slot ran twice")
        first, odd, last = min(slots), min(s for s in slots if s % 2), max(slots)
        # Every slot of each interval in its time: none missed, none extra.
        expected = {s for s in range(int(first), int(odd)) if s % 2 == 0}
        expected.update(range(int(odd), int(last) + 1))
        self.assertEqual({int(s) for s in slots}, expected)
        count = self.django(
            "shell",
            "-c",
            "from twistedq.contrib.django.models import PeriodicTaskState as P; "
            f"print(P.objects.get(name={self.periodic_name!r}).total_run_count)",
        )
        self.assertEqual(int(count.split()[-1]), len(slots))

        # Run now: published at once, with its arguments, though disabled.
        listing = "/admin/twistedq/periodictaskstate/"
        fields = {"action": "run_now", "_selected_action": change.group(2), "index": "0"}
        page, url = browser.submit(listing, fields)
        self.assertIn(f"Published {self.periodic_name} (", page)
        self.wait_for(lambda: len(self.runs()) > len(slots))
        self.assertEqual(self.slots(), slots)
        self.assertEqual(self.beats.read_text().splitlines()[-1].split()[1], "tick")


class AdminSchedulePostgreSQLTests(AdminScheduleTests):
    """
    On PostgreSQL.
    """

    def database_url(self) -> str:
        return server_url("TWISTEDQ_TEST_POSTGRES_URL")


class AdminScheduleMariaDBTests(AdminScheduleTests):
    """
    On MariaDB.
    """

    def database_url(self) -> str:
        return server_url("TWISTEDQ_TEST_MYSQL_URL")
