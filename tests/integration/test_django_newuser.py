"""
A Django developer's first five minutes, as a test: ``django-admin
startproject``, add the app and a ``tasks.py``, migrate, start the daemon
with the project's settings, serve the project with gunicorn ``--preload``
and two workers, call a task from a view from 20 threads at once, and find
every result in the database and through the status URL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.servers import Daemon, amqp_url, free_port, unique_queue

BIN = Path(sys.executable).parent

MODELS = """
from django.db import models


class ClickCount(models.Model):
    url = models.CharField(max_length=200, unique=True)
    clicks = models.PositiveIntegerField(default=0)
"""

TASKS = """
from django.db.models import F

from clicks.models import ClickCount
from twistedq.task import tasks


def increment_click(for_url, **kwargs):
    ClickCount.objects.get_or_create(url=for_url)
    ClickCount.objects.filter(url=for_url).update(clicks=F("clicks") + 1)
    return ClickCount.objects.get(url=for_url).clicks


tasks.register(increment_click, "increment_click")
"""

VIEWS = """
from django.http import JsonResponse

from twistedq.task import delay_task


def click(request):
    result = delay_task("increment_click", request.GET["url"])
    return JsonResponse({"task_id": result.task_id})
"""

URLS = """
from django.contrib import admin
from django.urls import include, path

from clicks.views import click

urlpatterns = [
    path("admin/", admin.site.urls),
    path("click/", click),
    path("", include("twistedq.contrib.django.urls")),
]
"""

SETTINGS = """
INSTALLED_APPS += ["twistedq.contrib.django", "clicks"]
TWISTEDQ_BROKER_URL = {broker!r}
TWISTEDQ_QUEUE = {queue!r}
TWISTEDQ_RESULT_BACKEND = "django://"
DATABASES["default"]["OPTIONS"] = {{"timeout": 30}}
ALLOWED_HOSTS = ["127.0.0.1"]
"""


class NewProjectTests(SynchronousTestCase):
    def run_in(self, directory: Path, *command: str) -> str:
        env = dict(os.environ, PYTHONPATH=str(directory), DJANGO_SETTINGS_MODULE="mysite.settings")
        completed = subprocess.run(
            command, cwd=directory, env=env, capture_output=True, text=True, timeout=120
        )
        if completed.returncode != 0:
            raise AssertionError(f"{command} failed:\n{completed.stdout}\n{completed.stderr}")
        return completed.stdout

    def test_new_project_with_gunicorn_preload(self) -> None:
        """
        In a project made by ``startproject``, 100 clicks from 20 threads
        on a view served by gunicorn ``--preload -w 2`` each publish one
        task; each runs exactly once in the daemon: the counter ends at 100
        and every task's status URL answers SUCCESS.  The daemon is started
        in the project's folder without the project on ``PYTHONPATH``.
        """
        project = Path(tempfile.mkdtemp(prefix="mysite-"))
        queue = unique_queue()
        self.run_in(project, str(BIN / "django-admin"), "startproject", "mysite", ".")
        self.run_in(project, sys.executable, "manage.py", "startapp", "clicks")
        (project / "clicks" / "models.py").write_text(MODELS)
        (project / "clicks" / "tasks.py").write_text(TASKS)
        (project / "clicks" / "views.py").write_text(VIEWS)
        (project / "mysite" / "urls.py").write_text(URLS)
        with open(project / "mysite" / "settings.py", "a") as settings:
            settings.write(SETTINGS.format(broker=amqp_url(), queue=queue))
        self.run_in(project, sys.executable, "manage.py", "makemigrations", "clicks")
        self.run_in(project, sys.executable, "manage.py", "migrate")

        daemon = Daemon(
            project,
            queue=queue,
            result_backend="django://",
            tasks="",
            extra=("--django-settings", "mysite.settings"),
        )
        self.addCleanup(daemon.stop)
        daemon.wait_ready()

        port = free_port()
        gunicorn = subprocess.Popen(
            [
                str(BIN / "gunicorn"),
                "--preload",
                "-w",
                "2",
                "-b",
                f"127.0.0.1:{port}",
                "mysite.wsgi",
            ],
            cwd=project,
            env=dict(os.environ, PYTHONPATH=str(project)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.addCleanup(gunicorn.wait)
        self.addCleanup(gunicorn.terminate)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{base}/admin/login/", timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

        task_ids: list[str] = []
        lock = threading.Lock()

        def clicks() -> None:
            for _ in range(5):
                with urllib.request.urlopen(f"{base}/click/?url=home", timeout=30) as response:
                    task_id = json.load(response)["task_id"]
                with lock:
                    task_ids.append(task_id)

        threads = [threading.Thread(target=clicks) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(len(set(task_ids)), 100)

        statuses: dict[str, str] = {}
        deadline = time.monotonic() + 90
        while len(statuses) < 100 and time.monotonic() < deadline:
            for task_id in task_ids:
                if task_id in statuses:
                    continue
                url = f"{base}/celery/{task_id}/status/"
                with urllib.request.urlopen(url, timeout=30) as response:
                    status = json.load(response)["task"]["status"]
                if status != "PENDING":
                    statuses[task_id] = status
            time.sleep(0.1)
        self.assertEqual(set(statuses.values()), {"SUCCESS"})
        self.assertEqual(len(statuses), 100)
        count = self.run_in(
            project,
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            "from clicks.models import ClickCount; "
            "from twistedq.contrib.django.models import TaskResult; "
            "print(ClickCount.objects.get(url='home').clicks, "
            "TaskResult.objects.filter(status='SUCCESS').count())",
        )
        self.assertEqual(count.split()[-2:], ["100", "100"])
