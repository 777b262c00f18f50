"""
Periodic tasks in the database: interval and crontab schedules, and the
periodic task row, which is both what the admin defines and the state the
scheduler keeps (when a task last ran, how often, whether it is paused).

A periodic task row is *defined in the database* when it has a schedule
(an :py:class:`IntervalSchedule` or a :py:class:`CrontabSchedule`) and a
task name: the daemons' schedulers publish that task with the row's
arguments.  A row without a schedule is the state of a
:py:class:`twistedq.task.PeriodicTask` declared in code, made by the
scheduler; only its ``enabled`` box is the admin's.

Every save or delete of these rows bumps :py:class:`ScheduleRevision`, the
one number the daemons poll to know that the definitions changed (an
``update()`` on a queryset sends no signal: call :py:func:`bump_revision`
after one).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F
from django.db.models.signals import post_delete, post_save

from twistedq.daemon.periodic import CLEANUP_JOB, RECOVERY_JOB
from twistedq.message import loads_json, queue_name_error
from twistedq.schedules import Crontab, Interval

#: The daemons' own periodic jobs (the recovery of parked messages, the
#: clean-up of expired results): no task, never paused nor run from the
#: admin or the dashboard.
OWN_JOBS = frozenset({RECOVERY_JOB, CLEANUP_JOB})

__all__ = [
    "OWN_JOBS",
    "CrontabSchedule",
    "IntervalSchedule",
    "PeriodicTaskState",
    "ScheduleRevision",
    "bump_revision",
    "check_task_name",
    "validate_json_list",
    "validate_json_object",
    "validate_time_zone",
]


def validate_json_list(text: str) -> None:
    """
    :raises ValidationError: ``text`` is not a JSON list.
    """
    _validate_json(text, list, 'a JSON list, such as [1, "two"]')


def validate_json_object(text: str) -> None:
    """
    :raises ValidationError: ``text`` is not a JSON object.
    """
    _validate_json(text, dict, 'a JSON object, such as {"key": "value"}')


#: How deep a periodic task's arguments may nest (lists and objects).
MAX_ARGUMENT_DEPTH = 100
#: The longest interval, in seconds: 10 years (longer ones overflow the
#: date arithmetic of the schedulers).
MAX_INTERVAL_SECONDS = 10 * 365 * 86400


def _depth(value: Any) -> int:
    """
    How deep lists and objects nest in ``value`` (0 for a scalar).
    """
    deepest, level = 0, [(value, 1)]
    while level:
        item, depth = level.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            level.extend((child, depth + 1) for child in children)
    return deepest


def _validate_json(text: str, kind: type, wanted: str) -> None:
    # As the daemons read a message: no NaN nor Infinity, finite floats.
    try:
        value = loads_json(text)
    except RecursionError:
        value = None
    except (TypeError, ValueError) as error:
        raise ValidationError(f"Not JSON ({error}): write {wanted}.", code="json") from None
    if value is None or _depth(value) > MAX_ARGUMENT_DEPTH:
        raise ValidationError(
            f"Lists and objects nested over {MAX_ARGUMENT_DEPTH} deep: write {wanted}.",
            code="json",
        )
    if not isinstance(value, kind):
        raise ValidationError(f"Write {wanted}, not {type(value).__name__}.", code="json")


def validate_time_zone(name: str) -> None:
    """
    :raises ValidationError: ``name`` is no IANA time zone.
    """
    try:
        Crontab(tz=name)
    except ValueError:
        raise ValidationError(
            f"Unknown time zone {name!r}: write an IANA name such as Europe/Paris or UTC.",
            code="time_zone",
        ) from None


def check_task_name(name: str) -> None:
    """
    Check that a task of that name is registered: the registry of
    ``twistedq.task.tasks`` once every installed app's ``tasks`` module is
    imported (:py:meth:`~twistedq.registry.TaskRegistry.autodiscover`).

    :raises ValidationError: no task has that name; the message names it.
    """
    from twistedq.registry import tasks

    if name not in tasks:
        try:
            tasks.autodiscover()
        except Exception as error:
            raise ValidationError(
                f"Cannot check the task name: importing the tasks modules failed ({error!r}).",
                code="tasks_modules",
            ) from None
    if name not in tasks:
        raise ValidationError(
            f"No task named {name!r} is registered (looked in the tasks module of every "
            "installed app).",
            code="unknown_task",
        )


class IntervalSchedule(models.Model):
    """
    A slot every ``every`` ``period``, counted from the epoch (midnight UTC,
    1 January 1970): every 30 seconds runs at :00 and :30 of each minute.
    """

    SECONDS = "seconds"
    MINUTES = "minutes"
    HOURS = "hours"
    DAYS = "days"
    PERIODS = [(SECONDS, "seconds"), (MINUTES, "minutes"), (HOURS, "hours"), (DAYS, "days")]
    _SECONDS_IN = {SECONDS: 1, MINUTES: 60, HOURS: 3600, DAYS: 86400}

    every = models.PositiveIntegerField(
        help_text="How many periods between runs (at least 1).",
    )
    period = models.CharField(max_length=16, choices=PERIODS, default=SECONDS)

    class Meta:
        verbose_name = "interval schedule"
        ordering = ["period", "every"]

    def __str__(self) -> str:
        unit = self.period[:-1] if self.every == 1 else self.period
        return f"every {self.every} {unit}"

    def clean(self) -> None:
        if self.every is not None and self.every < 1:
            raise ValidationError({"every": "An interval runs at least every 1 period."})
        if self.every is not None and self.period in self._SECONDS_IN:
            if self.seconds > MAX_INTERVAL_SECONDS:
                raise ValidationError(
                    {
                        "every": f"An interval runs at most every 10 years "
                        f"({MAX_INTERVAL_SECONDS} seconds)."
                    }
                )

    @property
    def seconds(self) -> int:
        """
        The interval in seconds.
        """
        return int(self.every) * self._SECONDS_IN[self.period]

    def schedule(self) -> Interval:
        """
        The :py:class:`~twistedq.schedules.Interval` the scheduler runs.
        """
        return Interval(self.seconds)


class CrontabSchedule(models.Model):
    """
    Slots at the minutes whose fields all match, read in ``timezone``, as
    :py:class:`twistedq.schedules.Crontab` reads them: ``*``, ``*/15``,
    ``1-5``, ``mon-fri``, ``0,30``.
    """

    minute = models.CharField(max_length=240, default="*", help_text="0-59, e.g. */15 or 0,30.")
    hour = models.CharField(max_length=96, default="*", help_text="0-23, e.g. 9-17.")
    day_of_week = models.CharField(
        max_length=64, default="*", help_text="0-7 or sun-sat (0 and 7 are Sunday)."
    )
    day_of_month = models.CharField(max_length=124, default="*", help_text="1-31.")
    month_of_year = models.CharField(max_length=64, default="*", help_text="1-12 or jan-dec.")
    timezone = models.CharField(
        max_length=63,
        default="UTC",
        validators=[validate_time_zone],
        help_text="The IANA time zone the fields are read in, e.g. Europe/Paris.",
    )

    class Meta:
        verbose_name = "crontab schedule"

    FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")

    def __str__(self) -> str:
        fields = " ".join(getattr(self, name) for name in self.FIELDS)
        return f"{fields} ({self.timezone})"

    def clean(self) -> None:
        errors: dict[str, str] = {}
        for name in self.FIELDS:
            try:
                Crontab(**{name: getattr(self, name)})
            except ValueError as error:
                errors[name] = str(error)
        if errors:
            raise ValidationError(errors)
        try:
            validate_time_zone(self.timezone or "UTC")
        except ValidationError:
            return  # said on the field already
        try:
            self.schedule()
        except ValueError as error:
            if "never runs" in str(error):
                raise ValidationError(
                    f"This crontab never runs: day of month {self.day_of_month} never falls "
                    f"in month {self.month_of_year}."
                ) from None
            raise ValidationError(str(error)) from None

    def schedule(self) -> Crontab:
        """
        The :py:class:`~twistedq.schedules.Crontab` the scheduler runs.

        :raises ValueError: a field or the time zone cannot be read.
        """
        fields = {name: getattr(self, name) for name in self.FIELDS}
        return Crontab(**fields, tz=self.timezone or "UTC")


class PeriodicTaskState(models.Model):
    """
    A periodic task: defined here (a schedule, a task name, its arguments)
    or declared in code; when it last ran, how often, and whether it is
    paused.
    """

    name = models.CharField(max_length=255, unique=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    total_run_count = models.PositiveIntegerField(default=0)
    next_run_at = models.DateTimeField(null=True, blank=True)
    enabled = models.BooleanField(
        default=True, help_text="Untick to pause the task; daemons see it within seconds."
    )
    task = models.CharField(
        max_length=255,
        blank=True,
        default="",
        help_text="The registered name of the task to publish (empty: declared in code).",
    )
    interval = models.ForeignKey(IntervalSchedule, null=True, blank=True, on_delete=models.PROTECT)
    crontab = models.ForeignKey(CrontabSchedule, null=True, blank=True, on_delete=models.PROTECT)
    args = models.TextField(
        default="[]",
        validators=[validate_json_list],
        help_text='Positional arguments, a JSON list: [1, "two"].',
    )
    kwargs = models.TextField(
        default="{}",
        validators=[validate_json_object],
        help_text='Keyword arguments, a JSON object: {"key": "value"}.',
    )
    queue = models.CharField(
        max_length=255, blank=True, default="", help_text="Empty: the daemons' own queue."
    )
    one_off = models.BooleanField(
        default=False, help_text="Run once, at the first slot after it is saved, then pause."
    )
    start_time = models.DateTimeField(null=True, blank=True, help_text="No runs before.")
    expires = models.DateTimeField(null=True, blank=True, help_text="No runs after.")
    description = models.TextField(blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "periodic task"

    def __str__(self) -> str:
        return self.name

    @property
    def defined_in_database(self) -> bool:
        """
        Whether the row defines its task (a schedule) rather than keeping
        the state of one declared in code.
        """
        return self.interval_id is not None or self.crontab_id is not None

    def clean(self) -> None:
        if self.name in OWN_JOBS and not self.enabled:
            raise ValidationError(
                {"enabled": "The daemons' own jobs always run: they cannot be paused."}
            )
        if not self.defined_in_database and not self.task:
            return  # the state of a task declared in code
        errors: dict[str, Any] = {}
        if self.interval_id is not None and self.crontab_id is not None:
            errors["crontab"] = "Choose an interval or a crontab schedule, not both."
        elif not self.defined_in_database:
            errors["interval"] = "Choose an interval or a crontab schedule."
        if not self.task:
            errors["task"] = "Name the task to publish."
        else:
            try:
                check_task_name(self.task)
            except ValidationError as error:
                errors["task"] = error.messages
        if self.queue and queue_name_error(self.queue) is not None:
            errors["queue"] = f"The daemons cannot publish there: {queue_name_error(self.queue)}."
        if self.start_time and self.expires and self.expires <= self.start_time:
            errors["expires"] = "Expires must come after the start time."
        if errors:
            raise ValidationError(errors)

    def schedule(self) -> Interval | Crontab:
        """
        The row's schedule.

        :raises ValueError: the row has no schedule (declared in code).
        """
        if self.interval is not None:
            return self.interval.schedule()
        if self.crontab is not None:
            return self.crontab.schedule()
        raise ValueError(f"periodic task {self.name!r} is declared in code")

    def schedule_text(self) -> str:
        """
        The schedule in words, for the admin's list.
        """
        if self.interval is not None:
            return str(self.interval)
        if self.crontab is not None:
            return f"crontab {self.crontab}"
        return "declared in code"


class ScheduleRevision(models.Model):
    """
    One row, whose ``revision`` grows with every change of a periodic task
    or schedule: what the daemons poll.
    """

    revision = models.BigIntegerField(default=0)
    changed_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "schedule revision"


def bump_revision(using: str | None = None) -> None:
    """
    Tell the daemons that periodic tasks or schedules changed.
    """
    from django.utils import timezone

    rows = ScheduleRevision.objects.using(using or "default")
    if not rows.filter(pk=1).update(revision=F("revision") + 1, changed_at=timezone.now()):
        rows.get_or_create(pk=1, defaults={"revision": 1})


def _changed(sender: Any, using: str | None = None, **kwargs: Any) -> None:
    bump_revision(using)


for _model in (IntervalSchedule, CrontabSchedule, PeriodicTaskState):
    post_save.connect(_changed, sender=_model, dispatch_uid=f"twistedq-revision-save-{_model}")
    post_delete.connect(_changed, sender=_model, dispatch_uid=f"twistedq-revision-del-{_model}")
