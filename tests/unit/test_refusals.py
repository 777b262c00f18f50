"""
Tests for a store's permanent refusal of one outcome
(:py:class:`~twistedq.backends.base.StoreRefused`): it is not an outage;
the task's outcome becomes a short FAILURE that says so, the message is
settled, and every other task goes on.
"""

import json

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.fakes import FakePool, delivery, task_id
from twistedq.backends.base import StoreRefused
from twistedq.backends.memory import MemoryBackend
from twistedq.daemon.dispatcher import Dispatcher, DispatchSettings
from twistedq.daemon.events import EventKind


def dispatcher_on(store, pool, clock, claims=True):
    dispatcher = Dispatcher(
        pool, store, clock, DispatchSettings(check_duplicates=claims, max_batch=8)
    )
    # Known to be quick, so its tasks are batched (a task never run goes alone).
    dispatcher.feeder.run_times["add"] = 0.001
    return dispatcher


class RefusedOutcomeTests(SynchronousTestCase):
    def run_refused(self, claims):
        clock = Clock()
        store = MemoryBackend(clock)
        store.refuse(task_id(2), "value of 600 MiB over the limit of 512 MiB")
        pool = FakePool(idle=0)
        dispatcher = dispatcher_on(store, pool, clock, claims)
        deliveries = [delivery(n) for n in (1, 2, 3)]
        for each in deliveries:
            dispatcher.deliver(each)
        clock.advance(0)
        pool.idle = 1  # one batch of all three
        dispatcher.pump()
        self.assertEqual(pool.ids(), [[task_id(1), task_id(2), task_id(3)]])
        pool.finish(0)
        clock.pump([0.5] * 4)
        return store, dispatcher, deliveries

    def assert_refusal_stored(self, store, dispatcher, deliveries):
        self.assertEqual([d.settled for d in deliveries], [["ack"]] * 3)
        refused = json.loads(store.results[task_id(2)])
        self.assertEqual(refused["status"], "FAILURE")
        self.assertEqual(refused["exc"]["type"], "StoreRefused")
        self.assertIn("600 MiB", refused["exc"]["message"])
        self.assertIn("add", refused["exc"]["message"])
        for number in (1, 3):
            self.assertEqual(json.loads(store.results[task_id(number)])["status"], "SUCCESS")
        self.assertTrue(dispatcher.store_available)
        stats = dispatcher.stats()
        self.assertEqual(stats["store_refused"], 1)
        self.assertEqual(stats["store_retries"], 0)
        self.assertEqual(stats["failed"], 1)
        self.assertEqual(dispatcher.events.counts[EventKind.STORE_DOWN], 0)

    def test_refused_outcome_becomes_failure_under_claims(self):
        """
        Among a batch of three, the store refuses task 2's outcome for
        good: 1 and 3 are stored as they are, 2 as a FAILURE naming the
        refusal; all three are acked; the store is not marked down.
        """
        self.assert_refusal_stored(*self.run_refused(claims=True))

    def test_refused_outcome_becomes_failure_without_claims(self):
        self.assert_refusal_stored(*self.run_refused(claims=False))

    def test_next_task_runs(self):
        """
        After a refusal, new tasks start at once (no outage was seen).
        """
        clock = Clock()
        store = MemoryBackend(clock)
        store.refuse(task_id(1))
        pool = FakePool(idle=1)
        dispatcher = dispatcher_on(store, pool, clock)
        dispatcher.deliver(delivery(1))
        clock.advance(0)
        pool.finish(0)
        clock.pump([0.5] * 2)
        dispatcher.deliver(delivery(2))
        clock.advance(0)
        self.assertEqual(len(pool.batches), 2)

    def test_replacement_refused_too(self):
        """
        A store that refuses even the short FAILURE: the message is
        dead-lettered with the reason ``store-refused``; nothing loops.
        """
        clock = Clock()
        store = RefusingEverything(clock)
        pool = FakePool(idle=1)
        dispatcher = dispatcher_on(store, pool, clock, claims=False)
        first = delivery(1)
        dispatcher.deliver(first)
        clock.advance(0)
        pool.finish(0)
        clock.pump([0.5] * 10)
        self.assertEqual(first.settled, [("dead-letter", "store-refused")])
        self.assertEqual(dispatcher.stats()["dead_lettered"], 1)
        self.assertEqual(dispatcher.stats()["store_refused"], 2)
        self.assertEqual(store.refusals, 2)


class RefusingEverything(MemoryBackend):
    """
    A store that refuses every outcome of task 1 for good.
    """

    refusals = 0

    def store_results(self, records):
        if any(record.task_id == task_id(1) for record in records):
            self.refusals += 1
            return defer.fail(StoreRefused("no, never", task_id(1)))
        return super().store_results(records)


class RefusingWithoutSaying(MemoryBackend):
    """
    A store that refuses any batch holding task 2's first outcome without
    saying which record it refused (as a server's own refusal of a batch).
    """

    def store_results(self, records):
        if any(r.task_id == task_id(2) and b"SUCCESS" in r.document for r in records):
            return defer.fail(StoreRefused("the server refused a value"))
        return super().store_results(records)


class UnnamedRefusalTests(SynchronousTestCase):
    def test_batch_written_one_at_a_time(self):
        """
        A refusal that names no task makes the batch be written one
        record at a time: the refused one is replaced, the others stored.
        """
        clock = Clock()
        store = RefusingWithoutSaying(clock)
        pool = FakePool(idle=0)
        dispatcher = dispatcher_on(store, pool, clock, claims=False)
        deliveries = [delivery(n) for n in (1, 2, 3)]
        for each in deliveries:
            dispatcher.deliver(each)
        clock.advance(0)
        pool.idle = 1
        dispatcher.pump()
        pool.finish(0)
        clock.pump([0.5] * 4)
        self.assertEqual([d.settled for d in deliveries], [["ack"]] * 3)
        statuses = [json.loads(store.results[task_id(n)])["status"] for n in (1, 2, 3)]
        self.assertEqual(statuses, ["SUCCESS", "FAILURE", "SUCCESS"])
        self.assertEqual(dispatcher.stats()["store_refused"], 1)
