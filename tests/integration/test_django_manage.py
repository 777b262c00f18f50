"""
``python manage.py twistedq`` from a project made by ``django-admin
startproject``, run with nothing but the virtual environment: no
``PYTHONPATH``, no ``DJANGO_SETTINGS_MODULE``, no ``TWISTEDQ_*`` variable
(the test servers' URLs are settings).  The daemon it starts runs a task
a view publishes; its status site is off unless asked for or configured;
a wrong ``TWISTEDQ_STATUS_ENDPOINT`` stops it naming the setting.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.integration.django_versions import django42_path
from tests.integration.servers import amqp_url, free_port, unique_queue

BIN = Path(sys.executable).parent

TASKS = """
from twistedq.task import tasks


def add(x, y):
    return x + y


tasks.register(add, "jobs.add")
"""

VIEWS = """
from django.http import JsonResponse

from twistedq.task import delay_task


def add(request):
    result = delay_task("jobs.add", int(request.GET["x"]), int(request.GET["y"]))
    return JsonResponse({"task_id": result.task_id})
"""

URLS = """
from django.contrib import admin
from django.urls import include, path

from jobs.views import add

urlpatterns = [
    path("admin/", admin.site.urls),
    path("add/", add),
    path("", include("twistedq.contrib.django.urls")),
]
"""

SETTINGS = """
INSTALLED_APPS += ["twistedq.contrib.django", "jobs"]
TWISTEDQ_BROKER_URL = {broker!r}
TWISTEDQ_QUEUE = {queue!r}
TWISTEDQ_RESULT_BACKEND = "django://"
DATABASES["default"]["OPTIONS"] = {{"timeout": 30}}
ALLOWED_HOSTS = ["testserver", "127.0.0.1"]
"""

#: Publish from the view through Django's test client, then read the
#: status URL until the task is done; prints the last status document.
CLICK = """
import json, time
from django.test import Client
client = Client()
task_id = json.loads(client.get("/add/?x=2&y=40").content)["task_id"]
deadline = time.monotonic() + 60
while True:
    document = json.loads(client.get(f"/celery/{task_id}/status/").content)
    if document["task"]["status"] != "PENDING" or time.monotonic() > deadline:
        break
    time.sleep(0.1)
