"""
Tests for the ETA and expiry handling of
:py:obj:`twistedq.daemon.dispatcher.Dispatcher`, driven by an injected
:py:obj:`twisted.internet.task.Clock`, and for the
:py:obj:`twistedq.backends.base.OutcomeRecord` it stores.
"""

import datetime
import json

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.fakes import (
    NOW,
    TASKSET,
    FakeDelivery,
    FakePool,
    delivery,
    held_writes,
    iso,
    store_calls,
    task_id,
)
from twistedq.backends.base import OutcomeRecord
from twistedq.backends.memory import MemoryBackend
from twistedq.daemon.dispatcher import Dispatcher, DispatchSettings
from twistedq.message import TaskMessage
from twistedq.outcome import Outcome, failure_document, success_document
from twistedq.states import REVOKED


class ETATestCase(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(NOW)
        self.pool = FakePool(idle=2)
        self.store = MemoryBackend(self.clock)
        self.store.pause()  # each test answers the writes
        # Without the give-back sweep (tests/unit/test_overdue.py), the
        # only timers left are the jobs' own.
        self.dispatcher = Dispatcher(
            self.pool, self.store, self.clock, DispatchSettings(give_back_after=None)
        )

    def records(self):
        """
        The records of every write asked of the store, in order.
        """
        return [record for records in store_calls(self.store) for record in records]


class ETATests(ETATestCase):
    """
    A task with an ETA waits, unacknowledged, until the clock reaches it.
    """

    def test_future_eta_waits_for_the_clock(self):
        """
        A message whose ETA is 30 s ahead is not handed to the pool, nor
        settled, before the clock reaches the ETA; at the ETA it is.
        """
        held = delivery(1, eta=iso(NOW + 30))
        self.dispatcher.deliver(held)
        self.assertEqual(self.pool.batches, [])
        self.assertEqual(held.settled, [])
        self.clock.advance(29.5)
        self.assertEqual(self.pool.batches, [])
        self.clock.advance(0.5)
        self.assertEqual(self.pool.ids(), [[task_id(1)]])
        self.assertEqual(held.settled, [])

    def test_naive_eta_is_utc(self):
        """
        An ETA without a zone is read as UTC.
        """
        naive = datetime.datetime.fromtimestamp(NOW + 10, datetime.timezone.utc).replace(
            tzinfo=None
        )
        self.dispatcher.deliver(delivery(1, eta=naive.isoformat()))
        self.clock.advance(9)
        self.assertEqual(self.pool.batches, [])
        self.clock.advance(1)
        self.assertEqual(self.pool.ids(), [[task_id(1)]])

    def test_eta_in_another_zone(self):
        """
        An ETA with a non-UTC offset is compared as the instant it names.
        """
        plus_two = datetime.timezone(datetime.timedelta(hours=2))
        eta = datetime.datetime.fromtimestamp(NOW + 10, plus_two).isoformat()
        self.dispatcher.deliver(delivery(1, eta=eta))
        self.clock.advance(9)
        self.assertEqual(self.pool.batches, [])
        self.clock.advance(1)
        self.assertEqual(self.pool.ids(), [[task_id(1)]])

    def test_past_eta_runs_at_once(self):
        """
        A message whose ETA has passed goes to the pool at once.
        """
        self.dispatcher.deliver(delivery(1, eta=iso(NOW - 60)))
        self.assertEqual(self.pool.ids(), [[task_id(1)]])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_held_message_does_not_block_others(self):
        """
        While one message waits for its ETA, a message without one runs.
        """
        self.dispatcher.deliver(delivery(1, eta=iso(NOW + 30)))
        self.dispatcher.deliver(delivery(2))
        self.assertEqual(self.pool.ids(), [[task_id(2)]])

    def test_expiry_after_eta_runs(self):
        """
        A message with a future ETA and a later expiry runs at its ETA.
        """
        self.dispatcher.deliver(delivery(1, eta=iso(NOW + 10), expires=iso(NOW + 60)))
        self.clock.advance(10)
        self.assertEqual(self.pool.ids(), [[task_id(1)]])
        self.assertEqual(store_calls(self.store), [])

    def test_expired_while_held_is_revoked(self):
        """
        A message whose expiry falls before its ETA is never run: when the
        clock reaches the ETA it is past the expiry, so it is recorded as
        REVOKED (as ``publish_task`` promises: "do not run after this time").
        """
        held = delivery(1, eta=iso(NOW + 30), expires=iso(NOW + 10), taskset=TASKSET)
        self.dispatcher.deliver(held)
        self.clock.advance(30)
        self.assertEqual(self.pool.batches, [])
        [record] = self.records()
        self.assertEqual(Outcome.from_bytes(record.task_id, record.document).status, REVOKED)
        self.assertEqual(record.taskset, TASKSET)


class ExpiryTests(ETATestCase):
    """
    An expired message is recorded as REVOKED instead of being run.
    """

    def test_expired_is_revoked(self):
        """
        A message whose expiry has passed never reaches the pool; it is
        stored as a REVOKED outcome whose reason mentions the expiry, with
        its taskset carried, and acked only once the store fires.
        """
        expired = delivery(1, expires=iso(NOW - 1), taskset=TASKSET)
        self.dispatcher.deliver(expired)
        self.assertEqual(self.pool.batches, [])
        [(records, d)] = held_writes(self.store)
        [record] = records
        self.assertIsInstance(record, OutcomeRecord)
        self.assertEqual(record.task_id, task_id(1))
        self.assertEqual(record.taskset, TASKSET)
        self.assertFalse(record.failed)
        outcome = Outcome.from_bytes(record.task_id, record.document)
        self.assertEqual(outcome.status, REVOKED)
        self.assertEqual(outcome.task, "add")
        self.assertIn("expired", outcome.reason)
        self.assertIn(iso(NOW - 1), outcome.reason)
        self.assertEqual(expired.settled, [])
        d.answer()
        self.assertEqual(self.store.results, {task_id(1): record.document})
        self.assertEqual(expired.settled, ["ack"])

    def test_expiring_now_is_revoked(self):
        """
        A message that expires exactly at the current time is not run.
        """
        self.dispatcher.deliver(delivery(1, expires=iso(NOW)))
        self.assertEqual(self.pool.batches, [])
        self.assertEqual(len(self.records()), 1)

    def test_expiry_beats_eta(self):
        """
        An expired message with a future ETA is revoked at once, not held.
        """
        self.dispatcher.deliver(delivery(1, eta=iso(NOW + 30), expires=iso(NOW - 1)))
        self.assertEqual(len(self.records()), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_unexpired_runs(self):
        """
        A message whose expiry is still ahead runs at once.
        """
        self.dispatcher.deliver(delivery(1, expires=iso(NOW + 60)))
        self.assertEqual(self.pool.ids(), [[task_id(1)]])
        self.assertEqual(store_calls(self.store), [])

    def test_revocation_store_failure_requeues(self):
        """
        When the REVOKED outcome cannot be stored, the message goes back to
        the queue (reject with requeue) and is not acked.
        """
        expired = delivery(1, expires=iso(NOW - 1))
        self.dispatcher.deliver(expired)
        [(_, d)] = held_writes(self.store)
        d.fail(ConnectionError("store down"))
        self.assertEqual(expired.settled, [("reject", True)])


class DrainTests(ETATestCase):
    """
    Draining hands held messages back to the broker.
    """

    def test_drain_requeues_held(self):
        """
        ``drain()`` cancels the timer of a message held for its ETA and
        rejects it with requeue; it never runs afterwards, and the drain
        fires at once.
        """
        held = delivery(1, eta=iso(NOW + 30))
        self.dispatcher.deliver(held)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        d = self.dispatcher.drain()
        self.assertEqual(held.settled, [("reject", True)])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(60)
        self.assertEqual(self.pool.batches, [])
        self.assertIsNone(self.successResultOf(d))

    def test_drain_waits_for_revocation_store(self):
        """
        ``drain()`` fires only once a pending REVOKED store has settled.
        """
        expired = delivery(1, expires=iso(NOW - 1))
        self.dispatcher.deliver(expired)
        d = self.dispatcher.drain()
        self.assertNoResult(d)
        held_writes(self.store)[0][1].answer()
        self.successResultOf(d)
        self.assertEqual(expired.settled, ["ack"])


class OutcomeRecordTests(ETATestCase):
    """
    The records stored for outcomes carry the taskset and the failure flag.
    """

    def run_one(self, number, outcome_for):
        """
        Deliver one message of the taskset, answer its batch with
        ``outcome_for(message)`` and return the record stored and the
        delivery.
        """
        message = TaskMessage(id=task_id(number), task="add", args=(number,), taskset=TASKSET)
        settled = FakeDelivery(message.encode())
        self.dispatcher.deliver(settled)
        bodies, d = self.pool.batches[-1]
        self.assertEqual(bodies, [message.encode()])
        d.callback([outcome_for(message)])
        [(records, stored)] = held_writes(self.store)
        [record] = records
        return record, stored, settled

    def test_success_record(self):
        """
        A success is stored with the message's taskset and ``failed``
        false; the delivery is acked once the store fires.
        """
        record, stored, settled = self.run_one(
            1, lambda m: success_document(m.id, m.task, m.args[0] * 2)
        )
        self.assertEqual(record, OutcomeRecord(task_id(1), record.document, TASKSET, False))
        self.assertEqual(Outcome.from_bytes(task_id(1), record.document).result, 2)
        self.assertEqual(settled.settled, [])
        stored.answer()
        self.assertEqual(settled.settled, ["ack"])
        self.assertEqual(
            (self.dispatcher.stats()["completed"], self.dispatcher.stats()["failed"]), (1, 0)
        )

    def test_failure_record(self):
        """
        A FAILURE document is stored with ``failed`` true and the taskset.
        """
        record, stored, settled = self.run_one(
            2, lambda m: failure_document(m.id, m.task, ValueError("bad"))
        )
        self.assertEqual(record.task_id, task_id(2))
        self.assertEqual(record.taskset, TASKSET)
        self.assertTrue(record.failed)
        stored.answer()
        self.assertEqual(settled.settled, ["ack"])
        self.assertEqual(
            (self.dispatcher.stats()["completed"], self.dispatcher.stats()["failed"]), (1, 1)
        )

    def test_success_mentioning_failure(self):
        """
        A success whose value contains the text of a FAILURE status is not
        counted as a failure.
        """
        record, _, _ = self.run_one(
            3, lambda m: success_document(m.id, m.task, {"status": "FAILURE"})
        )
        self.assertFalse(record.failed)

    def test_no_taskset(self):
        """
        A message outside any taskset gives a record with taskset None.
        """
        self.dispatcher.deliver(delivery(4))
        _, d = self.pool.batches[0]
        d.callback([success_document(task_id(4), "add", 4)])
        [records] = store_calls(self.store)
        self.assertIsNone(records[0].taskset)

    def test_failed_store_keeps_message(self):
        """
        When the outcomes cannot be stored the delivery is neither acked nor
        rejected: the outcome is written again later.
        """
        _, stored, settled = self.run_one(5, lambda m: success_document(m.id, m.task, 1))
        stored.fail(ConnectionError("store down"))
        self.assertEqual(settled.settled, [])
        self.assertEqual(len(self.flushLoggedErrors(ConnectionError)), 1)


class InvalidTimeTests(ETATestCase):
    """
    A message with a time that is not ISO 8601 is dead-lettered.
    """

    def body(self, **fields):
        document = {
            "v": 1,
            "id": task_id(1),
            "task": "add",
            "args": [],
            "kwargs": {},
            "taskset": None,
            "eta": None,
            "expires": None,
            "retries": 0,
        }
        document.update(fields)
        return json.dumps(document).encode()

    def assertDeadLettered(self, bad):
        """
        ``bad`` was refused as malformed: its FAILURE stored, then it was
        dead-lettered; never run, never held.
        """
        [(rows, stored)] = held_writes(self.store)
        self.assertEqual(rows[0].task_id, task_id(1))
        self.assertEqual(json.loads(rows[0].document)["exc"]["type"], "MessageError")
        self.assertEqual(bad.settled, [])
        stored.answer()
        self.assertEqual(bad.settled, [("dead-letter", "malformed")])
        self.assertEqual(self.pool.batches, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_unparseable_eta(self):
        """
        An ETA that is not an ISO 8601 time is refused by the message
        validation: a FAILURE is stored for its id and it is dead-lettered.
        """
        bad = FakeDelivery(self.body(eta="next tuesday"))
        self.dispatcher.deliver(bad)
        self.assertDeadLettered(bad)
        self.assertIn("next tuesday", bad.details[0])
        self.assertEqual(self.dispatcher.stats()["rejected"], 1)

    def test_unparseable_expires(self):
        """
        An expiry that is not an ISO 8601 time is dead-lettered too.
        """
        bad = FakeDelivery(self.body(expires="soon"))
        self.dispatcher.deliver(bad)
        self.assertDeadLettered(bad)

    def test_eta_not_a_string(self):
        """
        A numeric ETA is dead-lettered: the format wants ISO 8601 text.
        """
        bad = FakeDelivery(self.body(eta=NOW + 30))
        self.dispatcher.deliver(bad)
        self.assertDeadLettered(bad)
