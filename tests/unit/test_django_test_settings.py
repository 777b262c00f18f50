"""
Tests for :py:mod:`tests.django_settings`, the settings of the tests'
Django projects.
"""

from twisted.trial.unittest import SynchronousTestCase

from tests.django_settings import ADMIN_APPS, MEMORY_DATABASE, database, django_test_settings


class DatabaseTests(SynchronousTestCase):
    """
    A database URL as a ``DATABASES`` entry.
    """

    def test_sqlite(self):
        """
        A SQLite URL names the file (percent-escapes decoded); its writers
        wait for the lock.
        """
        entry = database("sqlite:////tmp/a%20b/db.sqlite3")
        self.assertEqual(
            (entry["ENGINE"], entry["NAME"]), ("django.db.backends.sqlite3", "/tmp/a b/db.sqlite3")
        )
        self.assertEqual(entry["OPTIONS"]["timeout"], 30)

    def test_postgresql(self):
        """
        A PostgreSQL URL gives the user, password (decoded), host, port and
        database name.
        """
        self.assertEqual(
            database("postgresql://twistedq:p%40ss@db.example:5502/results"),
            {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": "results",
                "USER": "twistedq",
                "PASSWORD": "p@ss",
                "HOST": "db.example",
                "PORT": "5502",
            },
        )

    def test_mysql(self):
        """
        A MySQL URL without a host is on 127.0.0.1, in utf8mb4.
        """
        entry = database("mysql://twistedq@/results")
        self.assertEqual(
            (entry["ENGINE"], entry["HOST"], entry["PORT"], entry["OPTIONS"]),
            ("django.db.backends.mysql", "127.0.0.1", "", {"charset": "utf8mb4"}),
        )

    def test_unknown_scheme(self):
        """
        Another scheme is refused.
        """
        self.assertRaises(KeyError, database, "oracle://db/results")


class SettingsTests(SynchronousTestCase):
    def test_admin_site(self):
        """
        The settings are those of an admin site with twistedq's app, the
        apps given after; a setting given is added or replaces one.
        """
        settings = django_test_settings(
            "tests.unit.django_guards_urls",
            apps=["beats"],
            SECRET_KEY="other",
            TWISTEDQ_RESULT_BACKEND="django://",
        )
        self.assertEqual(settings["INSTALLED_APPS"], [*ADMIN_APPS, "beats"])
        self.assertEqual(settings["ROOT_URLCONF"], "tests.unit.django_guards_urls")
        self.assertEqual(settings["DATABASES"], {"default": MEMORY_DATABASE})
        self.assertEqual(
            (settings["SECRET_KEY"], settings["TWISTEDQ_RESULT_BACKEND"], settings["USE_TZ"]),
            ("other", "django://", True),
        )
