"""
The admin of task results and tasksets; periodic tasks and their schedules
are in :py:mod:`twistedq.contrib.django.schedule_admin`.

Results and tasksets are records the daemons write: the admin shows them
(and deletes them), but neither adds nor changes them.  A value longer
than :py:data:`SHOWN_CHARACTERS` is cut in the page, which says how much
more there is.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.utils.html import format_html

from twistedq.contrib.django import schedule_admin  # noqa: F401 (periodic tasks, schedules)
from twistedq.contrib.django.models import TaskResult, TaskSetResult

#: The most characters of one value (a result, a traceback, a stored
#: document) shown in an admin page.
SHOWN_CHARACTERS = 10_000


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


@admin.register(TaskResult)
class TaskResultAdmin(ReadOnlyAdmin):
    list_display = ("task_id", "task_name", "status", "date_done", "worker")
    list_filter = ("status", "task_name", "date_done")
    search_fields = ("task_id", "task_name")
    fields = readonly_fields = (
        "task_id",
        "task_name",
        "status",
        "result_value",
        "traceback_text",
        "worker",
        "date_done",
        "expires_at",
        "document_text",
    )

    @admin.display(description="result")
    def result_value(self, obj: TaskResult) -> str:
        return cut(repr(obj.result))

    @admin.display(description="traceback")
    def traceback_text(self, obj: TaskResult) -> str:
        return format_html("<pre>{}</pre>", cut(obj.traceback)) if obj.traceback else "-"

    @admin.display(description="document")
    def document_text(self, obj: TaskResult) -> str:
        return cut(obj.document)


@admin.register(TaskSetResult)
class TaskSetResultAdmin(ReadOnlyAdmin):
    list_display = ("taskset_id", "total", "created")
    search_fields = ("taskset_id",)
    fields = readonly_fields = ("taskset_id", "total", "created", "expires_at")