print(json.dumps(document))
"""


def bare_environment(home: Path) -> dict[str, str]:
    """
    The environment of a shell where only the virtual environment is
    on ``PATH``.
    """
    return {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}


def listening_ports(pid: int) -> set[int]:
    """
    The TCP ports process ``pid`` listens on (from ``/proc``).
    """
    sockets = set()
    for descriptor in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(descriptor)
        if target.startswith("socket:["):
            sockets.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in sockets:  # LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


class ManagePyCase(SynchronousTestCase):
    """
    A project made by ``startproject``, migrated; no tests of its own.
    """

    def setUp(self) -> None:
        self.project = Path(tempfile.mkdtemp(prefix="manage-"))
        self.queue = unique_queue()
        self.env = {**bare_environment(self.project), **self.extra_environment()}
        self.run_in(str(BIN / "django-admin"), "startproject", "mysite", ".")
        self.run_in(sys.executable, "manage.py", "startapp", "jobs")
        (self.project / "jobs" / "tasks.py").write_text(TASKS)
        (self.project / "jobs" / "views.py").write_text(VIEWS)
        (self.project / "mysite" / "urls.py").write_text(URLS)
        self.add_settings(SETTINGS.format(broker=amqp_url(), queue=self.queue))
        self.run_in(sys.executable, "manage.py", "migrate")

    def extra_environment(self) -> dict[str, str]:
        """
        Variables beyond the bare environment: none.
        """
        return {}

    def add_settings(self, text: str) -> None:
        with open(self.project / "mysite" / "settings.py", "a") as settings:
            settings.write(text)

    def run_in(self, *command: str) -> str:
        completed = subprocess.run(
            command, cwd=self.project, env=self.env, capture_output=True, text=True, timeout=120
        )
        if completed.returncode != 0:
            raise AssertionError(f"{command} failed:\n{completed.stdout}\n{completed.stderr}")
        return completed.stdout

    def start_daemon(self, *options: str) -> tuple[subprocess.Popen[bytes], Path]:
        """
        ``manage.py twistedq -n`` with ``options``, in the foreground,
        logging to a file; returns once its children started and it
        consumes.
        """
        log = Path(tempfile.mkdtemp(dir=self.project)) / "daemon.log"
        daemon = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "twistedq",
                "-n",
                "--logfile",
                str(log),
                "--concurrency",
                "2",
                *options,
            ],
            cwd=self.project,
            env=self.env,
            stderr=subprocess.PIPE,
        )

        def stop() -> None:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
            daemon.communicate(timeout=60)

        self.addCleanup(stop)
        deadline = time.monotonic() + 60
        while True:
            text = log.read_text(errors="replace") if log.exists() else ""
            if "Consuming" in text and text.count("Started Process-") >= 2:
                return daemon, log
            if daemon.poll() is not None:
                _, stderr = daemon.communicate()
                raise AssertionError(f"daemon exited {daemon.returncode}:\n{stderr!r}\n{text}")
            if time.monotonic() > deadline:
                raise AssertionError(f"daemon not ready:\n{text}")
            time.sleep(0.1)


class ManagePyTwistedqTests(ManagePyCase):
    def test_task_from_a_view(self) -> None:
        """
        The daemon started by ``manage.py twistedq -n`` in the project's
        folder, with no environment, reads the project's settings (broker,
        queue, the django:// store), finds ``jobs/tasks.py`` and runs the
        task a view published; it serves no status site (nothing was
        configured) and writes its pid file where twistd does.
        """
        daemon, log = self.start_daemon()
        output = self.run_in(sys.executable, "manage.py", "shell", "-c", CLICK)
        document = json.loads(output.strip().splitlines()[-1])
        self.assertEqual(document["task"]["status"], "SUCCESS", document)
        self.assertEqual(document["task"]["result"], 42)
        self.assertEqual(listening_ports(daemon.pid), set())
        self.assertTrue((self.project / "twistd.pid").exists())
        daemon.send_signal(signal.SIGTERM)
        # twistd ends by the signal that stopped it, as twistd does.
        self.assertIn(daemon.wait(timeout=60), (0, -signal.SIGTERM))
        self.assertIn("Main loop terminated", log.read_text())

    def test_operations_subcommand(self) -> None:
        """
        ``manage.py twistedq result ID`` reaches the operations command,
        which reads the project's settings: the pending record the view's
        publish left in the django:// store (not the default SQLite file);
        ``purge --yes`` empties the project's queue.
        """
        try:
            from twistedq.cli import main  # noqa: F401
        except ImportError:
            raise SkipTest("this twistedq has no operations command (twistedq.cli.main)") from None
        published = self.run_in(
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            "from django.test import Client; print(Client().get('/add/?x=1&y=2').content.decode())",
        )
        task_id = json.loads(published.strip().splitlines()[-1])["task_id"]
        output = self.run_in(sys.executable, "manage.py", "twistedq", "result", task_id, "--json")
        self.assertEqual(json.loads(output)["status"], "PENDING")
        output = self.run_in(sys.executable, "manage.py", "twistedq", "purge", "--yes")
        self.assertIn(f"1 tasks purged from {self.queue}", output)

    def test_status_site_configured(self) -> None:
        """
        ``TWISTEDQ_STATUS_ENDPOINT`` puts the status site on its endpoint;
        ``--status`` given on the command line wins over it.
        """
        configured, given = free_port(), free_port()
        self.add_settings(f"TWISTEDQ_STATUS_ENDPOINT = 'tcp:{configured}:interface=127.0.0.1'\n")
        daemon, _ = self.start_daemon("--pidfile=")
        self.assertEqual(listening_ports(daemon.pid), {configured})
        with urllib.request.urlopen(f"http://127.0.0.1:{configured}/stats", timeout=10) as page:
            self.assertIn("pool", json.load(page))
        self.start_daemon("--pidfile=", "--status", f"tcp:{given}:interface=127.0.0.1")
        with urllib.request.urlopen(f"http://127.0.0.1:{given}/stats", timeout=10) as page:
            self.assertIn("pool", json.load(page))

    def test_wrong_endpoint_setting(self) -> None:
        """
        A ``TWISTEDQ_STATUS_ENDPOINT`` Twisted cannot parse stops the
        command at once with an error naming the setting.
        """
        self.add_settings("TWISTEDQ_STATUS_ENDPOINT = 'tcp:http'\n")
        completed = subprocess.run(
            [sys.executable, "manage.py", "twistedq", "-n", "--pidfile="],
            cwd=self.project,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertEqual(completed.returncode, 1)
        self.assertIn("TWISTEDQ_STATUS_ENDPOINT", completed.stderr)
        self.assertIn("'tcp:http'", completed.stderr)


class ManagePyTwistedqDjango42Tests(ManagePyCase):
    """
    The task from a view with Django 4.2, the one variable set being the
    ``PYTHONPATH`` that puts it first (the project is made by its
    ``startproject``).
    """

    def extra_environment(self) -> dict[str, str]:
        return {"PYTHONPATH": django42_path()}

    def test_task_from_a_view(self) -> None:
        """
        As on Django 5.2 (:py:meth:`ManagePyTwistedqTests.test_task_from_a_view`).
        """
        self.assertTrue(self.run_in(sys.executable, "manage.py", "version").startswith("4.2"))
        ManagePyTwistedqTests.test_task_from_a_view(self)  # type: ignore[arg-type]
