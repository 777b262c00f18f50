"""
Tests for :py:mod:`twistedq.contrib.django.conf`: twistedq's settings from
a Django settings object, the seed's names as deprecated aliases, and clear
errors for wrong values.  The settings object is a plain namespace: no
Django project is configured.
"""

from types import SimpleNamespace

from django.core.exceptions import ImproperlyConfigured
from twisted.trial.unittest import SynchronousTestCase

from twistedq.amqp.broker import BrokerAddress
from twistedq.contrib.django.conf import settings_from_django


class SettingsFromDjangoTests(SynchronousTestCase):
    def test_twistedq_names(self):
        """
        The TWISTEDQ_* settings are read as they are.
        """
        values = settings_from_django(
            SimpleNamespace(
                TWISTEDQ_BROKER_URL="amqp://u:p@broker:5673/v",
                TWISTEDQ_RESULT_BACKEND="django://",
                TWISTEDQ_QUEUE="jobs",
                TWISTEDQ_EXCHANGE="jx",
                TWISTEDQ_SEED_STATES=True,
            )
        )
        self.assertEqual(
            values,
            {
                "broker_url": "amqp://u:p@broker:5673/v",
                "result_backend": "django://",
                "queue": "jobs",
                "exchange": "jx",
                "seed_states": True,
            },
        )
        self.assertEqual(self.flushWarnings(), [])

    def test_nothing_set(self):
        """
        A project that sets nothing gives no values (the defaults apply).
        """
        self.assertEqual(settings_from_django(SimpleNamespace()), {})

    def test_seed_broker_aliases(self):
        """
        The seed's AMQP_* settings make the broker URL, with a
        DeprecationWarning naming the new setting.
        """
        values = settings_from_django(
            SimpleNamespace(
                AMQP_SERVER="rabbit.local",
                AMQP_PORT="5673",
                AMQP_USER="me",
                AMQP_PASSWORD="p@ss/word",
                AMQP_VHOST="/prod",
            )
        )
        address = BrokerAddress.from_url(values["broker_url"])
        self.assertEqual(
            (address.host, address.port, address.username, address.password, address.vhost),
            ("rabbit.local", 5673, "me", "p@ss/word", "/prod"),
        )
        warnings = self.flushWarnings()
        self.assertEqual(len(warnings), 1)
        self.assertIs(warnings[0]["category"], DeprecationWarning)
        self.assertIn("TWISTEDQ_BROKER_URL", warnings[0]["message"])

    def test_new_name_wins_over_alias(self):
        """
        TWISTEDQ_BROKER_URL wins over the seed's names, without a warning.
        """
        values = settings_from_django(
            SimpleNamespace(TWISTEDQ_BROKER_URL="amqp://a/", AMQP_SERVER="ignored")
        )
        self.assertEqual(values["broker_url"], "amqp://a/")
        self.assertEqual(self.flushWarnings(), [])

    def test_seed_database_backend(self):
        """
        CELERY_BACKEND = "database" means the Django database backend.
        """
        values = settings_from_django(SimpleNamespace(CELERY_BACKEND="database"))
        self.assertEqual(values["result_backend"], "django://")
        self.assertEqual(len(self.flushWarnings()), 1)

    def test_unknown_seed_backend(self):
        """
        A seed backend twistedq has not (Tokyo Tyrant) is a clear error.
        """
        error = self.assertRaises(
            ImproperlyConfigured,
            settings_from_django,
            SimpleNamespace(CELERY_BACKEND="tyrant"),
        )
        self.assertIn("TWISTEDQ_RESULT_BACKEND", str(error))
        self.flushWarnings()

    def test_wrong_types(self):
        """
        A setting of the wrong type is an ImproperlyConfigured error naming
        it.
        """
        for settings, name in [
            (SimpleNamespace(TWISTEDQ_BROKER_URL=5672), "TWISTEDQ_BROKER_URL"),
            (SimpleNamespace(TWISTEDQ_QUEUE=""), "TWISTEDQ_QUEUE"),
            (SimpleNamespace(TWISTEDQ_SEED_STATES="yes"), "TWISTEDQ_SEED_STATES"),
            (SimpleNamespace(AMQP_PORT="amqp"), "AMQP_PORT"),
            (SimpleNamespace(AMQP_SERVER=None), "AMQP_SERVER"),
        ]:
            error = self.assertRaises(ImproperlyConfigured, settings_from_django, settings)
            self.assertIn(name, str(error))
        self.flushWarnings()
