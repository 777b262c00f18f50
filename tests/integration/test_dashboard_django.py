"""
The dashboard and the taskset progress stream served by the Django app,
tried in a process of their own (the script below) with a real daemon,
RabbitMQ and Redis: the page only for staff, actions only for users with
the permission and Django's CSRF token, the stream showing the daemon, and
a 20-task taskset's progress streamed to 100 %.
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

from tests.integration.servers import ROOT, Daemon, amqp_url, redis_url, unique_queue

SCRIPT = r'''
import json, os, sys, time, uuid
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="twistedq-dashboard",
    ALLOWED_HOSTS=["testserver"],
    USE_TZ=True,
    INSTALLED_APPS=[
        "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
        "django.contrib.sessions", "django.contrib.messages", "twistedq.contrib.django",
    ],
    MIDDLEWARE=[
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
    ],
    TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True,
                "OPTIONS": {"context_processors": [
                    "django.template.context_processors.request",
                    "django.contrib.auth.context_processors.auth",
                    "django.contrib.messages.context_processors.messages"]}}],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3",
                           "NAME": os.environ["DASHBOARD_DJANGO_DB"]}},
    DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    ROOT_URLCONF="__main__",
    TWISTEDQ_BROKER_URL=os.environ["DASHBOARD_BROKER"],
    TWISTEDQ_RESULT_BACKEND=os.environ["DASHBOARD_BACKEND"],
    TWISTEDQ_QUEUE=os.environ["DASHBOARD_QUEUE"],
    TWISTEDQ_EXCHANGE=os.environ["DASHBOARD_EXCHANGE"],
)
import django
django.setup()
from django.contrib import admin
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client as WebClient
from django.urls import include, path

urlpatterns = [path("admin/", admin.site.urls),
               path("", include("twistedq.contrib.django.urls"))]


def events(response, wanted, limit=30.0):
    """Read the stream until wanted(document) holds; the documents read."""
    found, deadline, buffer = [], time.monotonic() + limit, b""
    for chunk in response.streaming_content:
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            for line in block.split(b"\n"):
                if line.startswith(b"data: "):
                    found.append(json.loads(line[6:]))
                    if wanted(found[-1]):
                        return found
        if time.monotonic() > deadline:
            break
    return found


def dashboard():
    call_command("migrate", verbosity=0)
    staff = User.objects.create_user("staff", password="x", is_staff=True)
    root = User.objects.create_superuser("root", password="x")
    report = {}
    anonymous = WebClient().get("/dashboard/")
    report["anonymous"] = [anonymous.status_code, anonymous.headers.get("Location", "")]
    web = WebClient(enforce_csrf_checks=True)
    web.force_login(staff)
    page = web.get("/dashboard/")
    report["page"] = [page.status_code, b"twistedq dashboard" in page.content]
    report["script"] = web.get("/dashboard/static/dashboard.js").status_code
    report["staff_actions"] = web.get("/dashboard/config").json()["actions"]
    body = json.dumps({"ids": [str(uuid.uuid4())]})
    token = web.get("/dashboard/config").json()["csrf_token"]
    report["staff_revoke"] = web.post("/dashboard/actions/revoke", body,
        content_type="application/json", HTTP_X_CSRFTOKEN=token).status_code
    web.force_login(root)
    config = web.get("/dashboard/config").json()
    report["root_actions"] = config["actions"]
    report["no_csrf"] = web.post("/dashboard/actions/revoke", body,
        content_type="application/json").status_code
    revoked = web.post("/dashboard/actions/revoke", body, content_type="application/json",
        HTTP_X_CSRFTOKEN=config["csrf_token"])
    report["revoke"] = [revoked.status_code, revoked.json()]
    stream = web.get("/dashboard/stream")
    report["stream_type"] = stream.headers["Content-Type"]
    seen = events(stream, lambda d: any(
        x["name"] == os.environ["DASHBOARD_DAEMON"] for x in d["sections"].get("daemons", [])))
    stream.close()
    report["first"] = seen[0]["kind"] if seen else None
    report["daemons"] = sorted({x["name"] for d in seen for x in d["sections"].get("daemons", [])})
    state = web.get("/dashboard/state").json()
    report["state_queue"] = state["sections"]["queues"].get("consumers")
    return report


def progress():
    from twistedq.client import default_client
    from twistedq.task import TaskSet
    result = TaskSet("sleep", [((0.1,), {}) for _ in range(20)], default_client()).run()
    web = WebClient()
    unknown = web.get(f"/celery/taskset/{uuid.uuid4()}/status/stream")
    stream = web.get(f"/celery/taskset/{result.taskset_id}/status/stream")
    documents = events(stream, lambda d: False, limit=60)
    again = web.get(f"/celery/taskset/{result.taskset_id}/status/stream",
                    HTTP_LAST_EVENT_ID="ready")
    return {"unknown": unknown.status_code, "id": result.taskset_id, "again": again.status_code,
            "progress": [d["taskset"]["completed"] for d in documents],
            "last": documents[-1]["taskset"] if documents else None}


print(json.dumps({"dashboard": dashboard, "progress": progress}[sys.argv[1]]()))
'''


class DjangoDashboardTests(SynchronousTestCase):
    """
    One daemon on a fresh queue, results in Redis, the Django app in a
    process of its own.
    """

    def setUp(self) -> None:
        self.backend = redis_url()
        self.queue = unique_queue()
        # An exchange of its own: other tests' daemons stay off the page.
        self.exchange = f"dashboard-{uuid.uuid4().hex[:8]}"
        self.directory = Path(tempfile.mkdtemp(prefix="twistedq-dashboard-django-"))
        self.daemon = Daemon(
            self.directory,
            queue=self.queue,
            result_backend=self.backend,
            extra=("--name", "django-seen", "--exchange", self.exchange),
        )
        self.addCleanup(self.daemon.stop)
        self.daemon.wait_ready()

    def script(self, mode: str) -> Any:
        environment = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
        environment.update(
            DASHBOARD_DJANGO_DB=str(self.directory / "db.sqlite3"),
            DASHBOARD_BROKER=amqp_url(),
            DASHBOARD_BACKEND=self.backend,
            DASHBOARD_QUEUE=self.queue,
            DASHBOARD_EXCHANGE=self.exchange,
            DASHBOARD_DAEMON="django-seen",
            PYTHONPATH=str(ROOT),
        )
        completed = subprocess.run(
            [sys.executable, "-c", SCRIPT, mode],
            capture_output=True,
            text=True,
            timeout=180,
            env=environment,
            cwd=ROOT,
        )
        if completed.returncode != 0:
            raise AssertionError(f"{mode} failed:\n{completed.stdout}\n{completed.stderr}")
        return json.loads(completed.stdout.strip().splitlines()[-1])

    def test_dashboard_for_staff(self) -> None:
        """
        Anonymous users go to the admin's login; staff see the page but may
        run no action without the permission; a superuser may, with the
        CSRF token only; the stream starts with a snapshot and shows the
        daemon from its heartbeats.
        """
        report = self.script("dashboard")
        self.assertEqual(report["anonymous"][0], 302)
        self.assertIn("/admin/login/", report["anonymous"][1])
        self.assertEqual(report["page"], [200, True])
        self.assertEqual(report["script"], 200)
        self.assertEqual(report["staff_actions"], [])
        self.assertEqual(report["staff_revoke"], 403)
        self.assertEqual(
            set(report["root_actions"]), {"revoke", "terminate", "pause", "resume", "republish"}
        )
        self.assertEqual(report["no_csrf"], 403)
        self.assertEqual(report["revoke"][0], 200)
        self.assertEqual(len(report["revoke"][1]["revoked"]), 1)
        self.assertTrue(report["stream_type"].startswith("text/event-stream"))
        self.assertEqual(report["first"], "snapshot")
        self.assertEqual(report["daemons"], ["django-seen"])
        self.assertEqual(report["state_queue"], 1)

    def test_progress_stream(self) -> None:
        """
        The Django twin of the progress stream follows a 20-task taskset to
        20 of 20 and ends; an unknown taskset answers 404.
        """
        report = self.script("progress")
        self.assertEqual(report["unknown"], 404)
        # A browser reconnecting after the last event is told to stop.
        self.assertEqual(report["again"], 204)
        progress = report["progress"]
        self.assertEqual(progress, sorted(progress))
        self.assertGreater(len(progress), 1)
        last = report["last"]
        self.assertEqual(
            (last["id"], last["completed"], last["total"], last["ready"]),
            (report["id"], 20, 20, True),
        )
