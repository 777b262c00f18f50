"""
``path("", include("twistedq.contrib.django.urls"))`` serves
``celery/<task_id>/status/``, ``celery/<task_id>/done/``,
``celery/taskset/<taskset_id>/status/`` and its Server-Sent Events twin
``celery/taskset/<taskset_id>/status/stream``, and the live dashboard at
``dashboard/`` (staff users only, through the admin's login: the admin
must be installed).  ``dashboard_urlpatterns`` alone mounts only the
dashboard: ``path("ops/twistedq/", include((dashboard_urlpatterns, "twistedq")))``.
Every staff user sees the dashboard (argument previews, failures and their
tracebacks included); ``dashboard_patterns("twistedq.view_taskresult")``
mounts one that answers 403 to staff users without that permission.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import URLPattern, path

from twistedq.contrib.django import views

app_name = "twistedq"

dashboard_urlpatterns = [
    path("", views.dashboard_page, name="dashboard"),
    path("config", views.dashboard_config, name="dashboard-config"),
    path("state", views.dashboard_state, name="dashboard-state"),
    path("stream", views.dashboard_stream, name="dashboard-stream"),
    path("static/<str:name>", views.dashboard_static, name="dashboard-static"),
    path("failure/<str:task_id>", views.dashboard_failure, name="dashboard-failure"),
    path("deadletters", views.dashboard_dead_letters, name="dashboard-dead-letters"),
    path("actions/<str:name>", views.dashboard_action, name="dashboard-action"),
]


def _needing(permission: str, view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @wraps(view)
    def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        user = request.user
        if user.is_authenticated and user.is_staff and not user.has_perm(permission):
            return JsonResponse({"error": "permission needed"}, status=403)
        return view(request, *args, **kwargs)  # staff_member_required for the others

    return checked


def dashboard_patterns(permission: str | None = None) -> list[URLPattern]:
    """
    The dashboard's URL patterns, for staff users who also hold
    ``permission`` (such as ``"twistedq.view_taskresult"``: only those who
    may view results see arguments and failures), or every staff user
    when :py:obj:`None` (:py:data:`dashboard_urlpatterns`).
    """
    if permission is None:
        return list(dashboard_urlpatterns)
    return [
        path(str(pattern.pattern), _needing(permission, pattern.callback), name=pattern.name)
        for pattern in dashboard_urlpatterns
    ]


urlpatterns = [
    path(
        "celery/taskset/<str:taskset_id>/status/stream",
        views.taskset_status_stream,
        name="taskset-status-stream",
    ),
    path("celery/taskset/<str:taskset_id>/status/", views.taskset_status, name="taskset-status"),
    path("celery/<str:task_id>/status/", views.task_status, name="task-status"),
    path("celery/<str:task_id>/done/", views.is_task_done, name="task-done"),
    *[
        path(f"dashboard/{pattern.pattern}", pattern.callback, name=pattern.name)
        for pattern in dashboard_urlpatterns
    ],
]
