"""
The results admin of the click counter example, driven as a staff user
would with Django's test client, in a process of its own
(``DJANGO_SETTINGS_MODULE``, ``CLICKCOUNTER_DATABASE_URL``, ``CLICK_URL``
and ``DAEMON_NAME`` set by the test, a daemon running).  Prints one JSON
line.

    python -m tests.integration.django_results_script migrate|admin
"""

from __future__ import annotations

import html
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import django

django.setup()

from django.contrib.auth.models import Permission, User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client as WebClient  # noqa: E402

from examples.clickcounter.clicks.models import ClickCount  # noqa: E402
from twistedq.contrib.django.models import TaskResult, TaskSetResult  # noqa: E402
from twistedq.task import TaskSet, publish_task  # noqa: E402

RESULTS = "/admin/twistedq/taskresult/"


def wait(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def listed(web: WebClient, **query: str) -> str:
    response = web.get(RESULTS, query)
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def publish_all(url: str) -> dict[str, Any]:
    """
    A success with its arguments, a failure, a task due in an hour and a
    taskset of three.
    """
    ok = publish_task("increment_click", (url,), {"note": "first"})
    ok.get(timeout=60)
    bad = publish_task("no.such.task")
    try:
        bad.get(timeout=60)
    except Exception as error:
        failed = type(error).__name__
    later = publish_task("increment_click", (url,), countdown=3600)
    taskset = TaskSet("increment_click", [((url,), {})] * 3).run()
    taskset.join(timeout=60)
    return {
        "ok": ok.task_id,
        "bad": bad.task_id,
        "failed": failed,
        "later": later.task_id,
        "taskset": taskset.taskset_id,
    }


def shown_messages(response: Any) -> str:
    """
    The text of the messages a page shows.
    """
    page = response.content.decode()
    start = page.find('<ul class="messagelist">')
    return html.unescape(page[start : page.find("</ul>", start)]) if start >= 0 else ""


def ignored(url: str) -> dict[str, Any]:
    """
    A task published with ignore_result runs and leaves no row of its own:
    no result (pending or final), no claim, no taskset member.
    """
    from twistedq.contrib.django.models import ClaimedTask, TaskSetMember

    clicks = ClickCount.objects.get(url=url).clicks
    task_id = publish_task("increment_click", (url,), ignore_result=True).task_id
    wait(lambda: ClickCount.objects.get(url=url).clicks > clicks, "the ignored task")
    models = (TaskResult, ClaimedTask, TaskSetMember)
    return {"ignored_rows": sum(m.objects.filter(task_id=task_id).count() for m in models)}


def filters(web: WebClient, ids: dict[str, Any]) -> dict[str, Any]:
    page = listed(web)
    TaskResult.objects.filter(task_id=ids["ok"]).update(periodic_task="nightly")
    by = {
        "daemon": listed(web, worker=os.environ["DAEMON_NAME"]),
        "status": listed(web, status__exact="FAILURE"),
        "periodic": listed(web, periodic_task="nightly"),
        "name": listed(web, task_name="no.such.task"),
        "date": listed(web, date_done__gte="2000-01-01 00:00:00+00:00"),
    }
    return {
        "titles": [
            t
            for t in ("status", "task name", "daemon", "periodic task", "date done")
            if f"By {t}" in page
        ],
        "dashboard_link": 'class="twistedq-dashboard-link"' in page
        and 'href="/dashboard/"' in page,
        "found": {
            name: sorted(k for k in ("ok", "bad", "later") if ids[k] in text)
            for name, text in by.items()
        },
    }


def actions(web: WebClient, ids: dict[str, Any]) -> dict[str, Any]:
    rows = {k: TaskResult.objects.get(task_id=ids[k]).pk for k in ("ok", "later")}
    detail = html.unescape(web.get(f"{RESULTS}{rows['ok']}/change/").content.decode())
    clicks = ClickCount.objects.get(url=os.environ["CLICK_URL"]).clicks
    again = web.post(
        RESULTS, {"action": "run_again", "_selected_action": list(rows.values())}, follow=True
    )
    messages = [shown_messages(again)]
    wait(lambda: ClickCount.objects.get(url=os.environ["CLICK_URL"]).clicks > clicks, "the rerun")
    revoked = web.post(
        RESULTS, {"action": "revoke", "_selected_action": [rows["later"]]}, follow=True
    )
    messages.append(shown_messages(revoked))
    taskset = TaskSetResult.objects.get(taskset_id=ids["taskset"])
    page = web.get(f"/admin/twistedq/tasksetresult/{taskset.pk}/change/").content.decode()
    members = TaskResult.objects.filter(taskset_id=ids["taskset"]).values_list("task_id", flat=True)
    return {
        "detail_has_arguments": os.environ["CLICK_URL"] in detail and '{"note": "first"}' in detail,
        "messages": messages,
        "later_status": TaskResult.objects.get(task_id=ids["later"]).status,
        "reran_with": [
            json.loads(row.task_args)
            for row in TaskResult.objects.filter(
                task_args__contains=os.environ["CLICK_URL"], task_kwargs='{"note": "first"}'
            ).exclude(task_id=ids["ok"])
        ],
        "taskset_progress": "3 of 3 done, 0 failed" in page,
        "taskset_members": len(members) == 3 and all(m in page for m in members),
    }


def viewer_actions() -> list[str]:
    """
    The actions a staff user who may only view results is offered.
    """
    viewer, _ = User.objects.get_or_create(username="viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_taskresult"))
    web = WebClient()
    web.force_login(viewer)
    page = listed(web)
    return [name for name in ("revoke", "run_again") if f'value="{name}"' in page]


def admin() -> dict[str, Any]:
    ids = publish_all(os.environ["CLICK_URL"])
    report = ignored(os.environ["CLICK_URL"])
    web = WebClient()
    user, _ = User.objects.get_or_create(username="admin", is_staff=True, is_superuser=True)
    web.force_login(user)
    return {
        **report,
        "ids": ids,
        **filters(web, ids),
        **actions(web, ids),
        "viewer_actions": viewer_actions(),
    }


def main() -> None:
    mode = sys.argv[1]
    if mode == "migrate":
        call_command("migrate", verbosity=0)
        report: dict[str, Any] = {"migrated": True, "django": django.get_version()}
    else:
        report = admin()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
