"""
``path("", include("twistedq.contrib.django.urls"))`` serves
``celery/<task_id>/status/``, ``celery/<task_id>/done/``,
``celery/taskset/<taskset_id>/status/`` and its Server-Sent Events twin
``celery/taskset/<taskset_id>/status/stream``, and the live dashboard at
``dashboard/`` (staff users only, through the admin's login: the admin
must be installed).  ``dashboard_urlpatterns`` alone mounts only the
dashboard: ``path("ops/twistedq/", include((dashboard_urlpatterns, "twistedq")))``.
"""

from django.urls import path

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
