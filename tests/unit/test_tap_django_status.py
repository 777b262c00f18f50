"""
``twistd twistedq`` reads the status site's Django settings: the endpoint
``TWISTEDQ_STATUS_ENDPOINT`` when ``--status`` is not given, and
``TWISTEDQ_STATUS_TRACEBACKS`` beside ``--status-tracebacks``.
"""

from typing import Any

from twisted.application.internet import StreamServerEndpointService

from tests.unit.test_tap import TapTestCase
from twistedq import conf, tap


class DjangoStatusSettingsTests(TapTestCase):
    def with_django(self, **values: Any) -> None:
        self.patch(conf, "_django_values", lambda environ: dict(values))

    def tracebacks(self, options: tap.Options) -> bool:
        daemon = tap.makeService(options)
        (served,) = [c for c in daemon if isinstance(c, StreamServerEndpointService)]
        return bool(served.factory.resource.children[b"celery"].tracebacks)

    def test_endpoint_setting(self) -> None:
        """
        The setting's endpoint is the status site's unless ``--status``
        names another; without the setting it stays on 8021.
        """
        self.with_django(status_endpoint="tcp:8029:interface=127.0.0.1")
        self.assertEqual(self.parse()["status"], "tcp:8029:interface=127.0.0.1")
        self.assertEqual(self.parse("--status", "none")["status"], "none")
        self.with_django()
        self.assertEqual(self.parse()["status"], conf.DEFAULT_STATUS_ENDPOINT)

    def test_tracebacks_setting(self) -> None:
        """
        The setting shows tracebacks at the status URLs as the option does.
        """
        self.with_django(status_tracebacks=True)
        self.assertTrue(self.tracebacks(self.parse("--log-format", "twisted")))
        self.with_django(status_tracebacks=False)
        self.assertFalse(self.tracebacks(self.parse("--log-format", "twisted")))
