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

from twisted.trial.unittest import SkipTest, SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_checks: dict[str, Any] | None = None


def child(database_url: str = "") -> dict[str, Any]:
    """
    What the child process finds: on a new SQLite database every
    check, on ``database_url`` the upgrade check alone.
    """
    completed = subprocess.run(
        [sys.executable, "-m", "tests.unit.test_django_admin_guards"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=ROOT, GUARDS_DATABASE_URL=database_url),
    )
    if completed.returncode != 0:
        raise AssertionError(f"the checks failed:\n{completed.stdout}\n{completed.stderr}")
    found: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return found


def checks() -> dict[str, Any]:
    """
    What the child process found on SQLite, run once for all the tests.
    """
    global _checks
    if _checks is None:
        _checks = child()
    return _checks


class UpgradeTests(SynchronousTestCase):
    def test_previous_daemon_stores_results(self) -> None:
        """
        A daemon of the previous version (before migration 0005) still
        stores results on a database migrated to the latest migration:
        its INSERT names only the columns it knew.
        """
        self.assertEqual(checks()["old_insert"], "stored")

    def test_previous_daemon_stores_results_postgresql(self) -> None:
        """
        The same on PostgreSQL (``TWISTEDQ_TEST_POSTGRES_URL``; skipped
        without it).
        """
        url = os.environ.get("TWISTEDQ_TEST_POSTGRES_URL")
        if not url:
            raise SkipTest("TWISTEDQ_TEST_POSTGRES_URL is not set")
        self.assertEqual(child(url)["old_insert"], "stored")


class UnpublishableTests(SynchronousTestCase):
    def test_arguments_not_json_values(self) -> None:
        """
        NaN, Infinity and floats out of range are refused on their field,
        as the message rules refuse them.
        """
        found = checks()["unpublishable"]
        self.assertEqual(list(found["nan"]), ["kwargs"])
        self.assertIn("NaN", found["nan"]["kwargs"][0])
        self.assertEqual(list(found["infinity"]), ["args"])
        self.assertEqual(list(found["huge_float"]), ["args"])

    def test_nesting(self) -> None:
        """
        Arguments nested over 100 deep are refused (100,000 deep was a
        RecursionError and a 500); 100 deep are taken.
        """
        found = checks()["unpublishable"]
        self.assertIn("nested", found["deep"]["args"][0])
        self.assertIn("nested", found["deep_101"]["args"][0])
        self.assertEqual(found["deep_100"], {})

    def test_queue_names(self) -> None:
        """
        A queue name the message rules refuse is refused with their
        reason; a plain one is taken.
        """
        found = checks()["unpublishable"]
        self.assertIn("reserves the prefix", found["reserved_queue"]["queue"][0])
        self.assertIn("longer than", found["long_queue"]["queue"][0])
        self.assertEqual(found["good_queue"], {})

    def test_interval_bounds(self) -> None:
        """
        An interval runs at least every 1 period and at most every 10
        years.
        """
        found = checks()["unpublishable"]
        self.assertIn("10 years", found["long_interval"]["every"][0])
        self.assertEqual(found["ten_years"], {})
        self.assertEqual(
            found["negative_form"], ["Ensure this value is greater than or equal to 1."]
        )


class DashboardPauseTests(SynchronousTestCase):
    def test_names_not_scheduled_refused(self) -> None:
        """
        The Django dashboard's pause refuses with 400, making no row, a
        name no daemon schedules, a daemon's own job, a name longer than
        the column (a 500 before) and one that is no text.
        """
        found = checks()["dashboard_pause"]
        self.assertEqual(found["rows_made"], 0)
        for label in ("unknown", "own_job", "too_long", "not_text"):
            self.assertEqual(found[label][0], 400, label)
        self.assertIn("'nonexistent'", found["unknown"][1]["error"])
        self.assertIn("own job", found["own_job"][1]["error"])

    def test_defined_task_paused(self) -> None:
        """
        A periodic task defined in the database is paused.
        """
        self.assertEqual(checks()["dashboard_pause"]["defined"], [200, False])


class DelayOnCommitTests(SynchronousTestCase):
    def test_follows_ignore_result(self) -> None:
        """
        ``delay_on_commit`` of a task that ignores its results returns an
        IgnoredResult, as its ``delay`` does; of another an AsyncResult.
        """
        self.assertEqual(
            checks()["on_commit"],
            {"function": "IgnoredResult", "class": "IgnoredResult", "kept": "AsyncResult"},
        )


class OwnJobRowsTests(SynchronousTestCase):
    def test_no_result_row_for_own_jobs(self) -> None:
        """
        A slot of a daemon's own job leaves no result row (the recovery
        job left a PENDING one every 10 seconds); a periodic task's slot
        leaves its pending record, marked with its name.
        """
        self.assertEqual(
            checks()["slot_rows"], {"twistedq.recover_parked_tasks": 0, "reports.nightly": 1}
        )


