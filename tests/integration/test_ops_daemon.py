"""
Operating ``twistd twistedq`` as a user would: started in a project's
folder without ``PYTHONPATH``, with the task modules and the Django
settings found there, in the daemon and in its children.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.integration.servers import amqp_url, redis_url, unique_queue
from twistedq.client import AsyncClient
from twistedq.conf import Settings
from twistedq.message import TaskMessage, new_task_id
from twistedq.outcome import Outcome

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")

TASKS = """
import os

from twisted.internet import defer

from twistedq.task import task


@task(name="{prefix}.where")
def where():
    return os.getpid()


@task(name="{prefix}.on_reactor", on_reactor=True)
def on_reactor():
    return defer.succeed(os.getpid())
"""

DJANGO_SETTINGS = """
SECRET_KEY = "ops"
INSTALLED_APPS = []
DATABASES = {{}}
TWISTEDQ_QUEUE = {queue!r}
"""


class ProjectDaemon:
    """
    ``twistd -n twistedq`` started in ``cwd`` with the environment of a
    shell that never set ``PYTHONPATH``.
    """

    def __init__(self, cwd: Path, log: Path, *args: str, twistd_args: tuple[str, ...] = ()):
        self.log_path = log
        env = {
            k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE")
        }
        command = [TWISTD, "-n", "--pidfile=", "--logfile", str(log), *twistd_args, "twistedq"]
        self.process = subprocess.Popen([*command, *args], cwd=cwd, env=env)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_ready(self, children: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log()
            if "Consuming" in text and text.count("Started Process-") >= children:
                return
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited with {self.process.returncode}:\n{text}")
            time.sleep(0.05)
        raise AssertionError(f"daemon not ready within {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class ProjectFolderTests(TestCase):
    """
    ``twistd twistedq`` imports from the folder it was started in, as
    ``celeryd`` did: no ``PYTHONPATH=.`` needed.
    """

    timeout = 120

    def setUp(self) -> None:
        self.project = Path(tempfile.mkdtemp(prefix="twistedq-ops-project-"))
        self.prefix = f"opsb{uuid.uuid4().hex[:8]}"
        (self.project / f"{self.prefix}_tasks.py").write_text(TASKS.format(prefix=self.prefix))
        self.queue = unique_queue()
        self.client = AsyncClient(
            Settings(broker_url=amqp_url(), result_backend=redis_url(), queue=self.queue), reactor
        )
        self.addCleanup(self.client.close)

    def start(self, *args: str, twistd_args: tuple[str, ...] = ()) -> ProjectDaemon:
        daemon = ProjectDaemon(
            self.project,
            self.project / "twistd.log",
            "--broker",
            amqp_url(),
            "--result-backend",
            redis_url(),
            "--concurrency",
            "1",
            "--status",
            "none",
            "--tasks",
            f"{self.prefix}_tasks",
            *args,
            twistd_args=twistd_args,
        )
        self.addCleanup(daemon.stop)
        daemon.wait_ready(children=1)
        return daemon

    async def run_task(self, name: str) -> Outcome:
        message = TaskMessage(id=new_task_id(), task=f"{self.prefix}.{name}")
        await self.client.publish(message)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            (outcome,) = await self.client.get_outcomes([message.id])
            if outcome.ready:
                return outcome
            await deferLater(reactor, 0.05, lambda: None)
        raise AssertionError(f"{name} not done within 30 s")

    async def test_tasks_django_settings_and_reactor_tasks(self) -> None:
        """
        Started in the project's folder without ``PYTHONPATH``: the Django
        settings module there is read (its ``TWISTEDQ_QUEUE`` is the queue
        consumed), ``--reactor-tasks`` imports the task module in the
        daemon, and the children import it too and run its tasks.
        """
        site = self.project / f"{self.prefix}_site"
        site.mkdir()
        (site / "__init__.py").write_text("")
        (site / "settings.py").write_text(DJANGO_SETTINGS.format(queue=self.queue))
        daemon = self.start("--django-settings", f"{self.prefix}_site.settings", "--reactor-tasks")
        child = await self.run_task("where")
        self.assertEqual(child.status, "SUCCESS", child)
        in_daemon = await self.run_task("on_reactor")
        self.assertEqual((in_daemon.status, in_daemon.result), ("SUCCESS", daemon.process.pid))
        self.assertNotEqual(child.result, daemon.process.pid)

    async def test_rundir_elsewhere(self) -> None:
        """
        With twistd's ``--rundir`` (``-d``) pointing elsewhere, the folder
        ``twistd`` was started in is still where the children import from.
        """
        elsewhere = Path(tempfile.mkdtemp(prefix="twistedq-ops-rundir-"))
        self.start("--queue", self.queue, twistd_args=("--rundir", str(elsewhere)))
        outcome = await self.run_task("where")
        self.assertEqual(outcome.status, "SUCCESS", outcome)
