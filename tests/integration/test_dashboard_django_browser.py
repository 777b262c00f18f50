"""
The Django-mounted dashboard in headless Chromium: the page served by
``runserver`` opens its event stream and leaves "connecting…" (a tester
saw it stay there with ``--dump-dom``, which dumps the page at its load,
before the stream's first event; driven over DevTools it goes live).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.integration.servers import ROOT, amqp_url, free_port, redis_url
from tests.integration.test_dashboard_browser import CHROMIUM, Browser

PROJECT = r"""
import os, sys
from django.conf import settings
settings.configure(
    DEBUG=False, SECRET_KEY="twistedq-dashboard-browser", ALLOWED_HOSTS=["127.0.0.1"],
    USE_TZ=True,
    INSTALLED_APPS=["django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
                    "django.contrib.sessions", "django.contrib.messages",
                    "twistedq.contrib.django"],
    MIDDLEWARE=["django.middleware.security.SecurityMiddleware",
                "django.contrib.sessions.middleware.SessionMiddleware",
                "django.middleware.common.CommonMiddleware",
                "django.middleware.csrf.CsrfViewMiddleware",
                "django.contrib.auth.middleware.AuthenticationMiddleware",
                "django.contrib.messages.middleware.MessageMiddleware",
                "django.middleware.clickjacking.XFrameOptionsMiddleware"],
    TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True,
                "OPTIONS": {"context_processors": [
                    "django.template.context_processors.request",
                    "django.contrib.auth.context_processors.auth",
                    "django.contrib.messages.context_processors.messages"]}}],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3",
                           "NAME": os.environ["BROWSER_DB"]}},
    ROOT_URLCONF="__main__",
    TWISTEDQ_BROKER_URL=os.environ["BROWSER_BROKER"],
    TWISTEDQ_RESULT_BACKEND=os.environ["BROWSER_BACKEND"],
)
import django
django.setup()
from django.contrib import admin
from django.contrib.auth import login
from django.contrib.auth.models import User
from django.core.management import call_command, execute_from_command_line
from django.shortcuts import redirect
from django.urls import include, path


def autologin(request):
    login(request, User.objects.get(username="root"),
          backend="django.contrib.auth.backends.ModelBackend")
    return redirect("/dashboard/")


urlpatterns = [path("admin/", admin.site.urls), path("autologin/", autologin),
               path("", include("twistedq.contrib.django.urls"))]

if __name__ == "__main__":
    if sys.argv[1] == "setup":
        call_command("migrate", verbosity=0)
        User.objects.create_superuser("root", password="x")
    else:
        execute_from_command_line(["manage", *sys.argv[1:]])
"""


class DjangoDashboardInBrowserTests(SynchronousTestCase):
    def test_goes_live(self) -> None:
        """
        Logged in as staff, the page leaves "connecting…" for "live" or
        "waiting for events" once the stream's snapshot arrives, and
        marks the time of the update.
        """
        if CHROMIUM is None:
            raise SkipTest("chromium is not installed")
        folder = Path(tempfile.mkdtemp(prefix="twistedq-django-browser-"))
        self.addCleanup(shutil.rmtree, folder, True)
        (folder / "project.py").write_text(PROJECT)
        env = dict(
            os.environ,
            PYTHONPATH=ROOT,
            BROWSER_DB=str(folder / "db.sqlite3"),
            BROWSER_BROKER=amqp_url(),
            BROWSER_BACKEND=redis_url(),
        )
        subprocess.run(
            [sys.executable, "project.py", "setup"], cwd=folder, env=env, check=True, timeout=120
        )
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "project.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
            cwd=folder,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.addCleanup(server.wait, 30)
        self.addCleanup(server.terminate)
        base = f"http://127.0.0.1:{port}"
        self.wait_serving(base)
        browser = Browser()
        self.addCleanup(browser.close)
        browser.open(f"{base}/autologin/")
        live = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            live = browser.evaluate("(document.getElementById('live') || {}).textContent")
            if live not in (None, "connecting…"):
                break
            time.sleep(0.2)
        self.assertIn(live, ("live", "waiting for events"))
        self.assertTrue(browser.evaluate("document.body.getAttribute('data-updated')"))

    def wait_serving(self, base: str) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/admin/login/", timeout=5).read()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
