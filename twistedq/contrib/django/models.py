"""
The database result backend's tables (``TWISTEDQ_RESULT_BACKEND =
"django://"``): task results, tasksets and periodic task state (periodic tasks and their
schedules are in :py:mod:`twistedq.contrib.django.schedule_models`).
"""

from __future__ import annotations

import json
from typing import Any

from django.db import models

# Periodic tasks and their schedules (the state of the code-declared ones too).
from twistedq.contrib.django.schedule_models import (  # noqa: F401
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTaskState,
    ScheduleRevision,
)


class TaskResult(models.Model):
    """
    The outcome of one task, or its pending record.  ``document`` is the
    stored outcome, the same JSON every result store keeps; the other
    columns repeat parts of it for filtering in the admin.  ``task_args``
    and ``task_kwargs`` hold the JSON text of the task's arguments when
    ``TWISTEDQ_TASK_ARGUMENTS_IN_RESULTS`` kept them (a text that is no
    JSON list or object when they were cut to its size); ``worker`` names
    the daemon that stored the outcome, ``taskset_id`` the taskset it
    counts in and ``periodic_task`` the periodic task that published it.
    """

    task_id = models.CharField(max_length=36, unique=True)
    task_name = models.CharField(max_length=255, blank=True, db_index=True)
    status = models.CharField(max_length=16, db_index=True)
    document = models.TextField()
    traceback = models.TextField(blank=True, default="")
    worker = models.CharField(max_length=255, blank=True, default="", db_index=True)
    date_done = models.DateTimeField(null=True, blank=True, db_index=True)
    expires_at = models.DateTimeField(db_index=True)
    # Nullable: a daemon of the previous version, which does not name
    # them, keeps storing results on a migrated database.
    task_args = models.TextField("arguments", null=True, blank=True, default="")
    task_kwargs = models.TextField("keyword arguments", null=True, blank=True, default="")
    taskset_id = models.CharField(max_length=36, null=True, blank=True, default="", db_index=True)
    periodic_task = models.CharField(
        max_length=255, null=True, blank=True, default="", db_index=True
    )

    class Meta:
        verbose_name = "task result"
        ordering = ["-date_done"]

    def __str__(self) -> str:
        return f"{self.task_name or 'task'} {self.task_id} {self.status}"

    @property
    def result(self) -> Any:
        """
        The task's return value (or a failure's exception message).
        """
        document = json.loads(self.document)
        exc = document.get("exc")
        return exc.get("message") if exc else document.get("result")


class TaskSetResult(models.Model):
    """
    A taskset: how many subtasks it has.
    """

    taskset_id = models.CharField(max_length=36, unique=True)
    total = models.PositiveIntegerField()
    created = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name = "taskset result"

    def __str__(self) -> str:
        return f"taskset {self.taskset_id} ({self.total})"


class TaskSetMember(models.Model):
    """
    One finished subtask of a taskset (counted once, however often stored).
    """

    taskset_id = models.CharField(max_length=36, db_index=True)
    task_id = models.CharField(max_length=36)
    failed = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["taskset_id", "task_id"], name="twistedq_member_once")
        ]


class PeriodicSlot(models.Model):
    """
    The claim on one slot of a periodic schedule: held under a lease by
    the daemon publishing it, then marked done.
    """

    slot_key = models.CharField(max_length=36, unique=True)
    owner = models.CharField(max_length=255)
    done = models.BooleanField(default=False)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name = "periodic slot"

    def __str__(self) -> str:
        return self.slot_key


class ClaimedTask(models.Model):
    """
    The claim on a task: the latest fencing token and, while an attempt
    holds it, until when its lease runs.  Kept as long as results, as the
    task's fence.
    """

    task_id = models.CharField(max_length=36, unique=True)
    token = models.PositiveIntegerField(default=1)
    lease_until = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name = "claimed task"

    def __str__(self) -> str:
        return self.task_id


class ParkedMessage(models.Model):
    """
    The message of a long-running claimed task, kept here once the daemon
    acknowledged it to the broker; published again if its daemon dies.
    """

    task_id = models.CharField(max_length=36, unique=True)
    token = models.PositiveIntegerField()
    queue = models.CharField(max_length=255)
    body = models.BinaryField()

    class Meta:
        verbose_name = "parked message"

    def __str__(self) -> str:
        return self.task_id
