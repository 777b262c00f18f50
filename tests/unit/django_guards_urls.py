"""
The URLs of the Django project of :py:mod:`tests.unit.test_django_admin_guards`.
"""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("twistedq.contrib.django.urls")),
]
