"""
Tests for the result options of ``twistd twistedq``: ``--result-expires``
(and ``TWISTEDQ_RESULT_EXPIRES``) and the arguments kept in results
(``TWISTEDQ_TASK_ARGUMENTS_IN_RESULTS``), in the service tree built but
not started.
"""

import os

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from twistedq import tap
from twistedq.backends.service import StoreService
from twistedq.daemon.service import ConsumerService

VARIABLES = (
    "TWISTEDQ_BROKER_URL",
    "TWISTEDQ_RESULT_BACKEND",
    "TWISTEDQ_RESULT_EXPIRES",
    "TWISTEDQ_TASK_ARGUMENTS_IN_RESULTS",
)


class ResultOptionsTests(SynchronousTestCase):
    def setUp(self):
        for name in VARIABLES:
            if name in os.environ:
                self.addCleanup(os.environ.__setitem__, name, os.environ[name])
                del os.environ[name]
            else:
                self.addCleanup(os.environ.pop, name, None)

    def make(self, *argv):
        options = tap.Options()
        options.parseOptions(["--log-format", "twisted", "--status", "none", *argv])
        daemon = tap.makeService(options)
        [store] = [child for child in daemon if isinstance(child, StoreService)]
        [consumer] = [child for child in daemon if isinstance(child, ConsumerService)]
        return options, store.backend, consumer.dispatcher.settlement

    def test_default_a_day(self):
        """
        Without the option or the setting, results are kept a day.
        """
        options, backend, _ = self.make("-r", "redis://127.0.0.1:1/0")
        self.assertEqual(options["settings"].result_expires, 86400)
        self.assertEqual(backend.ttl, 86400)

    def test_option(self):
        """
        ``--result-expires`` sets the store's expiry, over the setting.
        """
        os.environ["TWISTEDQ_RESULT_EXPIRES"] = "600"
        options, backend, _ = self.make("-r", "redis://127.0.0.1:1/0", "--result-expires", "90")
        self.assertEqual((options["settings"].result_expires, backend.ttl), (90, 90))

    def test_setting(self):
        """
        ``TWISTEDQ_RESULT_EXPIRES`` sets it when the option is not given.
        """
        os.environ["TWISTEDQ_RESULT_EXPIRES"] = "600"
        _, backend, _ = self.make("-r", "sqlite:///results.sqlite3")
        self.assertEqual(backend.ttl, 600)

    def test_bad_option(self):
        """
        A value that is not a whole, positive number of seconds is a usage
        error naming the option.
        """
        for bad in ("0", "-1", "1.5", "soon"):
            error = self.assertRaises(
                usage.UsageError, tap.Options().parseOptions, ["--result-expires", bad]
            )
            self.assertIn("result-expires", str(error))

    def test_arguments_in_results(self):
        """
        ``TWISTEDQ_TASK_ARGUMENTS_IN_RESULTS`` reaches the settlement; off
        by default.
        """
        _, _, settlement = self.make()
        self.assertEqual(settlement.arguments_in_results, 0)
        os.environ["TWISTEDQ_TASK_ARGUMENTS_IN_RESULTS"] = "300"
        _, _, settlement = self.make()
        self.assertEqual(settlement.arguments_in_results, 300)
