"""
A Django project for the test of periodic tasks defined in the admin:
the admin with CSRF protection as a site serves it, the results and the
periodic tasks in the database ``BEATS_DATABASE_URL`` names
(``sqlite:///path``, ``postgresql://...``, ``mysql://...``), the broker and
queue from ``TWISTEDQ_BROKER_URL`` and ``TWISTEDQ_QUEUE``.
"""

import os
from urllib.parse import unquote, urlsplit

import django

SECRET_KEY = "schedule-project-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "tests.integration.scheduleproject.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "twistedq.contrib.django",
    "tests.integration.scheduleproject.beats",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]


def _database(url: str) -> dict:
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        # Two daemons and the site write: each transaction takes the write
        # lock first (Django 5.1+), so none fails when a read in it turns
        # into a write while another holds the lock.
        options: dict = {"timeout": 30}
        if django.VERSION >= (5, 1):
            options["transaction_mode"] = "IMMEDIATE"
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": unquote(parts.path[1:]),
            "OPTIONS": options,
        }
    engine = {"postgresql": "postgresql", "mysql": "mysql"}[parts.scheme]
    return {
        "ENGINE": f"django.db.backends.{engine}",
        "NAME": parts.path[1:],
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "127.0.0.1",
        "PORT": str(parts.port or ""),
    }


DATABASES = {"default": _database(os.environ.get("BEATS_DATABASE_URL", "sqlite:///beats.sqlite3"))}

TWISTEDQ_RESULT_BACKEND = "django://"
