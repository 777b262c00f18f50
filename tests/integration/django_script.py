"""
The click counter example driven as a Django developer would, in a
process of its own (``DJANGO_SETTINGS_MODULE`` and
``CLICKCOUNTER_DATABASE_URL`` set by the test).  Prints one JSON line.

    python -m tests.integration.django_script MODE
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import django

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import transaction  # noqa: E402
from django.test import Client as WebClient  # noqa: E402

from twistedq.client import default_client  # noqa: E402
from twistedq.contrib.django import delay_on_commit  # noqa: E402


def migrate() -> dict[str, Any]:
    call_command("migrate", verbosity=0)
    return {"migrated": True}


def click() -> dict[str, Any]:
    from django.contrib.auth.models import User

    from examples.clickcounter.clicks.models import ClickCount

    web = WebClient()
    url = os.environ["CLICK_URL"]
    answer = web.get("/click/", {"url": url}).json()
    task_id = answer["task_id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = web.get(f"/celery/{task_id}/status/").json()
        if status["task"]["status"] not in ("PENDING",):
            break
        time.sleep(0.05)
    done = web.get(f"/celery/{task_id}/done/").json()
    bad = web.get("/celery/not-a-uuid/status/").status_code
    admin, _ = User.objects.get_or_create(username="admin", is_staff=True, is_superuser=True)
    web.force_login(admin)
    listing = web.get("/admin/twistedq/taskresult/", {"status__exact": "SUCCESS"})
    return {
        "status": status,
        "done": done,
        "bad_id": bad,
        "clicks": ClickCount.objects.get(url=url).clicks,
        "admin_lists_task": task_id in listing.content.decode(),
        "admin_code": listing.status_code,
    }


def on_commit() -> dict[str, Any]:
    client = default_client()
    client.purge()
    report: dict[str, Any] = {}
    try:
        with transaction.atomic():
            delay_on_commit("increment_click", "http://example.com/rolled-back")
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    report["after_rollback"] = client.purge()
    with transaction.atomic():
        result = delay_on_commit("increment_click", "http://example.com/committed")
        report["inside_transaction"] = client.purge()
    report["after_commit"] = client.purge()
    report["task_id_known_early"] = bool(result.task_id)
    return report


def main() -> None:
    mode = sys.argv[1]
    report = {"migrate": migrate, "click": click, "on_commit": on_commit}[mode]()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
