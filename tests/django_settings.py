"""
The settings of the tests' Django projects, written once: an admin site
with twistedq's app, on a database named by URL.

A unit test that configures Django in a child process of its own::

    settings.configure(**django_test_settings("tests.unit.django_guards_urls"))

and a settings module (``tests/integration/scheduleproject/settings.py``)
takes the pieces: :py:data:`ADMIN_APPS`, :py:data:`SITE_MIDDLEWARE`,
:py:data:`ADMIN_TEMPLATES`, :py:func:`database`.  It imports nothing but
Django, so a daemon that loads such a settings module loads nothing of the
tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

#: The apps of an admin site with twistedq's (its results, periodic tasks
#: and dashboard).
ADMIN_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "twistedq.contrib.django",
]

#: The middleware the admin needs, and no more (Django's test client
#: posts without a CSRF token).
ADMIN_MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

#: The middleware of a site served to a browser, CSRF protection included
#: (that of ``django-admin startproject``).
SITE_MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

#: The templates of the admin, from the apps' folders.
ADMIN_TEMPLATES = [
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

#: An in-memory SQLite database: for one process that opens one connection.
MEMORY_DATABASE = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}


def database(url: str) -> dict[str, Any]:
    """
    The ``DATABASES`` entry of a database URL: ``sqlite:///path``,
    ``postgresql://user:password@host:port/name`` or
    ``mysql://user:password@host:port/name``.

    A SQLite database may be written by several processes at once (the
    daemons and the site): each waits up to 30 s for the lock, and each
    transaction takes the write lock first (Django 5.1 and later), so none
    fails when a read in it turns into a write while another holds the
    lock.  MySQL and MariaDB connect in utf8mb4 (Django 4.2 would use
    3-byte utf8).

    :raises KeyError: another scheme.
    """
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        import django

        options: dict[str, Any] = {"timeout": 30}
        if django.VERSION >= (5, 1):
            options["transaction_mode"] = "IMMEDIATE"
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": unquote(parts.path[1:]),
            "OPTIONS": options,
        }
    engine = {"postgresql": "postgresql", "mysql": "mysql"}[parts.scheme]
    entry: dict[str, Any] = {
        "ENGINE": f"django.db.backends.{engine}",
        "NAME": parts.path[1:],
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "127.0.0.1",
        "PORT": str(parts.port or ""),
    }
    if engine == "mysql":
        entry["OPTIONS"] = {"charset": "utf8mb4"}
    return entry


def django_test_settings(
    root_urlconf: str,
    *,
    default_database: dict[str, Any] = MEMORY_DATABASE,
    apps: Sequence[str] = (),
    **settings: Any,
) -> dict[str, Any]:
    """
    The settings of an admin site with twistedq's app, for
    ``django.conf.settings.configure(**...)``.

    :param root_urlconf: the module of its URLs.
    :param default_database: the ``default`` entry of ``DATABASES`` (see
        :py:func:`database`); an in-memory SQLite database by default.
    :param apps: apps installed after :py:data:`ADMIN_APPS`.
    :param settings: further settings, or others in place of these.
    """
    return {
        "INSTALLED_APPS": [*ADMIN_APPS, *apps],
        "MIDDLEWARE": ADMIN_MIDDLEWARE,
        "TEMPLATES": ADMIN_TEMPLATES,
        "ROOT_URLCONF": root_urlconf,
        "ALLOWED_HOSTS": ["testserver"],
        "SECRET_KEY": "not-secret",
        "DATABASES": {"default": dict(default_database)},
        "USE_TZ": True,
        **settings,
    }
