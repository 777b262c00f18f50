"""
The admin of task results, tasksets and periodic task state.
"""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html

from twistedq.contrib.django.models import PeriodicTaskState, TaskResult, TaskSetResult


@admin.register(TaskResult)
class TaskResultAdmin(admin.ModelAdmin):
    list_display = ("task_id", "task_name", "status", "date_done", "worker")
    list_filter = ("status", "task_name", "date_done")
    search_fields = ("task_id", "task_name")
    readonly_fields = (
        "task_id",
        "task_name",
        "status",
        "result_value",
        "traceback_text",
        "worker",
        "date_done",
        "expires_at",
        "document",
    )
    exclude = ("traceback",)

    @admin.display(description="result")
    def result_value(self, obj: TaskResult) -> str:
        return repr(obj.result)

    @admin.display(description="traceback")
    def traceback_text(self, obj: TaskResult) -> str:
        return format_html("<pre>{}</pre>", obj.traceback) if obj.traceback else "-"

    def has_add_permission(self, request: object) -> bool:
        return False


@admin.register(TaskSetResult)
class TaskSetResultAdmin(admin.ModelAdmin):
    list_display = ("taskset_id", "total", "created")
    search_fields = ("taskset_id",)


@admin.register(PeriodicTaskState)
class PeriodicTaskStateAdmin(admin.ModelAdmin):
    list_display = ("name", "enabled", "last_run_at", "next_run_at", "total_run_count")
    readonly_fields = ("name", "last_run_at", "next_run_at", "total_run_count")
    list_editable = ("enabled",)
    list_filter = ("enabled",)
    search_fields = ("name",)
