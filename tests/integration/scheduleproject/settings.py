"""
A Django project for the test of periodic tasks defined in the admin:
the admin with CSRF protection as a site serves it, the results and the
periodic tasks in a SQLite database (``BEATS_DATABASE``), the broker and
queue from ``TWISTEDQ_BROKER_URL`` and ``TWISTEDQ_QUEUE``.
"""

import os

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
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("BEATS_DATABASE", "beats.sqlite3"),
        "OPTIONS": {"timeout": 30},
    }
}

TWISTEDQ_RESULT_BACKEND = "django://"
