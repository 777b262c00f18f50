"""
Settings of the click counter example.  The database comes from
``CLICKCOUNTER_DATABASE_URL`` (``sqlite:///path``,
``postgresql://user@host:port/name``, ``mysql://user:password@host:port/name``);
twistedq's from ``TWISTEDQ_BROKER_URL`` and the other ``TWISTEDQ_*``
variables, or the values below.
"""

import os
import tempfile
from urllib.parse import unquote, urlsplit

SECRET_KEY = os.environ.get("CLICKCOUNTER_SECRET_KEY", "clickcounter-example-not-secret")
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "examples.clickcounter.urls"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "twistedq.contrib.django",
    "examples.clickcounter.clicks",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
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
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": unquote(parts.path[1:])}
    engine = {"postgresql": "postgresql", "mysql": "mysql"}[parts.scheme]
    database = {
        "ENGINE": f"django.db.backends.{engine}",
        "NAME": parts.path[1:],
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "127.0.0.1",
        "PORT": str(parts.port or ""),
    }
    if engine == "mysql":
        # Django 5.2 connects in utf8mb4 by default, 4.2 in utf8 (3 bytes).
        database["OPTIONS"] = {"charset": "utf8mb4"}
    return database


DATABASES = {
    "default": _database(
        os.environ.get(
            "CLICKCOUNTER_DATABASE_URL",
            f"sqlite:///{tempfile.gettempdir()}/clickcounter.sqlite3",
        )
    )
}

# twistedq: results in this project's database.
TWISTEDQ_RESULT_BACKEND = "django://"
