"""
The admin of task results and tasksets; periodic tasks and their schedules
are in :py:mod:`twistedq.contrib.django.schedule_admin`.

Results and tasksets are records the daemons write: the admin shows them
(and deletes them), but neither adds nor changes them.  Users who may
change results (``twistedq.change_taskresult``) may revoke tasks and run
them again with their stored arguments.  A value longer
than :py:data:`SHOWN_CHARACTERS` is cut in the page, which says how much
more there is.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html, format_html_join

from twistedq.arguments import stored_arguments
from twistedq.contrib.django import schedule_admin  # noqa: F401 (periodic tasks, schedules)
from twistedq.contrib.django.models import TaskResult, TaskSetMember, TaskSetResult

#: The most characters of one value (a result, a traceback, a stored
#: document) shown in an admin page.
SHOWN_CHARACTERS = 10_000
#: The most characters of a task's arguments shown in the list of results.
PREVIEW_CHARACTERS = 80
#: The most members of a taskset listed on its page.
MEMBERS_SHOWN = 200
#: What the admin shows of arguments that were not stored.
NOT_STORED = "- (not stored: see TWISTEDQ_TASK_ARGUMENTS_IN_RESULTS)"


def cut(text: str, limit: int = SHOWN_CHARACTERS) -> str:
    """
    ``text``, or its first ``limit`` characters followed by how many more
    there are.
    """
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\u2026 ({len(text) - limit:,} more characters)"


class ReadOnlyAdmin(admin.ModelAdmin):
    """
    Shows and deletes records; offers neither Add nor Save.
    """

    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False


class TitledValuesFilter(admin.AllValuesFieldListFilter):
    """
    The distinct values of a column, under a title of its own.
    """

    title_text = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.title = self.title_text


class DaemonFilter(TitledValuesFilter):
    title_text = "daemon"


class PeriodicTaskFilter(TitledValuesFilter):
    title_text = "periodic task"


def dashboard_url() -> str | None:
    """
    The URL of the live dashboard where the project mounts it
    (``twistedq.contrib.django.urls``, or its ``dashboard_urlpatterns``
    alone), else None.
    """
    try:
        return reverse("twistedq:dashboard")
    except NoReverseMatch:
        return None


class DashboardLinkAdmin(ReadOnlyAdmin):
    """
    Its list links to the live dashboard when one is mounted.
    """

    change_list_template = "admin/twistedq/change_list_with_dashboard.html"

    def changelist_view(self, request: Any, extra_context: dict[str, Any] | None = None) -> Any:
        context = {"twistedq_dashboard_url": dashboard_url(), **(extra_context or {})}
        return super().changelist_view(request, extra_context=context)


@admin.register(TaskResult)
class TaskResultAdmin(DashboardLinkAdmin):
    """
    Results, filtered by status, task, daemon, periodic task and date;
    the actions revoke (as the dashboard does: in the store, and the
    copies the daemons hold) and run again with the stored arguments.
    """

    list_display = (
        "task_id",
        "task_name",
        "status",
        "arguments_preview",
        "date_done",
        "worker",
    )
    list_filter = (
        "status",
        "task_name",
        ("worker", DaemonFilter),
        ("periodic_task", PeriodicTaskFilter),
        "date_done",
    )
    search_fields = ("task_id", "task_name", "taskset_id")
    actions = ("revoke", "run_again")
    fields = readonly_fields = (
        "task_id",
        "task_name",
        "status",
        "result_value",
        "arguments_text",
        "keyword_arguments_text",
        "traceback_text",
        "worker",
        "periodic_task",
        "taskset_link",
        "date_done",
        "expires_at",
        "document_text",
    )

    @admin.display(description="result")
    def result_value(self, obj: TaskResult) -> str:
        return cut(repr(obj.result))

    @admin.display(description="arguments")
    def arguments_text(self, obj: TaskResult) -> str:
        return cut(obj.task_args) if obj.task_args else NOT_STORED

    @admin.display(description="keyword arguments")
    def keyword_arguments_text(self, obj: TaskResult) -> str:
        return cut(obj.task_kwargs) if obj.task_kwargs else NOT_STORED

    @admin.display(description="arguments")
    def arguments_preview(self, obj: TaskResult) -> str:
        if not obj.task_args and not obj.task_kwargs:
            return "-"
        return cut(f"{obj.task_args}, {obj.task_kwargs}", PREVIEW_CHARACTERS)

    @admin.display(description="traceback")
    def traceback_text(self, obj: TaskResult) -> str:
        return format_html("<pre>{}</pre>", cut(obj.traceback)) if obj.traceback else "-"

    @admin.display(description="taskset")
    def taskset_link(self, obj: TaskResult) -> str:
        if not obj.taskset_id:
            return "-"
        url = reverse("admin:twistedq_tasksetresult_changelist")
        return format_html('<a href="{}?q={}">{}</a>', url, obj.taskset_id, obj.taskset_id)

    @admin.display(description="document")
    def document_text(self, obj: TaskResult) -> str:
        return cut(obj.document)

    def has_revoke_permission(self, request: Any) -> bool:
        return bool(request.user.has_perm("twistedq.change_taskresult"))

    @admin.action(description="Revoke the selected tasks", permissions=["revoke"])
    def revoke(self, request: Any, queryset: QuerySet[Any]) -> None:
        from twistedq.contrib.django.views import revoke_tasks

        ids = list(queryset.values_list("task_id", flat=True))
        try:
            answer = revoke_tasks(ids)
        except Exception as error:
            self.message_user(request, f"Nothing revoked: {error}", messages.ERROR)
            return
        revoked, running = answer.get("revoked", []), answer.get("running", [])
        self.message_user(
            request, f"{len(revoked)} of {len(ids)} task(s) revoked.", messages.SUCCESS
        )
        if running:
            self.message_user(
                request,
                f"{len(running)} task(s) running, not revoked: {', '.join(running[:10])}",
                messages.WARNING,
            )
        done = len(ids) - len(revoked) - len(running)
        if done > 0:
            self.message_user(
                request, f"{done} task(s) had finished already: not revoked.", messages.INFO
            )

    @admin.action(description="Run the selected tasks again", permissions=["revoke"])
    def run_again(self, request: Any, queryset: QuerySet[Any]) -> None:
        from twistedq.task import publish_task

        published = []
        for row in queryset:
            try:
                args, kwargs = stored_arguments(row.task_args, row.task_kwargs)
                result = publish_task(row.task_name, args, kwargs)
            except ValueError as error:
                self.message_user(
                    request,
                    f"Task {row.task_name}[{row.task_id}] not run again: {error}.",
                    messages.ERROR,
                )
                continue
            except Exception as error:
                self.message_user(
                    request,
                    f"Task {row.task_name}[{row.task_id}] not published: {error}",
                    messages.ERROR,
                )
                continue
            published.append(f"{row.task_name}[{result.task_id}]")
        if published:
            self.message_user(
                request, f"Published again as {', '.join(published)}.", messages.SUCCESS
            )


@admin.register(TaskSetResult)
class TaskSetResultAdmin(DashboardLinkAdmin):
    """
    Tasksets with their progress and, on a taskset's page, its members
    whose outcomes are stored.
    """

    list_display = ("taskset_id", "total", "progress", "created")
    search_fields = ("taskset_id",)
    fields = readonly_fields = ("taskset_id", "progress", "members", "created", "expires_at")

    def get_queryset(self, request: Any) -> QuerySet[Any]:
        finished = TaskSetMember.objects.filter(taskset_id=OuterRef("taskset_id")).values(
            "taskset_id"
        )
        return (
            super()
            .get_queryset(request)
            .annotate(
                completed=Subquery(
                    finished.annotate(n=Count("id")).values("n"), output_field=IntegerField()
                ),
                failures=Subquery(
                    finished.annotate(n=Count("id", filter=Q(failed=True))).values("n"),
                    output_field=IntegerField(),
                ),
            )
        )

    @admin.display(description="progress")
    def progress(self, obj: TaskSetResult) -> str:
        completed = getattr(obj, "completed", None) or 0
        failures = getattr(obj, "failures", None) or 0
        return format_html(
            '<progress value="{}" max="{}"></progress> {} of {} done, {} failed',
            completed,
            obj.total,
            completed,
            obj.total,
            failures,
        )

    @admin.display(description="members done")
    def members(self, obj: TaskSetResult) -> str:
        rows = list(
            TaskResult.objects.filter(taskset_id=obj.taskset_id)
            .order_by("date_done")
            .values_list("pk", "task_id", "task_name", "status")[:MEMBERS_SHOWN]
        )
        if not rows:
            return "-"
        items = format_html_join(
            "",
            '<li><a href="{}">{}</a> {} {}</li>',
            (
                (reverse("admin:twistedq_taskresult_change", args=[pk]), task_id, name, status)
                for pk, task_id, name, status in rows
            ),
        )
        more = ""
        if len(rows) == MEMBERS_SHOWN:
            more = f"(the first {MEMBERS_SHOWN}; search the results for {obj.taskset_id})"
        return format_html("<ul>{}</ul>{}", items, more)
