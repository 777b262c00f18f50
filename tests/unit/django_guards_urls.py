"""
The URLs of the Django project of :py:mod:`tests.unit.test_django_admin_guards`.
"""

from django.contrib import admin
from django.urls import include, path

from twistedq.contrib.django.urls import dashboard_patterns

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("twistedq.contrib.django.urls")),
    path(
        "limited/",
        include((dashboard_patterns("twistedq.view_taskresult"), "limited"), namespace="limited"),
    ),
]
