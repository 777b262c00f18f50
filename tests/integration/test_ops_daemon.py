"""
Operating ``twistd twistedq`` as a user would: started in a project's
folder without ``PYTHONPATH``, with the task modules and the Django
settings found there, in the daemon and in its children; its log level;
its health check and figures while Redis is down.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.integration.servers import amqp_url, free_port, redis_url, unique_queue
from twistedq.client import AsyncClient
from twistedq.conf import Settings
from twistedq.message import TaskMessage, new_task_id
from twistedq.outcome import Outcome

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")

TASKS = """
import logging
import os

from twisted.internet import defer

from twistedq.log import setup_logger
from twistedq.task import task


@task(name="{prefix}.where")
def where():
    return os.getpid()


@task(name="{prefix}.chatty")
def chatty(**kwargs):
    setup_logger(**kwargs).info("chatty says hello")
    return 1


@task(name="{prefix}.whisper")
def whisper(**kwargs):
    setup_logger(**kwargs).debug("whisper through setup_logger")
    logging.getLogger("{prefix}.tasks").debug("whisper through logging")
    return 1


@task(name="{prefix}.fails")
def fails():
    return 1 / 0


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


class ProjectTestCase(TestCase):
    """
    A project folder with a task module, and a client on a queue of its own.
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


class ProjectFolderTests(ProjectTestCase):
    """
    ``twistd twistedq`` imports from the folder it was started in, as
    ``celeryd`` did: no ``PYTHONPATH=.`` needed.
    """

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


class LogLevelTests(ProjectTestCase):
    def start_at(self, level: str) -> ProjectDaemon:
        """
        A daemon of the project's tasks, one child, logging from ``level``.
        """
        daemon = ProjectDaemon(
            self.project,
            self.project / "twistd.log",
            "--broker",
            amqp_url(),
            "--result-backend",
            redis_url(),
            "--queue",
            self.queue,
            "--concurrency",
            "1",
            "--status",
            "none",
            "--tasks",
            f"{self.prefix}_tasks",
            "--loglevel",
            level,
        )
        self.addCleanup(daemon.stop)
        return daemon

    async def test_warning_level(self) -> None:
        """
        With ``--loglevel WARNING`` the daemon's log keeps a task's
        failure and leaves out the INFO lines: the daemon's own and a
        task's ``logger.info``.
        """
        daemon = self.start_at("WARNING")
        self.assertEqual((await self.run_task("chatty")).status, "SUCCESS")
        self.assertEqual((await self.run_task("fails")).status, "FAILURE")
        daemon.stop()
        lines = [line for line in daemon.log().splitlines() if line.startswith("[")]
        self.assertTrue(any("raised ZeroDivisionError" in line for line in lines), lines)
        self.assertFalse(any("INFO/" in line for line in lines), lines)
        self.assertNotIn("chatty says hello", daemon.log())

    async def test_debug_level_reaches_the_children(self) -> None:
        """
        With ``--loglevel DEBUG`` a task's DEBUG lines are written, through
        ``setup_logger`` and through ``logging`` alike: the children log
        at the daemon's level.
        """
        daemon = self.start_at("DEBUG")
        self.assertEqual((await self.run_task("whisper")).status, "SUCCESS")
        daemon.stop()
        log = daemon.log()
        self.assertIn("whisper through setup_logger", log)
        self.assertIn("whisper through logging", log)


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


class StoreOutageTests(TestCase):
    """
    The status site during a Redis outage, on a Redis server of the
    test's own.
    """

    timeout = 120

    def start_redis(self, port: int, directory: Path) -> subprocess.Popen[bytes]:
        redis = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(directory),
            ],
            stdout=subprocess.DEVNULL,
        )
        self.addCleanup(lambda: redis.poll() is None and (redis.kill(), redis.wait()))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return redis
            except OSError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    async def test_health_and_stats(self) -> None:
        """
        While Redis is down, ``/`` answers 503 and ``/stats`` 200 with its
        figures, ``store_available`` false and since when; once Redis is
        back, ``/`` answers 200 again.
        """
        amqp = amqp_url()
        directory = Path(tempfile.mkdtemp(prefix="twistedq-ops-outage-"))
        port = free_port()
        redis = self.start_redis(port, directory)
        queue = unique_queue()
        status_port = free_port()
        daemon = ProjectDaemon(
            directory,
            directory / "twistd.log",
            "--broker",
            amqp,
            "--result-backend",
            f"redis://127.0.0.1:{port}/0",
            "--queue",
            queue,
            "--concurrency",
            "1",
            "--status",
            f"tcp:{status_port}:interface=127.0.0.1",
        )
        self.addCleanup(daemon.stop)
        daemon.wait_ready(children=1)
        base = f"http://127.0.0.1:{status_port}"
        self.assertEqual(_get(f"{base}/"), (200, {"service": "twistedq"}))
        code, stats = _get(f"{base}/stats")
        self.assertEqual((code, stats["store_available"]), (200, True))

        redis.terminate()
        redis.wait()
        # A task arriving meets the outage (the daemon may also find it by itself).
        client = AsyncClient(
            Settings(broker_url=amqp, result_backend="memory://", queue=queue), reactor
        )
        self.addCleanup(client.close)
        await client.publish(TaskMessage(id=new_task_id(), task="nothing.here"))
        deadline = time.monotonic() + 60
        while _get(f"{base}/")[0] != 503:
            self.assertLess(time.monotonic(), deadline, daemon.log()[-3000:])
            await deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(
            _get(f"{base}/"), (503, {"service": "twistedq", "error": "result store unavailable"})
        )
        code, stats = _get(f"{base}/stats")
        self.assertEqual(code, 200)
        self.assertFalse(stats["store_available"])
        self.assertFalse(stats["dispatcher"]["store_available"])
        self.assertIn("pool", stats)
        self.assertRegex(stats["store_unavailable_since"], r"^\d{4}-\d\d-\d\dT.*\+00:00$")

        self.start_redis(port, directory)
        deadline = time.monotonic() + 90
        while _get(f"{base}/")[0] != 200:
            self.assertLess(time.monotonic(), deadline, daemon.log()[-3000:])
            await deferLater(reactor, 0.2, lambda: None)
        code, stats = _get(f"{base}/stats")
        self.assertEqual(
            (code, stats["store_available"], stats["store_unavailable_since"]), (200, True, None)
        )
