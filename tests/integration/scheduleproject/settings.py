"""
A Django project for the test of periodic tasks defined in the admin:
the admin with CSRF protection as a site serves it, the results and the
periodic tasks in the database ``BEATS_DATABASE_URL`` names
(``sqlite:///path``, ``postgresql://...``, ``mysql://...``), the broker and
queue from ``TWISTEDQ_BROKER_URL`` and ``TWISTEDQ_QUEUE``.
"""

import os

from tests.django_settings import ADMIN_APPS, ADMIN_TEMPLATES, SITE_MIDDLEWARE, database

SECRET_KEY = "schedule-project-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "tests.integration.scheduleproject.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [*ADMIN_APPS, "tests.integration.scheduleproject.beats"]
MIDDLEWARE = SITE_MIDDLEWARE
TEMPLATES = ADMIN_TEMPLATES

# Two daemons and the site write (see database()).
DATABASES = {"default": database(os.environ.get("BEATS_DATABASE_URL", "sqlite:///beats.sqlite3"))}

TWISTEDQ_RESULT_BACKEND = "django://"
