"""
The seed's JSON views, served by Django: the same documents as the
daemon's status resource, made by the same functions.  A failure's
traceback is left out unless the setting ``TWISTEDQ_STATUS_TRACEBACKS``
is true; an unknown taskset answers 404.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.http import Http404, HttpRequest, JsonResponse

from twistedq.message import is_task_id
from twistedq.outcome import status_document, taskset_status_document
from twistedq.states import SUCCESS

if TYPE_CHECKING:
    from twistedq.client import Client

__all__ = ["is_task_done", "task_status", "taskset_status"]


def _client() -> Client:
    # Imported on first use, so that loading the URLs does not load Twisted.
    from twistedq.client import default_client

    return default_client()


def _checked(task_id: str) -> str:
    if not is_task_id(task_id):
        raise Http404("not a task id")
    return task_id


def task_status(request: HttpRequest, task_id: str) -> JsonResponse:
    """
    ``celery/<task_id>/status/``: ``{"task": {"id", "status", "result"}}``,
    with ``exc`` for a failure, and its ``traceback`` when the setting
    ``TWISTEDQ_STATUS_TRACEBACKS`` is true (the URL answers anyone who
    holds the id; the admin always shows it).
    """
    client = _client()
    outcome = client.get_outcome(_checked(task_id))
    document = status_document(outcome, client.settings.seed_states)
    if not getattr(settings, "TWISTEDQ_STATUS_TRACEBACKS", False):
        document["task"].pop("traceback", None)
    return JsonResponse(document)


def is_task_done(request: HttpRequest, task_id: str) -> JsonResponse:
    """
    ``celery/<task_id>/done/``: ``{"task": {"id", "executed"}}``, executed
    meaning finished successfully, as in the seed.
    """
    outcome = _client().get_outcome(_checked(task_id))
    return JsonResponse({"task": {"id": task_id, "executed": outcome.status == SUCCESS}})


def taskset_status(request: HttpRequest, taskset_id: str) -> JsonResponse:
    """
    ``celery/taskset/<taskset_id>/status/``: the taskset's progress from one
    store read; 404 with ``{"error": "unknown taskset", ...}`` for a taskset
    the store does not know (never created, or expired), as the daemon's
    status site answers.
    """
    state = _client().get_taskset(_checked(taskset_id))
    if state is None:
        return JsonResponse({"error": "unknown taskset", "taskset": {"id": taskset_id}}, status=404)
    return JsonResponse(taskset_status_document(taskset_id, state))
