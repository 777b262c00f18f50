"""
How long results are kept is bounded (10 years) wherever it is read: the
environment, the Django setting, ``--result-expires`` and the settings
object; a longer one made every claim of the daemon fail.
"""

from __future__ import annotations

from types import SimpleNamespace

from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from twistedq.conf import MAX_RESULT_EXPIRES, Settings, SettingsError, parse_expiry

TOO_LONG = str(10**20)


class ResultExpiresBoundTests(SynchronousTestCase):
    def test_parse(self) -> None:
        """
        Ten years are taken, a second more is refused with the bound.
        """
        self.assertEqual(MAX_RESULT_EXPIRES, 10 * 365 * 86400)
        self.assertEqual(parse_expiry(str(MAX_RESULT_EXPIRES)), MAX_RESULT_EXPIRES)
        error = self.assertRaises(ValueError, parse_expiry, str(MAX_RESULT_EXPIRES + 1))
        self.assertIn("at most 315360000", str(error))

    def test_environment(self) -> None:
        """
        The environment variable over the bound is refused, naming it.
        """
        error = self.assertRaises(
            SettingsError, Settings.from_environment, {"TWISTEDQ_RESULT_EXPIRES": TOO_LONG}
        )
        self.assertIn("TWISTEDQ_RESULT_EXPIRES", str(error))

    def test_settings_object(self) -> None:
        """
        A settings object given a longer expiry is refused, naming the
        setting.
        """
        error = self.assertRaises(SettingsError, Settings(result_expires=10**20).validate)
        self.assertIn("TWISTEDQ_RESULT_EXPIRES", str(error))

    def test_option(self) -> None:
        """
        ``--result-expires`` over the bound is refused, naming it.
        """
        from twistedq.tap import Options

        error = self.assertRaises(
            UsageError, Options().parseOptions, ["--result-expires", TOO_LONG]
        )
        self.assertIn("--result-expires", str(error))
        self.assertIn("at most", str(error))

    def test_django_setting(self) -> None:
        """
        The Django setting over the bound (a number or a timedelta) is
        refused with ImproperlyConfigured naming it.
        """
        import datetime

        from django.core.exceptions import ImproperlyConfigured

        from twistedq.contrib.django.conf import _result_settings

        for value in (10**20, datetime.timedelta(days=3651)):
            error = self.assertRaises(
                ImproperlyConfigured,
                _result_settings,
                SimpleNamespace(TWISTEDQ_RESULT_EXPIRES=value),
            )
            self.assertIn("TWISTEDQ_RESULT_EXPIRES", str(error))
            self.assertIn("at most", str(error))