class LimitedDashboardTests(SynchronousTestCase):
    def test_view_permission_needed(self) -> None:
        """
        ``dashboard_patterns("twistedq.view_taskresult")`` answers 403 to
        a staff user without the permission (the default mount serves
        them); a user with it gets the page's files.
        """
        found = checks()["limited"]
        self.assertEqual(found["bare"][:2], [403, 403])
        self.assertEqual(found["bare"][2], 200)
        self.assertEqual(found["viewer"][0], 200)


class CrontabMessageTests(SynchronousTestCase):
    def test_unknown_zone_once(self) -> None:
        """
        An unknown time zone is one error, on its field.
        """
        self.assertEqual(list(checks()["crontab"]["zone"]), ["timezone"])

    def test_never_in_words(self) -> None:
        """
        A crontab that never runs says so with its fields as written, not
        Python's reprs.
        """
        self.assertEqual(
            checks()["crontab"]["never"],
            {"__all__": ["This crontab never runs: day of month 30,31 never falls in month 2."]},
        )


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
        # Django's admin capitalizes a message's first letter: the names
        # are not first.
        self.assertEqual(found["capitalized"], [False, False])


def _main() -> None:
    """
    Configure a Django project on a new SQLite database, migrate, and
    print what the admin and the views do, as JSON.
    """
    import shutil
    import tempfile

    import django
    from django.conf import settings
    from django.core.management import call_command

    from tests.django_settings import database, django_test_settings

    database_url = os.environ.get("GUARDS_DATABASE_URL")
    if database_url:
        settings.configure(
            INSTALLED_APPS=["django.contrib.contenttypes", "twistedq.contrib.django"],
            DATABASES={"default": database(database_url)},
            USE_TZ=True,
        )
        django.setup()
        call_command("migrate", "twistedq", verbosity=0)
        print(json.dumps({"old_insert": _old_insert()}))
        return
    database_file = os.path.join(tempfile.mkdtemp(prefix="twistedq-guards-"), "db.sqlite3")
    settings.configure(
        **django_test_settings(
            "tests.unit.django_guards_urls",
            # A file: the store's threads open connections of their own.
            default_database={"ENGINE": "django.db.backends.sqlite3", "NAME": database_file},
            # The dashboard's pause writes the rows; no broker is reached.
            TWISTEDQ_RESULT_BACKEND="django://",
            TWISTEDQ_BROKER_URL="amqp://guest:guest@127.0.0.1:1/",
        )
    )
    django.setup()
    call_command("migrate", verbosity=0)
    from django.test.utils import setup_test_environment

    setup_test_environment()
    from twistedq.task import tasks

    tasks.register(lambda: None, "reports.build")
    found = {
        "view_only": _view_only(),
        "own_jobs": _own_jobs(),
        "old_insert": _old_insert(),
        "unpublishable": _unpublishable(),
        "dashboard_pause": _dashboard_pause(),
        "on_commit": _on_commit(),
        "slot_rows": _slot_rows(),
        "limited": _limited_dashboard(),
        "crontab": _crontab_errors(),
    }
    print(json.dumps(found))
    shutil.rmtree(os.path.dirname(database_file), ignore_errors=True)


BASE = "/admin/twistedq/periodictaskstate/"

#: The columns the previous version's result store wrote.
OLD_RESULT_COLUMNS = (
    "task_id",
    "task_name",
    "status",
    "document",
    "traceback",
    "worker",
    "date_done",
    "expires_at",
)


def _old_insert(using: str = "default") -> str:
    """
    Insert a result row as the previous version did; ``stored`` or the
    database's error.
    """
    from django.db import connections

    values = ("0" * 36, "old.task", "SUCCESS", "{}", "", "old", None, "2030-01-01 00:00:00")
    marks = ", ".join(["%s"] * len(values))
    try:
        with connections[using].cursor() as cursor:
            cursor.execute(
                f"INSERT INTO twistedq_taskresult ({', '.join(OLD_RESULT_COLUMNS)}) "
                f"VALUES ({marks})",
                values,
            )
        with connections[using].cursor() as cursor:
            cursor.execute("DELETE FROM twistedq_taskresult WHERE task_id = %s", [values[0]])
    except Exception as error:
        return repr(error)
    return "stored"


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


def _unpublishable() -> dict[str, Any]:
    """
    The errors of periodic tasks and intervals the daemons could not
    publish or schedule.
    """
    from django.contrib.auth.models import User
    from django.test import Client

    from twistedq.contrib.django.schedule_models import IntervalSchedule, PeriodicTaskState

    every = IntervalSchedule.objects.create(every=5)

    def errors(**fields: Any) -> dict[str, list[str]]:
        return _errors(PeriodicTaskState(name="u", task="reports.build", interval=every, **fields))

    web = Client()
    web.force_login(User.objects.get(username="admin"))
    added = web.post("/admin/twistedq/intervalschedule/add/", {"every": "-1", "period": "days"})
    return {
        "nan": errors(kwargs='{"a": NaN}'),
        "infinity": errors(args="[Infinity]"),
        "huge_float": errors(args="[1e999]"),
        "deep": errors(args="[" * 100000 + "]" * 100000),
        "deep_101": errors(args="[" * 101 + "]" * 101),
        "deep_100": errors(args="[" * 100 + "]" * 100),
        "reserved_queue": errors(queue="amq.foo"),
        "long_queue": errors(queue="q" * 250),
        "good_queue": errors(queue="reports"),
        "long_interval": _errors(IntervalSchedule(every=2147483647, period="days")),
        "ten_years": _errors(IntervalSchedule(every=3650, period="days")),
        "negative_form": added.context["adminform"].form.errors.get("every", []),
    }


