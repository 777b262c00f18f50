"""
``path("", include("twistedq.contrib.django.urls"))`` serves
``celery/<task_id>/status/``, ``celery/<task_id>/done/`` and
``celery/taskset/<taskset_id>/status/``.
"""

from django.urls import path

from twistedq.contrib.django import views

app_name = "twistedq"

urlpatterns = [
    path("celery/taskset/<str:taskset_id>/status/", views.taskset_status, name="taskset-status"),
    path("celery/<str:task_id>/status/", views.task_status, name="task-status"),
    path("celery/<str:task_id>/done/", views.is_task_done, name="task-done"),
]
