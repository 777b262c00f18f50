"""
The seed's JSON views, served by Django: the same documents as the
daemon's status resource, made by the same functions.  A failure's
traceback is left out unless the setting ``TWISTEDQ_STATUS_TRACEBACKS``
is true; an unknown taskset answers 404.  The taskset status has a
Server-Sent Events twin, and the live dashboard is served to staff users
(actions to those with a permission).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)
from django.middleware.csrf import get_token
from django.views.decorators.http import require_POST

from twistedq.message import is_task_id
from twistedq.outcome import status_document, taskset_status_document
from twistedq.states import SUCCESS

if TYPE_CHECKING:
    from twistedq.client import Client
    from twistedq.dashboard.threaded import ThreadedDashboard

__all__ = [
    "dashboard_action",
    "dashboard_config",
    "dashboard_dead_letters",
    "dashboard_failure",
    "dashboard_page",
    "dashboard_state",
    "dashboard_static",
    "dashboard_stream",
    "is_task_done",
    "revoke_tasks",
    "task_status",
    "taskset_status",
    "taskset_status_stream",
]


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


# The live progress of a taskset.

#: Seconds between two reads of a taskset's progress by its stream.
PROGRESS_INTERVAL = 0.5
#: Seconds between keep-alive comments of an idle stream.
KEEP_ALIVE = 15.0


def _event(document: Any, event: str | None = None, event_id: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    if event_id is not None:
        head += f"id: {event_id}\n"
    return (head + "data: " + json.dumps(document, separators=(",", ":")) + "\n\n").encode()


def _progress_event(document: dict[str, Any]) -> bytes:
    """
    A taskset's document as an event; the ready one (the last) carries the
    id ``ready``, so that a browser reconnecting with it is answered 204.
    """
    return _event(document, event_id="ready" if document["taskset"]["ready"] else None)


def _event_stream(chunks: Iterator[bytes]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(chunks, content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-store"
    response["X-Accel-Buffering"] = "no"  # nginx would buffer it
    return response


def taskset_status_stream(request: HttpRequest, taskset_id: str) -> HttpResponse:
    """
    ``celery/taskset/<taskset_id>/status/stream``: the Server-Sent Events
    twin of :py:func:`taskset_status`: its document at once and again on
    each change (the store read every :py:data:`PROGRESS_INTERVAL`
    seconds), the stream ending once the taskset is ready (its last event
    with the id ``ready``: a browser reconnecting with it is answered
    204); 404 for an unknown taskset.  The response holds its worker thread until then.
    """
    if request.headers.get("Last-Event-ID") == "ready":
        # It has the final document already: 204 stops an EventSource.
        return HttpResponse(status=204)
    client = _client()
    state = client.get_taskset(_checked(taskset_id))
    if state is None:
        return JsonResponse({"error": "unknown taskset", "taskset": {"id": taskset_id}}, status=404)

    def events() -> Iterator[bytes]:
        yield b"retry: 2000\n\n"
        document = taskset_status_document(taskset_id, state)
        yield _progress_event(document)
        quiet_since = time.monotonic()
        while not document["taskset"]["ready"]:
            time.sleep(PROGRESS_INTERVAL)
            try:
                found = client.get_taskset(taskset_id)
            except Exception:  # an outage: the next read may do
                found = None
            if found is not None and taskset_status_document(taskset_id, found) != document:
                document = taskset_status_document(taskset_id, found)
                quiet_since = time.monotonic()
                yield _progress_event(document)
            elif time.monotonic() - quiet_since >= KEEP_ALIVE:
                quiet_since = time.monotonic()
                yield b": keep-alive\n\n"

    return _event_stream(events())


# The dashboard, for staff users.

#: The permission each action needs (besides being staff).
ACTION_PERMISSIONS = {
    "revoke": "twistedq.change_taskresult",
    "terminate": "twistedq.change_taskresult",
    "republish": "twistedq.change_taskresult",
    "pause": "twistedq.change_periodictaskstate",
    "resume": "twistedq.change_periodictaskstate",
}
_STATIC_TYPES = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
}
_dashboards: list[ThreadedDashboard] = []


def _dashboard() -> ThreadedDashboard:
    if not _dashboards:
        from twistedq.dashboard.threaded import ThreadedDashboard

        _dashboards.append(ThreadedDashboard(_client()))
    return _dashboards[0]


def revoke_tasks(ids: list[str]) -> dict[str, list[str]]:
    """
    Revoke tasks as the dashboard does: REVOKED in the store for those not
    run yet, and the daemons asked to drop the copies they hold.  Answers
    ``revoked`` (the ids revoked) and ``running`` (those running, which
    go on).  For the admin's action.
    """
    dashboard = _dashboard()
    answers: dict[str, list[str]] = {"revoked": [], "running": []}
    for start in range(0, len(ids), 1000):
        answer = dashboard.run(
            dashboard.actions().run, "revoke", {"ids": ids[start : start + 1000]}
        )
        for key, found in answers.items():
            found.extend(answer.get(key, []))
    return answers


def _allowed_actions(request: HttpRequest) -> list[str]:
    offered = _dashboard().actions().offered()
    user = request.user
    return [name for name in offered if user.has_perm(ACTION_PERMISSIONS[name])]


def _staff(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    from django.contrib.admin.views.decorators import staff_member_required

    return staff_member_required(view)


@_staff
def dashboard_page(request: HttpRequest) -> HttpResponse:
    """
    ``dashboard/``: the page (the same as the daemon's).
    """
    from twistedq.dashboard.resources import STATIC

    response = HttpResponse(
        (STATIC / "dashboard.html").read_bytes(), content_type="text/html; charset=utf-8"
    )
    response["Cache-Control"] = "no-store"
    return response


@_staff
def dashboard_static(request: HttpRequest, name: str) -> HttpResponse:
    """
    ``dashboard/static/<name>``: the page's style sheet and script.
    """
    from twistedq.dashboard.resources import STATIC

    if name not in _STATIC_TYPES:
        raise Http404("no such file")
    return HttpResponse((STATIC / name).read_bytes(), content_type=_STATIC_TYPES[name])


@_staff
def dashboard_config(request: HttpRequest) -> JsonResponse:
    """
    ``dashboard/config``: the actions this user may run, and the CSRF
    header and token the page sends with them.
    """
    return JsonResponse(
        {
            "actions": _allowed_actions(request),
            "token_header": None,
            "csrf_header": "X-CSRFToken",
            "csrf_token": get_token(request),
        }
    )


@_staff
def dashboard_state(request: HttpRequest) -> JsonResponse:
    """
    ``dashboard/state``: the snapshot as JSON.
    """
    return JsonResponse(_dashboard().snapshot())


@_staff
def dashboard_stream(request: HttpRequest) -> HttpResponse:
    """
    ``dashboard/stream``: the snapshot, then the changes, as Server-Sent
    Events; the events exchange is listened to while a page is open.
    """
    return _event_stream(_dashboard().stream())


@_staff
def dashboard_failure(request: HttpRequest, task_id: str) -> JsonResponse:
    """
    ``dashboard/failure/<id>``: a task's status with its traceback (staff
    see it in the admin too).
    """
    return JsonResponse(_dashboard().failure(_checked(task_id), tracebacks=True))


@_staff
def dashboard_dead_letters(request: HttpRequest) -> JsonResponse:
    """
    ``dashboard/deadletters``: the first 50 dead letters, for users who may
    republish them.
    """
    if "republish" not in _allowed_actions(request):
        return JsonResponse({"error": "permission needed"}, status=403)
    dashboard = _dashboard()
    reader = dashboard.actions().dead_letters
    assert reader is not None
    return JsonResponse(dashboard.run(reader, 50), safe=False)


def check_scheduled_name(name: object) -> None:
    """
    Refuse to pause or resume what the daemons do not schedule: a name
    that is no periodic task declared in code (registered) nor defined in
    the database, and the daemons' own jobs.  No row is made for it.

    :raises ActionRefused: the name cannot be paused; the message says why.
    """
    from twistedq.contrib.django.schedule_models import OWN_JOBS, PeriodicTaskState
    from twistedq.dashboard.actions import ActionRefused
    from twistedq.task import tasks

    if not isinstance(name, str) or not name:
        raise ActionRefused("name: the periodic task's name is needed")
    if name in OWN_JOBS:
        raise ActionRefused(f"name: {name!r} is a daemon's own job, which always runs")
    if len(name) <= 255:
        if name not in tasks:
            try:
                tasks.autodiscover()
            except Exception:  # a broken tasks module: the name is unknown
                pass
        if name in tasks.get_all_periodic():
            return
        defined = PeriodicTaskState.objects.filter(name=name).exclude(
            interval__isnull=True, crontab__isnull=True
        )
        if defined.exists():
            return
    raise ActionRefused(f"name: no periodic task {name[:100]!r} is scheduled")


@_staff
@require_POST
def dashboard_action(request: HttpRequest, name: str) -> JsonResponse:
    """
    ``dashboard/actions/<name>`` (POST, Django's CSRF token in the
    ``X-CSRFToken`` header): an action, for staff users with its
    permission (:py:data:`ACTION_PERMISSIONS`); 403 otherwise.
    """
    from twistedq.dashboard.actions import ActionRefused

    if name not in ACTION_PERMISSIONS or not request.user.has_perm(ACTION_PERMISSIONS[name]):
        return JsonResponse({"error": "permission needed"}, status=403)
    try:
        arguments = json.loads(request.body or b"{}")
        if not isinstance(arguments, dict):
            raise ActionRefused("the body must be a JSON object")
        if name in ("pause", "resume"):
            check_scheduled_name(arguments.get("name"))
        dashboard = _dashboard()
        answer = dashboard.run(dashboard.actions().run, name, arguments)
    except (ActionRefused, ValueError) as e:
        return JsonResponse({"error": str(e)}, status=400)
    return JsonResponse(answer, safe=False)