def _errors(instance: Any) -> dict[str, list[str]]:
    from django.core.exceptions import ValidationError

    try:
        instance.full_clean()
    except ValidationError as error:
        return error.message_dict
    return {}


def _dashboard_pause() -> dict[str, Any]:
    """
    What the Django-mounted dashboard answers to pausing names the
    daemons do not schedule, and whether rows were made.
    """
    from django.contrib.auth.models import User
    from django.test import Client

    from twistedq.contrib.django.schedule_models import IntervalSchedule, PeriodicTaskState

    web = Client()
    web.force_login(User.objects.get(username="admin"))
    before = PeriodicTaskState.objects.count()
    answers = {}
    for label, name in (
        ("unknown", "nonexistent"),
        ("own_job", "twistedq.cleanup_expired_results"),
        ("too_long", "x" * 5000),
        ("not_text", 5),
    ):
        response = web.post(
            "/dashboard/actions/pause",
            json.dumps({"name": name}),
            content_type="application/json",
        )
        answers[label] = [response.status_code, json.loads(response.content)]
    answers["rows_made"] = PeriodicTaskState.objects.count() - before
    defined = PeriodicTaskState.objects.create(
        name="db.pause", task="reports.build", interval=IntervalSchedule.objects.create(every=7)
    )
    response = web.post(
        "/dashboard/actions/pause",
        json.dumps({"name": "db.pause"}),
        content_type="application/json",
    )
    defined.refresh_from_db()
    answers["defined"] = [response.status_code, defined.enabled]
    return answers


def _on_commit() -> dict[str, str]:
    """
    The kind of result ``delay_on_commit`` returns for tasks that ignore
    their results and for one that does not (in a transaction rolled
    back: nothing is published).
    """
    from django.db import transaction

    from twistedq.contrib.django import delay_on_commit
    from twistedq.task import Task, task

    @task(name="guards.ping", ignore_result=True)
    def ping() -> None:
        pass

    @task(name="guards.kept")
    def kept() -> None:
        pass

    class Quiet(Task):
        name = "guards.quiet"
        ignore_result = True

    kinds = {}
    for label, what in (("function", ping), ("class", Quiet), ("kept", kept)):
        try:
            with transaction.atomic():
                kinds[label] = type(delay_on_commit(what)).__name__
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
    return kinds


def _slot_rows() -> dict[str, int]:
    """
    How many result rows the Django store makes when a slot of a daemon's
    own job and one of a periodic task are committed.
    """
    from twisted.internet import defer

    from twistedq.contrib.django.models import TaskResult
    from twistedq.contrib.django.store import DjangoBackend
    from twistedq.scheduler import slot_task_id

    store = DjangoBackend(reactor=None)
    store._run = lambda work: defer.succeed(work())  # type: ignore[method-assign]
    rows = {}
    for name in ("twistedq.recover_parked_tasks", "reports.nightly"):
        before = TaskResult.objects.count()
        store.commit_slot(slot_task_id(name, 1800000000.0), name, 1800000000.0, 1800000010.0, 60)
        rows[name] = TaskResult.objects.count() - before
    return rows


def _limited_dashboard() -> dict[str, list[int]]:
    """
    The answers of a dashboard mounted for users who may view results, to
    a staff user without that permission and to one with it.
    """
    from django.contrib.auth.models import Permission, User
    from django.test import Client

    bare = User.objects.create_user("bare", password="secret", is_staff=True)
    answers = {}
    for label, user in (("bare", bare), ("viewer", User.objects.get(username="staff"))):
        web = Client()
        web.force_login(user)
        answers[label] = [
            web.get(f"/limited/{page}").status_code
            for page in ("static/dashboard.css", "failure/" + "0" * 32)
        ] + [web.get("/dashboard/static/dashboard.css").status_code]
    assert Permission.objects.filter(codename="view_taskresult").exists()
    return answers


def _crontab_errors() -> dict[str, dict[str, list[str]]]:
    from twistedq.contrib.django.schedule_models import CrontabSchedule

    return {
        "zone": _errors(CrontabSchedule(timezone="Mars/Base")),
        "never": _errors(CrontabSchedule(day_of_month="30,31", month_of_year="2")),
    }


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
        "capitalized": [
            b"Twistedq.recover_parked_tasks" in page.content for page in (response, run)
        ],
    }


if __name__ == "__main__":
    _main()
