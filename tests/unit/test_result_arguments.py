"""
Tests for :py:mod:`twistedq.arguments`: a task's arguments kept in its
outcome document, whole or cut to a size.
"""

import json

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.fakes import FakePool, delivery, task_id
from twistedq.arguments import CUT_MARK, arguments_text, stored_arguments, with_arguments
from twistedq.backends.memory import MemoryBackend
from twistedq.daemon.dispatcher import Dispatcher, DispatchSettings
from twistedq.outcome import Outcome, failure_document, success_document

TASK_ID = "0b0c8a34-9a4b-4d8e-8b59-3f5ad0c1e7a2"


class WithArgumentsTests(SynchronousTestCase):
    def document(self, args, kwargs, size=100):
        outcome = success_document(TASK_ID, "add", 3)
        return json.loads(with_arguments(outcome, args, kwargs, size))

    def test_whole(self):
        """
        Arguments that fit are added as JSON values; the outcome is kept.
        """
        document = self.document((1, "two"), {"x": [3]})
        self.assertEqual((document["task_args"], document["task_kwargs"]), ([1, "two"], {"x": [3]}))
        self.assertEqual((document["status"], document["result"]), ("SUCCESS", 3))
        encoded = with_arguments(success_document(TASK_ID, "add", 3), (1,), {}, 100)
        self.assertEqual(Outcome.from_bytes(TASK_ID, encoded).result, 3)

    def test_cut(self):
        """
        Arguments whose JSON text is longer than the size are kept as the
        first ``size`` characters of it and the cut mark.
        """
        document = self.document(["x" * 50], {"k": "y" * 50}, size=10)
        self.assertEqual(document["task_args"], '["xxxxxxxx' + CUT_MARK)
        self.assertEqual(document["task_kwargs"], '{"k":"yyyy' + CUT_MARK)

    def test_exact_size(self):
        """
        JSON text of exactly the size is kept whole.
        """
        self.assertEqual(self.document([12345678], {}, size=10)["task_args"], [12345678])


class StoredArgumentsTests(SynchronousTestCase):
    def test_round_trip(self):
        args, kwargs = [1, "a", None], {"b": {"c": 2}}
        texts = arguments_text(args), arguments_text(kwargs)
        self.assertEqual(stored_arguments(*texts), (args, kwargs))

    def test_not_stored(self):
        error = self.assertRaises(ValueError, stored_arguments, "", "")
        self.assertIn("not stored", str(error))
        self.assertEqual(arguments_text(None), "")

    def test_cut(self):
        cut = arguments_text('["xxxx' + CUT_MARK)
        error = self.assertRaises(ValueError, stored_arguments, cut, "{}")
        self.assertIn("cut", str(error))


class SettlementTests(SynchronousTestCase):
    """
    The daemon keeps a task's arguments in its stored outcome when asked.
    """

    def run_task(self, size, outcome=None):
        clock = Clock()
        store = MemoryBackend(clock)
        pool = FakePool(idle=1)
        dispatcher = Dispatcher(pool, store, clock, DispatchSettings(check_duplicates=True))
        dispatcher.settlement.arguments_in_results = size
        dispatcher.deliver(delivery(1, kwargs={"name": "x"}))
        clock.advance(0)
        pool.finish(0, None if outcome is None else [outcome])
        clock.advance(0)
        return json.loads(store.results[task_id(1)])

    def test_kept(self):
        document = self.run_task(100)
        self.assertEqual((document["task_args"], document["task_kwargs"]), ([1], {"name": "x"}))
        self.assertEqual(document["status"], "SUCCESS")

    def test_failure_kept(self):
        failure = failure_document(task_id(1), "add", ValueError("no"), traceback="")
        document = self.run_task(100, failure)
        self.assertEqual((document["status"], document["task_args"]), ("FAILURE", [1]))

    def test_off(self):
        """
        By default (0) the outcome is stored as the child made it.
        """
        self.assertNotIn("task_args", self.run_task(0))
