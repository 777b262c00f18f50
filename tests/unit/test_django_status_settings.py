"""
The daemon's status site settings read from Django:
``TWISTEDQ_STATUS_ENDPOINT`` and ``TWISTEDQ_STATUS_TRACEBACKS``, each
refused with an error naming it when its value cannot be used.
"""

from types import SimpleNamespace

from django.core.exceptions import ImproperlyConfigured
from twisted.trial.unittest import SynchronousTestCase

from twistedq.conf import Settings
from twistedq.contrib.django.conf import parse_status_endpoint, settings_from_django


class StatusEndpointTests(SynchronousTestCase):
    def test_read(self) -> None:
        """
        An endpoint string is read as it is, ``none`` too; nothing set
        gives no value (the command's own default applies).
        """
        for endpoint in ("tcp:8022:interface=127.0.0.1", "unix:/tmp/tq.sock", "none"):
            values = settings_from_django(SimpleNamespace(TWISTEDQ_STATUS_ENDPOINT=endpoint))
            self.assertEqual(values, {"status_endpoint": endpoint})
        self.assertNotIn("status_endpoint", settings_from_django(SimpleNamespace()))
        self.assertIsNone(Settings().status_endpoint)
        self.assertEqual(self.flushWarnings(), [])

    def test_refused(self) -> None:
        """
        A value that is not a string, or not a server endpoint Twisted can
        parse (unknown type, bad port, unknown argument), is refused with
        ImproperlyConfigured naming the setting and the value.
        """
        for wrong in (8021, "8021", "tcp:http", "tcp:8021:bogus=1", ""):
            with self.assertRaises(ImproperlyConfigured) as caught:
                settings_from_django(SimpleNamespace(TWISTEDQ_STATUS_ENDPOINT=wrong))
            self.assertIn("TWISTEDQ_STATUS_ENDPOINT", str(caught.exception))
            self.assertIn(repr(wrong), str(caught.exception))

    def test_parse(self) -> None:
        """
        ``parse_status_endpoint`` only parses: the endpoint is given back
        (``none`` in any case as ``none``), nothing listens.
        """
        self.assertEqual(parse_status_endpoint("tcp:0"), "tcp:0")
        self.assertEqual(parse_status_endpoint("None"), "none")
        self.assertRaises(ValueError, parse_status_endpoint, "nope:1")


class StatusTracebacksTests(SynchronousTestCase):
    def test_read(self) -> None:
        """
        ``True`` or ``False`` is read; it is off by default.
        """
        for flag in (True, False):
            values = settings_from_django(SimpleNamespace(TWISTEDQ_STATUS_TRACEBACKS=flag))
            self.assertEqual(values, {"status_tracebacks": flag})
        self.assertFalse(Settings().status_tracebacks)

    def test_refused(self) -> None:
        """
        Anything else is refused with ImproperlyConfigured naming the
        setting.
        """
        for wrong in ("yes", 1, "False"):
            with self.assertRaises(ImproperlyConfigured) as caught:
                settings_from_django(SimpleNamespace(TWISTEDQ_STATUS_TRACEBACKS=wrong))
            self.assertEqual(
                str(caught.exception),
                f"TWISTEDQ_STATUS_TRACEBACKS must be True or False, not {wrong!r}",
            )

    def test_not_from_the_environment(self) -> None:
        """
        Both are Django settings only: in the environment they are warned
        about and change nothing.
        """
        settings = Settings.from_environment(
            {"TWISTEDQ_STATUS_ENDPOINT": "tcp:1", "TWISTEDQ_STATUS_TRACEBACKS": "1"}
        )
        self.assertEqual((settings.status_endpoint, settings.status_tracebacks), (None, False))
        warnings = self.flushWarnings()
        self.assertEqual(len(warnings), 2)
        for warning in warnings:
            self.assertIn("it is a Django setting", warning["message"])
