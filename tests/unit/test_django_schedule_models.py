"""
The periodic tasks of the Django database: the models' validation (run in
a child process with a Django project of its own: Django's settings are
configured once per process, and other unit tests configure them their
way) and the scheduler's definitions made from the rows.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from types import SimpleNamespace
from typing import Any, cast
from zoneinfo import ZoneInfo

from twisted.trial.unittest import SynchronousTestCase

from twistedq.contrib.django.schedule_reader import definition_of
from twistedq.schedules import Crontab, Interval

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UTC = datetime.timezone.utc

_checks: dict[str, Any] | None = None


def checks() -> dict[str, Any]:
    """
    What the child process found, run once for all the tests.
    """
    global _checks
    if _checks is None:
        completed = subprocess.run(
            [sys.executable, "-m", "tests.unit.test_django_schedule_models"],
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


class ValidationTests(SynchronousTestCase):
    def test_unknown_task_named(self) -> None:
        """
        A task name that is not registered is refused with a message
        naming it; a registered one is taken.
        """
        found = checks()
        self.assertEqual(
            found["unknown_task"]["task"],
            [
                "No task named 'reports.nope' is registered (looked in the tasks module of "
                "every installed app)."
            ],
        )
        self.assertEqual(found["known_task"], {})

    def test_json_arguments(self) -> None:
        """
        ``args`` must be a JSON list and ``kwargs`` a JSON object; other
        JSON, or text that is no JSON, is refused on its field.
        """
        found = checks()["arguments"]
        self.assertEqual(found["args_object"], ['Write a JSON list, such as [1, "two"], not dict.'])
        self.assertEqual(
            found["kwargs_list"], ['Write a JSON object, such as {"key": "value"}, not list.']
        )
        self.assertTrue(found["args_not_json"][0].startswith("Not JSON ("))

    def test_schedule_required_and_exclusive(self) -> None:
        """
        A row with a task needs a schedule, one only; a row with neither
        (the state of a task declared in code) is valid.
        """
        found = checks()
        self.assertEqual(
            found["no_schedule"]["interval"], ["Choose an interval or a crontab schedule."]
        )
        self.assertEqual(
            found["two_schedules"]["crontab"],
            ["Choose an interval or a crontab schedule, not both."],
        )
        self.assertEqual(found["code_row"], {})

    def test_window_order(self) -> None:
        """
        An expiry at or before the start time is refused.
        """
        self.assertEqual(
            checks()["expires_first"]["expires"], ["Expires must come after the start time."]
        )

    def test_crontab_fields_and_zone(self) -> None:
        """
        Each crontab field is read as the scheduler reads it, the error on
        its own field; an unknown time zone is refused; 31 February never
        runs.
        """
        found = checks()["crontab"]
        self.assertEqual(found["minute"], ["crontab minute: [61] outside 0-59"])
        self.assertEqual(found["day_of_week"], ["crontab day_of_week: cannot read 'someday'"])
        self.assertEqual(
            found["timezone"],
            ["Unknown time zone 'Mars/Base': write an IANA name such as Europe/Paris or UTC."],
        )
        self.assertIn("never runs", found["never"][0])

    def test_interval_zero(self) -> None:
        """
        An interval of 0 is refused.
        """
        self.assertIn("every", checks()["interval_zero"])

    def test_revision_bumped_by_changes(self) -> None:
        """
        Saving and deleting schedules and periodic tasks each bump the
        schedule revision; the admin's update of ``enabled`` through
        :py:func:`bump_revision` too.
        """
        self.assertEqual(checks()["revisions"], [1, 2, 3, 4, 5, 6])

    def test_schedules_of_rows(self) -> None:
        """
        A row's schedule and its words: intervals in seconds, crontabs in
        their zone, code-declared rows named so.
        """
        found = checks()["schedules"]
        self.assertEqual(found["interval"], [{"every": 5400.0}, "every 90 minutes"])
        self.assertEqual(
            found["crontab"],
            [
                {
                    "crontab": {
                        "minute": "30",
                        "hour": "2",
                        "day_of_week": "*",
                        "day_of_month": "*",
                        "month_of_year": "*",
                    },
                    "tz": "Europe/Paris",
                },
                "crontab 30 2 * * * (Europe/Paris)",
            ],
        )
        self.assertEqual(found["code"], "declared in code")


def row(**fields: Any) -> SimpleNamespace:
    """
    A periodic task row as the reader sees it.
    """
    values: dict[str, Any] = {
        "name": "db.report",
        "task": "reports.build",
        "args": '[1, "two"]',
        "kwargs": '{"key": "value"}',
        "queue": "",
        "start_time": None,
        "expires": None,
        "one_off": False,
        "enabled": True,
        "updated_at": datetime.datetime(2027, 1, 1, 12, 0, 7, tzinfo=UTC),
        "schedule": lambda: Interval(10),
    }
    values.update(fields)
    return SimpleNamespace(**values)


def at(*parts: int) -> datetime.datetime:
    return datetime.datetime(*parts, tzinfo=UTC)  # type: ignore[arg-type,misc]


class AdminTests(SynchronousTestCase):
    def test_code_declared_row_only_enabled(self) -> None:
        """
        The page of a task declared in code offers ``enabled`` alone: a
        POST that also names a name and a task changes only ``enabled``.
        A defined task's page offers every field.
        """
        found = checks()["admin"]
        self.assertEqual(found["code_inputs"], ["enabled"])
        self.assertEqual(found["code_after_post"], ["code.nightly", "", False])
        self.assertEqual(found["defined_inputs"], ["name", "task", "args", "enabled"])

    def test_one_list_and_filter(self) -> None:
        """
        Both kinds are in one list, with their schedules in words; the
        filter tells them apart.
        """
        found = checks()["admin"]
        self.assertEqual(found["listed"], [True, True])
        self.assertEqual(found["filters"], {"code": ["code.nightly"], "database": ["db.report"]})

    def test_enable_disable_actions(self) -> None:
        """
        The actions set ``enabled``, mark the row saved (a one-off enabled
        again is armed for its next slot) and bump the revision, so the
        daemons read the change at once.
        """
        found = checks()["admin"]
        self.assertEqual(found["disable"], [False, True, True])
        self.assertEqual(found["enable"], [True, True, True])


class DefinitionTests(SynchronousTestCase):
    def test_plain(self) -> None:
        """
        A row becomes the task with its arguments, on its schedule, in the
        daemon's queue when it names none, with no window.
        """
        definition = definition_of(row())
        self.assertEqual(
            (definition.name, definition.task, definition.args, definition.kwargs),
            ("db.report", "reports.build", (1, "two"), {"key": "value"}),
        )
        self.assertEqual(definition.schedule, Interval(10))
        self.assertEqual((definition.queue, definition.starts, definition.ends), (None, None, None))

    def test_window_and_queue(self) -> None:
        """
        Start and expiry times bound the slots; a queue is kept.
        """
        definition = definition_of(
            row(start_time=at(2027, 1, 1), expires=at(2027, 2, 1), queue="reports")
        )
        self.assertEqual(definition.starts, at(2027, 1, 1).timestamp())
        self.assertEqual(definition.ends, at(2027, 2, 1).timestamp())
        self.assertEqual(definition.queue, "reports")

    def test_naive_times_in_given_zone(self) -> None:
        """
        With ``USE_TZ = False`` the times have no zone: they are read in
        the one given (the project's ``TIME_ZONE``), UTC unless given.
        """
        naive = datetime.datetime(2027, 1, 1)
        definition = definition_of(row(start_time=naive))
        self.assertEqual(definition.starts, at(2027, 1, 1).timestamp())
        paris = definition_of(row(start_time=naive), ZoneInfo("Europe/Paris"))
        self.assertEqual(paris.starts, at(2026, 12, 31, 23).timestamp())

    def test_one_off_first_slot_after_save(self) -> None:
        """
        A one-off row's window is the one slot after its last save: the
        same in every daemon that reads the row.
        """
        definition = definition_of(row(one_off=True))
        slot = at(2027, 1, 1, 12, 0, 10).timestamp()
        self.assertEqual(
            (definition.starts, definition.ends, definition.one_off), (slot, slot, True)
        )

    def test_one_off_start_time_on_a_slot(self) -> None:
        """
        A one-off whose start time is later than its save and falls on a
        slot runs that slot; an expiry before its slot leaves no slot.
        """
        start = at(2027, 1, 1, 13, 0, 0)
        definition = definition_of(row(one_off=True, start_time=start))
        self.assertEqual((definition.starts, definition.ends), (start.timestamp(),) * 2)
        expired = definition_of(row(one_off=True, start_time=start, expires=at(2027, 1, 1, 12, 30)))
        self.assertTrue(expired.ends is not None and expired.starts is not None)
        self.assertLess(cast(float, expired.ends), cast(float, expired.starts))

    def test_crontab(self) -> None:
        """
        A crontab row gives its crontab.
        """
        schedule = Crontab(minute="0", hour="3", tz="Europe/Paris")
        self.assertEqual(definition_of(row(schedule=lambda: schedule)).schedule, schedule)

    def test_unreadable_arguments(self) -> None:
        """
        Arguments that are not a list and an object (a row written without
        validation) are refused with ValueError, which the reader logs.
        """
        self.assertRaises(ValueError, definition_of, row(args='{"a": 1}'))
        self.assertRaises(ValueError, definition_of, row(kwargs="[]"))
        self.assertRaises(ValueError, definition_of, row(args="not json"))


def _errors(instance: Any) -> dict[str, list[str]]:
    from django.core.exceptions import ValidationError

    try:
        instance.full_clean()
    except ValidationError as error:
        return error.message_dict
    return {}


def _main() -> None:
    """
    Configure a Django project on an in-memory SQLite database, migrate,
    and print what the models say, as JSON.
    """
    import django
    from django.conf import settings
    from django.core.management import call_command

    from tests.django_settings import django_test_settings

    settings.configure(**django_test_settings("tests.integration.scheduleproject.urls"))
    django.setup()
    call_command("migrate", verbosity=0)
    from twistedq.contrib.django.schedule_models import (
        CrontabSchedule,
        IntervalSchedule,
        PeriodicTaskState,
        ScheduleRevision,
        bump_revision,
    )
    from twistedq.task import tasks

    tasks.register(lambda: None, "reports.build")
    revisions = []

    def revision() -> None:
        revisions.append(ScheduleRevision.objects.get(pk=1).revision)

    every = IntervalSchedule.objects.create(every=90, period="minutes")
    revision()
    nightly = CrontabSchedule.objects.create(minute="30", hour="2", timezone="Europe/Paris")
    revision()
    task = PeriodicTaskState(name="db.report", task="reports.build", interval=every)
    found: dict[str, Any] = {
        "unknown_task": _errors(PeriodicTaskState(name="a", task="reports.nope", interval=every)),
        "known_task": _errors(task),
        "arguments": {
            "args_object": _errors(PeriodicTaskState(name="b", args="{}"))["args"],
            "kwargs_list": _errors(PeriodicTaskState(name="c", kwargs="[]"))["kwargs"],
            "args_not_json": _errors(PeriodicTaskState(name="d", args="[1,"))["args"],
        },
        "no_schedule": _errors(PeriodicTaskState(name="e", task="reports.build")),
        "two_schedules": _errors(
            PeriodicTaskState(name="f", task="reports.build", interval=every, crontab=nightly)
        ),
        "code_row": _errors(PeriodicTaskState(name="g")),
        "expires_first": _errors(
            PeriodicTaskState(
                name="h",
                task="reports.build",
                interval=every,
                start_time=datetime.datetime(2027, 1, 2, tzinfo=UTC),
                expires=datetime.datetime(2027, 1, 1, tzinfo=UTC),
            )
        ),
        "crontab": {
            **_errors(CrontabSchedule(minute="61", day_of_week="someday", timezone="Mars/Base")),
            "never": _errors(CrontabSchedule(day_of_month="31", month_of_year="2"))["__all__"],
        },
        "interval_zero": _errors(IntervalSchedule(every=0)),
        "schedules": {
            "interval": [every.schedule().spec(), str(every)],
            "crontab": [
                nightly.schedule().spec(),
                PeriodicTaskState(crontab=nightly).schedule_text(),
            ],
            "code": PeriodicTaskState(name="g").schedule_text(),
        },
    }
    task.save()
    revision()
    PeriodicTaskState.objects.filter(pk=task.pk).update(enabled=False)
    bump_revision()
    revision()
    task.delete()
    revision()
    every.delete()
    revision()
    found["revisions"] = revisions
    found["admin"] = _admin_checks()
    print(json.dumps(found))


def _admin_checks() -> dict[str, Any]:
    """
    What the admin's pages and actions do to a code-declared row and a
    defined one.
    """
    from django.contrib.auth.models import User
    from django.test import Client
    from django.test.utils import setup_test_environment

    from twistedq.contrib.django.schedule_models import (
        IntervalSchedule,
        PeriodicTaskState,
        ScheduleRevision,
    )

    setup_test_environment()  # the responses keep their template context
    web = Client()
    web.force_login(User.objects.create_superuser("admin", "admin@example.com", "secret"))
    base = "/admin/twistedq/periodictaskstate/"
    code = PeriodicTaskState.objects.create(name="code.nightly")
    defined = PeriodicTaskState.objects.create(
        name="db.report", task="reports.build", interval=IntervalSchedule.objects.create(every=5)
    )
    found: dict[str, Any] = {}
    page = web.get(f"{base}{code.pk}/change/").content.decode()
    found["code_inputs"] = [
        name for name in ("name", "task", "args", "enabled") if f'name="{name}"' in page
    ]
    web.post(f"{base}{code.pk}/change/", {"name": "renamed", "task": "x", "enabled": ""})
    code.refresh_from_db()
    found["code_after_post"] = [code.name, code.task, code.enabled]
    page = web.get(f"{base}{defined.pk}/change/").content.decode()
    found["defined_inputs"] = [
        name for name in ("name", "task", "args", "enabled") if f'name="{name}"' in page
    ]
    found["filters"] = {
        where: [row.name for row in web.get(f"{base}?defined={where}").context["cl"].result_list]
        for where in ("code", "database")
    }
    saved_at, revision = defined.updated_at, ScheduleRevision.objects.get(pk=1).revision
    for action in ("disable", "enable"):
        web.post(base, {"action": action, "_selected_action": [defined.pk], "index": "0"})
        defined.refresh_from_db()
        found[action] = [
            defined.enabled,
            defined.updated_at > saved_at,
            ScheduleRevision.objects.get(pk=1).revision > revision,
        ]
        saved_at, revision = defined.updated_at, ScheduleRevision.objects.get(pk=1).revision
    listing = web.get(base).content.decode()
    found["listed"] = ["declared in code" in listing, "every 5 seconds" in listing]
    return found


if __name__ == "__main__":
    _main()
