"""
The admin of periodic tasks and their schedules.

One list holds every periodic task: those defined here (a schedule, a
task name, JSON arguments) and those declared in code, whose rows the
scheduler makes and whose only field the admin changes is ``enabled``.
The actions enable, disable and run now (publish the task at once, with
its arguments, outside its schedule).  The daemons see an added, changed
or disabled task within seconds.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.utils import timezone

from twistedq.contrib.django.schedule_models import (
    OWN_JOBS,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTaskState,
    bump_revision,
)

__all__ = ["CrontabScheduleAdmin", "IntervalScheduleAdmin", "PeriodicTaskAdmin"]

#: The fields of a periodic task defined here, as the add and change
#: forms show them.
DEFINED_FIELDS = (
    "name",
    "task",
    "interval",
    "crontab",
    "args",
    "kwargs",
    "queue",
    "enabled",
    "one_off",
    "start_time",
    "expires",
    "description",
)
#: What the change form of a task declared in code shows (only ``enabled``
#: is changed).
CODE_FIELDS = ("name", "enabled", "last_run_at", "next_run_at", "total_run_count")
_RUN_FIELDS = ("last_run_at", "next_run_at", "total_run_count", "updated_at")


class IntervalScheduleForm(forms.ModelForm):
    """
    An interval: at least 1 period (the model caps it at 10 years).
    """

    every = forms.IntegerField(min_value=1, help_text="How many periods between runs (at least 1).")

    class Meta:
        model = IntervalSchedule
        fields = ("every", "period")


@admin.register(IntervalSchedule)
class IntervalScheduleAdmin(admin.ModelAdmin):
    form = IntervalScheduleForm
    list_display = ("__str__", "every", "period")
    list_filter = ("period",)


@admin.register(CrontabSchedule)
class CrontabScheduleAdmin(admin.ModelAdmin):
    list_display = ("__str__", "minute", "hour", "day_of_week", "day_of_month", "month_of_year")
    list_filter = ("timezone",)


class PeriodicTaskForm(forms.ModelForm):
    """
    A periodic task defined here: it needs a task name and a schedule
    (the model checks the rest).
    """

    class Meta:
        model = PeriodicTaskState
        fields = DEFINED_FIELDS
        widgets = {
            "args": forms.Textarea(attrs={"rows": 2}),
            "kwargs": forms.Textarea(attrs={"rows": 2}),
            "description": forms.Textarea(attrs={"rows": 2}),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "task" in self.fields:
            self.fields["task"].required = True
            self.fields["task"].help_text = _known_tasks_help()


def _known_tasks_help() -> str:
    from twistedq.task import tasks

    try:
        tasks.autodiscover()
    except Exception:  # a broken tasks module: the field's check says so
        pass
    names = list(tasks)
    shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
    return f"The registered name of the task to publish ({shown or 'none registered'})."


class DefinedFilter(admin.SimpleListFilter):
    title = "defined"
    parameter_name = "defined"

    def lookups(self, request: Any, model_admin: Any) -> list[tuple[str, str]]:
        return [("database", "in the admin"), ("code", "in code")]

    def queryset(self, request: Any, queryset: QuerySet[Any]) -> QuerySet[Any]:
        in_database = Q(interval__isnull=False) | Q(crontab__isnull=False)
        if self.value() == "database":
            return queryset.filter(in_database)
        if self.value() == "code":
            return queryset.exclude(in_database)
        return queryset


@admin.register(PeriodicTaskState)
class PeriodicTaskAdmin(admin.ModelAdmin):
    form = PeriodicTaskForm
    list_display = (
        "name",
        "schedule",
        "task_name",
        "enabled",
        "last_run_at",
        "next_run_at",
        "total_run_count",
    )
    list_editable = ("enabled",)
    list_filter = ("enabled", DefinedFilter, "one_off")
    list_select_related = ("interval", "crontab")
    search_fields = ("name", "task", "description")
    actions = ["enable", "disable", "run_now"]

    @admin.display(description="schedule")
    def schedule(self, obj: PeriodicTaskState) -> str:
        return obj.schedule_text()

    @admin.display(description="task", ordering="task")
    def task_name(self, obj: PeriodicTaskState) -> str:
        return obj.task or obj.name

    def get_fields(self, request: Any, obj: PeriodicTaskState | None = None) -> Any:
        if obj is not None and not obj.defined_in_database:
            return CODE_FIELDS
        return DEFINED_FIELDS + (_RUN_FIELDS if obj is not None else ())

    def get_readonly_fields(self, request: Any, obj: PeriodicTaskState | None = None) -> Any:
        if obj is not None and not obj.defined_in_database:
            return tuple(name for name in CODE_FIELDS if name != "enabled")
        return _RUN_FIELDS

    def get_form(self, request: Any, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is not None and not obj.defined_in_database:
            kwargs["form"] = forms.ModelForm  # only ``enabled``
        return super().get_form(request, obj, change=change, **kwargs)

    def _set_enabled(self, request: Any, queryset: QuerySet[Any], enabled: bool) -> None:
        if not enabled:
            own = sorted(queryset.filter(name__in=OWN_JOBS).values_list("name", flat=True))
            if own:
                self.message_user(
                    request,
                    f"Not disabled: {', '.join(own)} (the daemons' own jobs always run).",
                    messages.WARNING,
                )
                queryset = queryset.exclude(name__in=OWN_JOBS)
        # A one-off task enabled again runs at its next slot: its save time
        # is now.
        changed = queryset.update(enabled=enabled, updated_at=timezone.now())
        bump_revision(queryset.db)
        what = "enabled" if enabled else "disabled"
        self.message_user(request, f"{changed} periodic task(s) {what}.", messages.SUCCESS)

    @admin.action(description="Enable the selected periodic tasks", permissions=["change"])
    def enable(self, request: Any, queryset: QuerySet[Any]) -> None:
        self._set_enabled(request, queryset, True)

    @admin.action(description="Disable the selected periodic tasks", permissions=["change"])
    def disable(self, request: Any, queryset: QuerySet[Any]) -> None:
        self._set_enabled(request, queryset, False)

    @admin.action(description="Run the selected periodic tasks now", permissions=["change"])
    def run_now(self, request: Any, queryset: QuerySet[Any]) -> None:
        from twistedq.task import publish_task

        published = []
        for row in queryset:
            if row.name in OWN_JOBS:
                self.message_user(
                    request,
                    f"Periodic task {row.name} not published: a daemon's own job is no task.",
                    messages.ERROR,
                )
                continue
            try:
                result = publish_task(
                    row.task or row.name,
                    json.loads(row.args),
                    json.loads(row.kwargs),
                    queue=row.queue or None,
                )
            except Exception as error:
                self.message_user(
                    request, f"Periodic task {row.name} not published: {error}", messages.ERROR
                )
                continue
            published.append(f"{row.name} ({result.task_id})")
        if published:
            self.message_user(request, f"Published {', '.join(published)}.", messages.SUCCESS)
