"""
What the Django admin and the Django-mounted dashboard refuse: actions
without the change permission, the daemon's own jobs, names the daemons
do not schedule, values the daemons cannot publish.  Run in a child
process with a Django project of its own (Django's settings are
configured once per process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_checks: dict[str, Any] | None = None


def checks() -> dict[str, Any]:
    """
    What the child process found, run once for all the tests.
    """
    global _checks
    if _checks is None:
        completed = subprocess.run(
            [sys.executable, "-m", "tests.unit.test_django_admin_guards"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            env=dict(os.environ, PYTHONPATH=ROOT),
        )
        if completed.returncode != 0:
            raise AssertionError(f"the checks failed:\n{completed.stdout}\n{completed.stderr}")
        _checks = json.loads(completed.stdout.strip().splitlines()[-1])
    return _checks


class ActionPermissionTests(SynchronousTestCase):
    def test_view_only_user_offered_no_action(self) -> None:
        """
        A staff user who may only view periodic tasks is offered no
        action, and a posted one changes nothing.
        """
        found = checks()["view_only"]
        self.assertEqual(found["offered"], [])
        self.assertEqual(found["after_enable"], False)

    def test_own_jobs_not_disabled(self) -> None:
        """
        The daemon's own jobs are not disabled by the action nor the
        change form, nor run now; other rows are.
        """
        found = checks()["own_jobs"]
        self.assertEqual(
            found["after_disable"], {"twistedq.recover_parked_tasks": True, "b": False}
        )
        self.assertIn("twistedq.recover_parked_tasks", found["disable_message"])
        self.assertEqual(found["form_enabled"], True)
        self.assertIn("not published", found["run_now_message"])


def _main() -> None:
    """
    Configure a Django project on an in-memory SQLite database, migrate,
    and print what the admin and the views do, as JSON.
    """
    import django
    from django.conf import settings
    from django.core.management import call_command

    settings.configure(
        INSTALLED_APPS=[
            "django.contrib.admin",
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "django.contrib.sessions",
            "django.contrib.messages",
            "twistedq.contrib.django",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
        ],
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "APP_DIRS": True,
                "OPTIONS": {
                    "context_processors": [
                        "django.template.context_processors.request",
                        "django.contrib.auth.context_processors.auth",
                        "django.contrib.messages.context_processors.messages",
                    ]
                },
            }
        ],
        ROOT_URLCONF="tests.unit.django_guards_urls",
        ALLOWED_HOSTS=["testserver"],
        SECRET_KEY="not-secret",
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        USE_TZ=True,
    )
    django.setup()
    call_command("migrate", verbosity=0)
    from django.test.utils import setup_test_environment

    setup_test_environment()
    from twistedq.task import tasks

    tasks.register(lambda: None, "reports.build")
    found = {"view_only": _view_only(), "own_jobs": _own_jobs()}
    print(json.dumps(found))


BASE = "/admin/twistedq/periodictaskstate/"


def _view_only() -> dict[str, Any]:
    from django.contrib.auth.models import Permission, User
    from django.test import Client

    from twistedq.contrib.django.schedule_models import PeriodicTaskState

    staff = User.objects.create_user("staff", password="secret", is_staff=True)
    staff.user_permissions.set(Permission.objects.filter(codename__startswith="view_"))
    web = Client()
    web.force_login(staff)
    row = PeriodicTaskState.objects.create(name="a", enabled=False)
    page = web.get(BASE)
    form = page.context.get("action_form")
    actions = form.fields["action"].choices if form is not None else []
    offered = [name for name, _ in actions if name]
    web.post(BASE, {"action": "enable", "_selected_action": [row.pk], "index": "0"})
    row.refresh_from_db()
    return {"offered": offered, "after_enable": row.enabled}


def _messages(response: Any) -> str:
    return " ".join(str(message) for message in response.context["messages"])


def _own_jobs() -> dict[str, Any]:
    from django.contrib.auth.models import User
    from django.test import Client

    from twistedq.contrib.django.schedule_models import PeriodicTaskState

    web = Client()
    web.force_login(User.objects.create_superuser("admin", "admin@example.com", "secret"))
    own = PeriodicTaskState.objects.create(name="twistedq.recover_parked_tasks")
    other = PeriodicTaskState.objects.create(name="b")
    response = web.post(
        BASE,
        {"action": "disable", "_selected_action": [own.pk, other.pk], "index": "0"},
        follow=True,
    )
    after = {
        row.name: row.enabled for row in PeriodicTaskState.objects.filter(name__in=["b", own.name])
    }
    web.post(f"{BASE}{own.pk}/change/", {"enabled": ""})
    own.refresh_from_db()
    run = web.post(
        BASE, {"action": "run_now", "_selected_action": [own.pk], "index": "0"}, follow=True
    )
    return {
        "after_disable": after,
        "disable_message": _messages(response),
        "form_enabled": own.enabled,
        "run_now_message": _messages(run),
    }


if __name__ == "__main__":
    _main()
