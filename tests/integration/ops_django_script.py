"""
The Django app's status views and admin tried in a process of their own,
on a SQLite database in ``OPS_DJANGO_DB`` (``TWISTEDQ_STATUS_TRACEBACKS``
from ``OPS_TRACEBACKS``).  Prints one JSON line.

    python -m tests.integration.ops_django_script MODE
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from typing import Any

from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="twistedq-ops",
    ALLOWED_HOSTS=["testserver"],
    USE_TZ=True,
    INSTALLED_APPS=[
        "django.contrib.admin",
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.sessions",
        "django.contrib.messages",
        "twistedq.contrib.django",
    ],
    MIDDLEWARE=[
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
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
    DATABASES={
        "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["OPS_DJANGO_DB"]}
    },
    DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    ROOT_URLCONF=sys.modules[__name__],
    TWISTEDQ_BROKER_URL="amqp://guest:guest@127.0.0.1:1/",
    TWISTEDQ_RESULT_BACKEND="django://",
    **({"TWISTEDQ_STATUS_TRACEBACKS": True} if os.environ.get("OPS_TRACEBACKS") else {}),
)

import django  # noqa: E402

django.setup()

from django.contrib import admin  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client as WebClient  # noqa: E402
from django.urls import include, path  # noqa: E402

from twistedq.contrib.django.models import (  # noqa: E402
    PeriodicTaskState,
    TaskResult,
    TaskSetResult,
)
from twistedq.outcome import failure_document, success_document  # noqa: E402

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("twistedq.contrib.django.urls")),
]

FAILED_ID = "0b0c8a34-9a4b-4d8e-8b59-3f5ad0c1e7a2"
BIG_ID = "1b0c8a34-9a4b-4d8e-8b59-3f5ad0c1e7a2"
TASKSET_ID = "2b0c8a34-9a4b-4d8e-8b59-3f5ad0c1e7a2"
UNKNOWN_TASKSET_ID = "3b0c8a34-9a4b-4d8e-8b59-3f5ad0c1e7a2"


def _store(task_id: str, stored: bytes) -> TaskResult:
    """
    A row as the Django store writes it.
    """
    document = json.loads(stored)
    now = datetime.datetime.now(datetime.timezone.utc)
    return TaskResult.objects.create(
        task_id=task_id,
        task_name=document.get("task") or "",
        status=document["status"],
        document=stored.decode("utf-8"),
        traceback=document.get("traceback") or "",
        date_done=now,
        expires_at=now + datetime.timedelta(days=1),
    )


def views() -> dict[str, Any]:
    call_command("migrate", verbosity=0)
    _store(
        FAILED_ID,
        failure_document(
            FAILED_ID, "div", ZeroDivisionError("division by zero"), traceback="Traceback: /srv/x"
        ),
    )
    now = datetime.datetime.now(datetime.timezone.utc)
    TaskSetResult.objects.create(
        taskset_id=TASKSET_ID, total=3, expires_at=now + datetime.timedelta(days=1)
    )
    web = WebClient()
    unknown = web.get(f"/celery/taskset/{UNKNOWN_TASKSET_ID}/status/")
    known = web.get(f"/celery/taskset/{TASKSET_ID}/status/")
    return {
        "failure": web.get(f"/celery/{FAILED_ID}/status/").json(),
        "unknown_taskset": [unknown.status_code, unknown.headers["Content-Type"], unknown.json()],
        "known_taskset": [known.status_code, known.json()],
    }


def admin_pages() -> dict[str, Any]:
    call_command("migrate", verbosity=0)
    failed = _store(
        FAILED_ID,
        failure_document(FAILED_ID, "div", ZeroDivisionError("x"), traceback="Traceback: here"),
    )
    big_value = "x" * 5_000_000
    big = _store(BIG_ID, success_document(BIG_ID, "big", big_value))
    now = datetime.datetime.now(datetime.timezone.utc)
    taskset = TaskSetResult.objects.create(
        taskset_id=TASKSET_ID, total=3, expires_at=now + datetime.timedelta(days=1)
    )
    periodic = PeriodicTaskState.objects.create(name="ops.every-minute")
    web = WebClient()
    web.force_login(User.objects.create_superuser("admin", "admin@example.com", "secret"))
    report: dict[str, Any] = {}

    add = web.get("/admin/twistedq/periodictaskstate/add/")
    posted = web.post("/admin/twistedq/periodictaskstate/add/", {"enabled": "on"})
    posted_again = web.post("/admin/twistedq/periodictaskstate/add/", {"enabled": "on"})
    report["periodic_add"] = [add.status_code, posted.status_code, posted_again.status_code]
    report["periodic_names"] = sorted(PeriodicTaskState.objects.values_list("name", flat=True))
    listing = web.get("/admin/twistedq/periodictaskstate/").content.decode()
    report["periodic_list_offers_add"] = "/admin/twistedq/periodictaskstate/add/" in listing
    paused = web.post(
        f"/admin/twistedq/periodictaskstate/{periodic.pk}/change/", {"enabled": "", "_save": "1"}
    )
    periodic.refresh_from_db()
    report["periodic_pause"] = [paused.status_code, periodic.enabled]

    for model, obj in (("taskresult", failed), ("tasksetresult", taskset)):
        page = web.get(f"/admin/twistedq/{model}/{obj.pk}/change/")
        text = page.content.decode()
        listing = web.get(f"/admin/twistedq/{model}/").content.decode()
        report[model] = {
            "code": page.status_code,
            "save": 'name="_save"' in text,
            "add_code": web.get(f"/admin/twistedq/{model}/add/").status_code,
            "list_offers_add": f"/admin/twistedq/{model}/add/" in listing,
            "post_code": web.post(f"/admin/twistedq/{model}/{obj.pk}/change/", {}).status_code,
        }
    report["traceback_shown"] = "Traceback: here" in (
        web.get(f"/admin/twistedq/taskresult/{failed.pk}/change/").content.decode()
    )
    page = web.get(f"/admin/twistedq/taskresult/{big.pk}/change/")
    text = page.content.decode()
    report["big"] = {
        "code": page.status_code,
        "bytes": len(page.content),
        "stored_bytes": len(big.document),
        "says_cut": "more characters" in text,
    }
    return report


def main() -> None:
    mode = sys.argv[1]
    report = {"views": views, "admin": admin_pages}[mode]()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
