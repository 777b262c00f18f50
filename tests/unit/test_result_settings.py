"""
Tests for the result settings: ``TWISTEDQ_RESULT_EXPIRES``,
``TWISTEDQ_IGNORE_RESULT`` and ``TWISTEDQ_TASK_ARGUMENTS_IN_RESULTS``, in
the environment and the Django settings, and their errors naming them.
"""

import datetime
from types import SimpleNamespace

from django.core.exceptions import ImproperlyConfigured
from twisted.trial.unittest import SynchronousTestCase

from twistedq.backends.base import DEFAULT_RESULT_TTL
from twistedq.conf import DEFAULT_ARGUMENTS_SIZE, Settings, SettingsError
from twistedq.contrib.django.conf import settings_from_django


class DefaultsTests(SynchronousTestCase):
    def test_defaults(self):
        """
        Results are kept a day, stored, and without their arguments.
        """
        settings = Settings.from_environment({})
        self.assertEqual(settings.result_expires, DEFAULT_RESULT_TTL)
        self.assertEqual(DEFAULT_RESULT_TTL, 86400)
        self.assertIs(settings.ignore_result, False)
        self.assertEqual(settings.task_arguments_in_results, 0)


class EnvironmentTests(SynchronousTestCase):
    def read(self, name, value):
        return Settings.from_environment({name: value})

    def refused(self, name, value):
        error = self.assertRaises(SettingsError, self.read, name, value)
        self.assertIn(name, str(error))
        return str(error)

    def test_result_expires(self):
        """
        ``TWISTEDQ_RESULT_EXPIRES`` is a whole number of seconds, at least 1.
        """
        self.assertEqual(self.read("TWISTEDQ_RESULT_EXPIRES", "3600").result_expires, 3600)
        for bad in ("0", "-5", "1.5", "soon", "1e9999"):
            self.refused("TWISTEDQ_RESULT_EXPIRES", bad)

    def test_ignore_result(self):
        """
        ``TWISTEDQ_IGNORE_RESULT`` is a flag; anything else is an error.
        """
        for text, flag in (("1", True), ("true", True), ("on", True), ("0", False), ("no", False)):
            self.assertIs(self.read("TWISTEDQ_IGNORE_RESULT", text).ignore_result, flag)
        self.refused("TWISTEDQ_IGNORE_RESULT", "maybe")

    def test_arguments_in_results(self):
        """
        ``TWISTEDQ_TASK_ARGUMENTS_IN_RESULTS`` is a flag (on: the default
        size) or the most characters kept.
        """
        name = "TWISTEDQ_TASK_ARGUMENTS_IN_RESULTS"
        for text, size in (("true", DEFAULT_ARGUMENTS_SIZE), ("0", 0), ("off", 0), ("500", 500)):
            self.assertEqual(self.read(name, text).task_arguments_in_results, size)
        for bad in ("-1", "lots", "2.5"):
            self.refused(name, bad)

    def test_known_names(self):
        """
        None of the three is warned about as unknown.
        """
        Settings.from_environment(
            {
                "TWISTEDQ_RESULT_EXPIRES": "60",
                "TWISTEDQ_IGNORE_RESULT": "0",
                "TWISTEDQ_TASK_ARGUMENTS_IN_RESULTS": "0",
            }
        )
        self.assertEqual(self.flushWarnings(), [])


class DjangoTests(SynchronousTestCase):
    def read(self, **settings):
        return settings_from_django(SimpleNamespace(**settings))

    def refused(self, name, value):
        error = self.assertRaises(ImproperlyConfigured, self.read, **{name: value})
        self.assertIn(name, str(error))

    def test_result_expires(self):
        """
        Seconds, or a timedelta of whole seconds.
        """
        self.assertEqual(self.read(TWISTEDQ_RESULT_EXPIRES=60), {"result_expires": 60})
        hour = datetime.timedelta(hours=1)
        self.assertEqual(self.read(TWISTEDQ_RESULT_EXPIRES=hour), {"result_expires": 3600})
        for bad in (
            0,
            -1,
            True,
            "3600",
            1.5,
            datetime.timedelta(0),
            datetime.timedelta(seconds=0.5),
        ):
            self.refused("TWISTEDQ_RESULT_EXPIRES", bad)

    def test_ignore_result(self):
        self.assertEqual(self.read(TWISTEDQ_IGNORE_RESULT=True), {"ignore_result": True})
        for bad in (1, "yes", None.__class__):
            self.refused("TWISTEDQ_IGNORE_RESULT", bad)

    def test_arguments_in_results(self):
        name = "TWISTEDQ_TASK_ARGUMENTS_IN_RESULTS"
        self.assertEqual(
            self.read(**{name: True}), {"task_arguments_in_results": DEFAULT_ARGUMENTS_SIZE}
        )
        self.assertEqual(self.read(**{name: False}), {"task_arguments_in_results": 0})
        self.assertEqual(self.read(**{name: 2048}), {"task_arguments_in_results": 2048})
        for bad in (-1, 0.5, "yes"):
            self.refused(name, bad)

    def test_known_names(self):
        self.read(
            TWISTEDQ_RESULT_EXPIRES=60,
            TWISTEDQ_IGNORE_RESULT=False,
            TWISTEDQ_TASK_ARGUMENTS_IN_RESULTS=False,
        )
        self.assertEqual(self.flushWarnings(), [])

    def test_through_settings(self):
        """
        ``Settings.from_environment`` takes them from the Django values.
        """
        values = self.read(TWISTEDQ_RESULT_EXPIRES=120, TWISTEDQ_IGNORE_RESULT=True)
        settings = Settings(**values)
        self.assertEqual((settings.result_expires, settings.ignore_result), (120, True))
