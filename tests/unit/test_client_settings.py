"""
Tests for the settings a user can get wrong (issue #13, points 8 and 12):
unknown ``TWISTEDQ_*`` names in the environment or the Django settings are
warned about with the closest known names, and the publish timeout is a
setting.
"""

from types import SimpleNamespace

from django.core.exceptions import ImproperlyConfigured
from twisted.trial.unittest import SynchronousTestCase

from twistedq.client import Client
from twistedq.conf import Settings, SettingsError, UnknownSettingWarning
from twistedq.contrib.django.conf import settings_from_django


class EnvironmentNameTests(SynchronousTestCase):
    """
    ``Settings.from_environment`` warns about ``TWISTEDQ_*`` variables it
    does not know, and only about those.
    """

    def warnings_of(self, environ):
        Settings.from_environment(environ)
        return [
            str(w["message"])
            for w in self.flushWarnings()
            if w["category"] is UnknownSettingWarning
        ]

    def test_misspelled(self):
        """
        ``TWISTEDQ_BROKER`` (for ``TWISTEDQ_BROKER_URL``) is warned about,
        with the closest known name, and otherwise ignored.
        """
        [warning] = self.warnings_of({"TWISTEDQ_BROKER": "amqp://elsewhere/"})
        self.assertIn("TWISTEDQ_BROKER", warning)
        self.assertIn("environment", warning)
        self.assertIn("did you mean TWISTEDQ_BROKER_URL", warning)

    def test_far_from_any(self):
        """
        A name close to none still warns, listing the known ones.
        """
        [warning] = self.warnings_of({"TWISTEDQ_ZZZ": "1"})
        self.assertIn("TWISTEDQ_ZZZ", warning)
        self.assertIn("TWISTEDQ_RESULT_BACKEND", warning)

    def test_known_names_silent(self):
        """
        The settings, and the test and services variables of this
        project's scripts and tests, are not warned about.
        """
        environ = {
            "TWISTEDQ_BROKER_URL": "amqp://b/",
            "TWISTEDQ_RESULT_BACKEND": "redis://r:6379/1",
            "TWISTEDQ_QUEUE": "q",
            "TWISTEDQ_EXCHANGE": "x",
            "TWISTEDQ_SEED_STATES": "0",
            "TWISTEDQ_MAX_MESSAGE_SIZE": "1MiB",
            "TWISTEDQ_SIGNING_KEYS": "",
            "TWISTEDQ_PUBLISH_TIMEOUT": "5",
            "TWISTEDQ_TASK_ROUTES": "mail.*=mail",
            "TWISTEDQ_TEST_AMQP_URL": "amqp://t/",
            "TWISTEDQ_TEST_BEAT_FILE": "/tmp/x",
            "TWISTEDQ_SERVICES_DIR": "/tmp/s",
            "TWISTEDQ_SERVICES_TIMEOUT": "9",
            "TWISTEDQ_RABBITMQ_PORT": "5700",
            "TWISTEDQ_REDIS_PORT": "6400",
            "TWISTEDQ_MEMCACHED_PORT": "1",
            "TWISTEDQ_POSTGRES_PORT": "1",
            "TWISTEDQ_MARIADB_PORT": "1",
            "TWISTEDQ_RABBITMQ_NODENAME": "n@h",
            "TWISTEDQ_RABBITMQ_CLUSTER_PORTS": "5691,5692,5693",
            "TWISTEDQ_SENTINEL_PORT": "26379",
            "TWISTEDQ_SENTINEL_REDIS_PORT": "6390",
            "TWISTEDQ_REQUIRE_SERVERS": "1",
            "TWISTEDQ_CLAIM_EXAMPLES": "10",
            "TWISTEDQ_REGTEST_BAD_TASKS": "1",
            "OTHER_TWISTEDQ_THING": "1",
        }
        self.assertEqual(self.warnings_of(environ), [])

    def test_django_only_setting(self):
        """
        ``TWISTEDQ_STATUS_TRACEBACKS`` in the environment is warned about as
        a Django setting that the environment does not set.
        """
        [warning] = self.warnings_of({"TWISTEDQ_STATUS_TRACEBACKS": "1"})
        self.assertIn("Django setting", warning)


class DjangoNameTests(SynchronousTestCase):
    """
    ``settings_from_django`` warns about ``TWISTEDQ_*`` settings it does
    not know.
    """

    def test_misspelled(self):
        """
        A misspelled Django setting is warned about, with the closest names.
        """
        settings_from_django(SimpleNamespace(TWISTEDQ_RESULTS_BACKEND="redis://r/0"))
        [warning] = [
            str(w["message"])
            for w in self.flushWarnings()
            if w["category"] is UnknownSettingWarning
        ]
        self.assertIn("Django setting TWISTEDQ_RESULTS_BACKEND", warning)
        self.assertIn("did you mean TWISTEDQ_RESULT_BACKEND", warning)

    def test_known_silent(self):
        """
        The settings twistedq reads, ``TWISTEDQ_STATUS_TRACEBACKS`` among
        them, are not warned about.
        """
        settings_from_django(
            SimpleNamespace(
                TWISTEDQ_BROKER_URL="amqp://b/",
                TWISTEDQ_STATUS_TRACEBACKS=True,
                TWISTEDQ_SIGNING_KEYS="",
                TWISTEDQ_MAX_MESSAGE_SIZE=1024,
                TWISTEDQ_PUBLISH_TIMEOUT=3,
                TWISTEDQ_TASK_ROUTES={"mail.*": "mail"},
            )
        )
        self.assertEqual(self.flushWarnings(), [])


class PublishTimeoutSettingTests(SynchronousTestCase):
    """
    The publish timeout comes from ``TWISTEDQ_PUBLISH_TIMEOUT``, in the
    environment or the Django settings; ``Client(timeout=...)`` beats both.
    """

    def test_environment(self):
        """
        The environment variable sets ``Settings.publish_timeout``.
        """
        settings = Settings.from_environment({"TWISTEDQ_PUBLISH_TIMEOUT": "2.5"})
        self.assertEqual(settings.publish_timeout, 2.5)
        self.assertEqual(Settings.from_environment({}).publish_timeout, 30.0)

    def test_environment_bad(self):
        """
        A value that is not a positive number is refused, naming the variable.
        """
        for bad in ("soon", "0", "-1", "nan", "inf"):
            error = self.assertRaises(
                SettingsError, Settings.from_environment, {"TWISTEDQ_PUBLISH_TIMEOUT": bad}
            )
            self.assertIn("TWISTEDQ_PUBLISH_TIMEOUT", str(error))

    def test_django(self):
        """
        The Django setting is read; a wrong value is ImproperlyConfigured.
        """
        values = settings_from_django(SimpleNamespace(TWISTEDQ_PUBLISH_TIMEOUT=4))
        self.assertEqual(values, {"publish_timeout": 4.0})
        for bad in ("4", 0, True, -2):
            self.assertRaises(
                ImproperlyConfigured,
                settings_from_django,
                SimpleNamespace(TWISTEDQ_PUBLISH_TIMEOUT=bad),
            )

    def test_client(self):
        """
        A client takes its timeout from the settings unless given one.
        """
        settings = Settings(publish_timeout=3.0)
        self.assertEqual(Client(settings).timeout, 3.0)
        self.assertEqual(Client(settings, timeout=7.0).timeout, 7.0)
