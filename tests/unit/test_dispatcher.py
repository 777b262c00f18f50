"""
Tests for :py:obj:`twistedq.daemon.dispatcher.Dispatcher` with a fake pool,
the memory store and fake deliveries.
"""

import datetime
import json

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.fakes import (
    FakeDelivery,
    FakePool,
    ResultsOnly,
    delivery,
    held_writes,
    put,
    store_calls,
    task_id,
)
from twistedq.backends.memory import Call, MemoryBackend
from twistedq.daemon.dispatcher import Dispatcher, DispatchSettings
from twistedq.daemon.health import STORE_PROBE_ID
from twistedq.message import TaskMessage
from twistedq.outcome import failure_document, revoked_document, success_document
from twistedq.registry import NotRegistered
from twistedq.signing import SigningKeys
from twistedq.worker.pool import ChildLost


def known_quick(dispatcher, *names):
    """
    Make the tasks ``names`` (``add`` by default) known to ``dispatcher``
    as quick, as if it had run them: they may share a batch.
    """
    for name in names or ("add",):
        dispatcher.feeder.run_times[name] = 0.001


class DispatcherTestCase(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.pool = FakePool(idle=0)
        self.store = MemoryBackend(self.clock)
        self.store.pause()  # each test answers the writes
        self.dispatcher = Dispatcher(
            self.pool, self.store, self.clock, DispatchSettings(max_batch=4)
        )
        known_quick(self.dispatcher)

    def deliver(self, count, start=1):
        deliveries = [delivery(n) for n in range(start, start + count)]
        for d in deliveries:
            self.dispatcher.deliver(d)
        return deliveries

    def batch_ids(self):
        return self.pool.ids()


class MalformedTests(DispatcherTestCase):
    """
    Messages that cannot run go to the dead-letter queue with their reason;
    where their task id can be read, a FAILURE is stored first.
    """

    def test_reasons(self):
        """
        A body that is not UTF-8 or not JSON is dead-lettered as
        ``not-json``; JSON that is not a task message as ``malformed``;
        neither reaches the pool, and without a readable id nothing is
        stored.
        """
        self.pool.idle = 2
        cases = [
            (b"\xff\xfe", "not-json", "not UTF-8"),
            (b"{not json", "not-json", "not JSON"),
            (b"[1, 2, 3]", "malformed", "not a JSON object"),
            (b'{"v": 1, "task": "x"}', "malformed", "is not a UUID"),
            (b"[" * 100_000 + b"]" * 100_000, "malformed", "nested too deeply"),
        ]
        for body, reason, fragment in cases:
            bad = FakeDelivery(body)
            self.dispatcher.deliver(bad)
            self.assertEqual(bad.settled, [("dead-letter", reason)])
            self.assertIn(fragment, bad.details[0])
        self.assertEqual(self.pool.batches, [])
        self.assertEqual(store_calls(self.store), [])
        self.assertEqual(self.dispatcher.stats()["rejected"], 5)
        self.assertEqual(self.dispatcher.stats()["dead_lettered"], 5)
        self.assertEqual(self.dispatcher.stats()["pending"], 0)

    def test_decoder_fault_dead_lettered(self):
        """
        Any other exception while decoding (a fault of the decoder itself)
        dead-letters the message as ``malformed``, saying what was raised;
        it is never left unsettled.
        """

        def broken(body, max_size):
            raise ZeroDivisionError("decoder bug")

        self.patch(TaskMessage, "decode", broken)
        bad = delivery(1)
        self.dispatcher.deliver(bad)
        self.assertEqual(bad.settled, [("dead-letter", "malformed")])
        self.assertIn("ZeroDivisionError('decoder bug')", bad.details[0])
        self.assertEqual(self.dispatcher.stats()["rejected"], 1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_intake_fault_dead_lettered(self):
        """
        An exception while a decoded job is taken in (a fault of the
        daemon's) dead-letters it too, with what was raised.
        """

        def broken(job):
            raise KeyError("gate bug")

        self.patch(self.dispatcher.intake, "admit", broken)
        bad = delivery(1)
        self.dispatcher.deliver(bad)
        self.assertEqual(bad.settled, [("dead-letter", "malformed")])
        self.assertIn("KeyError('gate bug')", bad.details[0])
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_readable_id_failure_stored_first(self):
        """
        A malformed message whose id and task name can be read gets a
        FAILURE (MessageError, saying what is wrong) stored under its id,
        and is dead-lettered only once that is written.
        """
        body = json.dumps({"v": 1, "id": task_id(7), "task": "add", "args": "oops"}).encode()
        bad = FakeDelivery(body)
        self.dispatcher.deliver(bad)
        [(rows, stored)] = held_writes(self.store)
        self.assertEqual((rows[0].task_id, rows[0].failed), (task_id(7), True))
        document = json.loads(rows[0].document)
        self.assertEqual(
            (document["status"], document["task"], document["exc"]["type"]),
            ("FAILURE", "add", "MessageError"),
        )
        self.assertEqual(document["exc"]["message"], "args is not a JSON array")
        self.assertEqual(bad.settled, [])
        stored.answer()
        self.assertEqual(self.store.results, {task_id(7): rows[0].document})
        self.assertEqual(bad.settled, [("dead-letter", "malformed")])

    def test_store_down_still_dead_letters(self):
        """
        When the FAILURE cannot be stored the message is dead-lettered all
        the same (and the error logged): a store outage does not hold it.
        """
        body = json.dumps({"v": 1, "id": task_id(7), "task": "add", "args": "oops"}).encode()
        bad = FakeDelivery(body)
        self.dispatcher.deliver(bad)
        held_writes(self.store)[0][1].fail(ConnectionError("store down"))
        self.assertEqual(bad.settled, [("dead-letter", "malformed")])
        self.assertEqual(len(self.flushLoggedErrors(ConnectionError)), 1)

    def test_over_max_body_size(self):
        """
        A body over the dispatcher's ``max_body_size`` is dead-lettered as
        ``too-large`` without being decoded; its FAILURE is stored under
        the id read from the head of the body.
        """
        dispatcher = Dispatcher(
            self.pool, self.store, self.clock, DispatchSettings(max_body_size=10)
        )
        self.pool.idle = 1
        too_big = delivery(1)
        dispatcher.deliver(too_big)
        [(rows, stored)] = held_writes(self.store)
        self.assertEqual(rows[0].task_id, task_id(1))
        self.assertIn("over the limit of 10", json.loads(rows[0].document)["exc"]["message"])
        stored.answer()
        self.assertEqual(too_big.settled, [("dead-letter", "too-large")])
        self.assertEqual(self.pool.batches, [])

    def test_unknown_task(self):
        """
        A task no child registered runs (the child answers NotRegistered),
        its FAILURE is stored, and it is dead-lettered as ``unknown-task``
        instead of acked; the other tasks of its batch are acked.
        """
        self.pool.task_limits = {"add": (None, None)}
        known_quick(self.dispatcher, "add", "nope")
        known, unknown = delivery(1), delivery(2, task="nope")
        self.dispatcher.deliver(known)
        self.dispatcher.deliver(unknown)
        self.pool.idle = 1
        self.dispatcher.pump()
        self.assertEqual(self.batch_ids(), [[task_id(1), task_id(2)]])
        self.pool.batches[0][1].callback(
            [
                success_document(task_id(1), "add", 1),
                failure_document(task_id(2), "nope", NotRegistered("nope"), traceback=""),
            ]
        )
        [(rows, stored)] = held_writes(self.store)
        self.assertEqual([row.failed for row in rows], [False, True])
        self.assertEqual(json.loads(rows[1].document)["dead_letter"], "unknown-task")
        self.assertNotIn(b"dead_letter", rows[0].document)
        stored.answer()
        self.assertEqual(known.settled, ["ack"])
        self.assertEqual(unknown.settled, [("dead-letter", "unknown-task")])
        self.assertIn(f"nope[{task_id(2)}]", unknown.details[0])

    def test_registered_task_raising_not_registered(self):
        """
        A registered task that itself raises NotRegistered is an ordinary
        failure: acked, not dead-lettered.
        """
        self.pool.idle = 1
        self.pool.task_limits = {"add": (None, None)}
        [task] = self.deliver(1)
        self.pool.idle += 1
        self.pool.batches[0][1].callback(
            [failure_document(task_id(1), "add", NotRegistered("other"), traceback="")]
        )
        held_writes(self.store)[0][1].answer()
        self.assertEqual(task.settled, ["ack"])


class SigningTests(DispatcherTestCase):
    """
    With signing keys, only messages signed by one of them run.
    """

    def setUp(self):
        super().setUp()
        self.keys = SigningKeys.parse("new:secret-2,old:secret-1")
        self.dispatcher = Dispatcher(self.pool, self.store, self.clock, signing=self.keys)
        self.pool.idle = 4

    def test_signed_runs(self):
        """
        A message signed with the signing key, or with an older key still
        listed, runs.
        """
        body = delivery(1).body
        self.dispatcher.deliver(FakeDelivery(body, headers=self.keys.sign(body)))
        old = delivery(2).body
        self.dispatcher.deliver(
            FakeDelivery(old, headers=SigningKeys.parse("old:secret-1").sign(old))
        )
        self.assertEqual(self.batch_ids(), [[task_id(1)], [task_id(2)]])

    def test_unsigned(self):
        """
        An unsigned message is dead-lettered as ``unsigned``; no FAILURE
        is stored under the id it claims.
        """
        unsigned = delivery(1)
        self.dispatcher.deliver(unsigned)
        self.assertEqual(unsigned.settled, [("dead-letter", "unsigned")])
        self.assertEqual(store_calls(self.store), [])
        self.assertEqual(self.pool.batches, [])

    def test_bad_signature(self):
        """
        A body altered after signing, a signature by an unknown key, or by a
        key dropped from the list, is dead-lettered as ``bad-signature``.
        """
        body = delivery(1).body
        altered = body.replace(b"[1]", b"[2]")
        self.assertNotEqual(altered, body)
        cases = [
            FakeDelivery(altered, headers=self.keys.sign(body)),
            FakeDelivery(body, headers=SigningKeys.parse("other:secret-1").sign(body)),
            FakeDelivery(body, headers=SigningKeys.parse("retired:secret-0").sign(body)),
            FakeDelivery(body, headers=SigningKeys.parse("new:wrong").sign(body)),
        ]
        for bad in cases:
            self.dispatcher.deliver(bad)
            self.assertEqual(bad.settled, [("dead-letter", "bad-signature")])
        self.assertEqual(store_calls(self.store), [])
        self.assertEqual(self.pool.batches, [])


class BatchingTests(DispatcherTestCase):
    """
    Queued tasks are spread over idle children.
    """

    def test_one_at_once(self):
        """
        A delivery with a child idle goes to it at once, alone.
        """
        self.pool.idle = 3
        self.deliver(1)
        self.assertEqual(self.batch_ids(), [[task_id(1)]])

    def test_queued_while_busy(self):
        """
        With no child idle deliveries wait, in order.
        """
        self.deliver(3)
        self.assertEqual(self.pool.batches, [])
        self.assertEqual(self.dispatcher.stats()["pending"], 3)

    def test_spread_evenly(self):
        """
        Ten queued tasks over three idle children go out as 4, 3 and 3, in
        delivery order.
        """
        self.deliver(10)
        self.pool.idle = 3
        self.dispatcher.pump()
        self.assertEqual(
            self.batch_ids(),
            [[task_id(n) for n in r] for r in (range(1, 5), range(5, 8), range(8, 11))],
        )
        self.assertEqual(self.dispatcher.stats()["pending"], 0)

    def test_capped_at_max_batch(self):
        """
        Batches never exceed ``max_batch``; the rest waits for a child.
        """
        self.deliver(20)
        self.pool.idle = 3
        self.dispatcher.pump()
        self.assertEqual([len(b) for b, _ in self.pool.batches], [4, 4, 4])
        self.assertEqual(self.dispatcher.stats()["pending"], 8)
        # All twenty are held unacknowledged: twelve in children, eight waiting.
        self.assertEqual(self.dispatcher.stats()["held"], 20)
        self.pool.finish(0)
        self.dispatcher.pump()
        self.assertEqual([len(b) for b, _ in self.pool.batches], [4, 4, 4, 4])
        self.assertEqual(self.dispatcher.stats()["pending"], 4)

    def test_fewer_tasks_than_children(self):
        """
        Two tasks and three idle children make two batches of one.
        """
        self.deliver(2)
        self.pool.idle = 3
        self.dispatcher.pump()
        self.assertEqual([len(b) for b, _ in self.pool.batches], [1, 1])
        self.assertEqual(self.pool.idle, 1)


class QuickBatchingTests(DispatcherTestCase):
    """
    Only tasks known to be quick share a batch: a task never run here, or
    whose average run time is over 20 ms, runs alone.
    """

    def setUp(self):
        super().setUp()
        self.feeder = self.dispatcher.feeder
        self.feeder.run_times.clear()

    def test_unseen_alone_then_batched(self):
        """
        A task never run here goes alone, even with a backlog; once a run
        measured it quick, the backlog is batched.
        """
        self.deliver(6)
        self.pool.idle = 2
        self.dispatcher.pump()
        self.assertEqual(self.batch_ids(), [[task_id(1)], [task_id(2)]])
        self.clock.advance(0.004)
        self.pool.finish(0)
        self.assertAlmostEqual(self.feeder.run_times["add"], 0.004)
        self.dispatcher.pump()
        self.assertEqual(self.batch_ids()[2], [task_id(n) for n in (3, 4, 5, 6)])

    def test_slow_alone(self):
        """
        A task whose average is over 20 ms runs alone, one per idle child.
        """
        self.feeder.run_times["add"] = 0.021
        self.deliver(5)
        self.pool.idle = 2
        self.dispatcher.pump()
        self.assertEqual(self.batch_ids(), [[task_id(1)], [task_id(2)]])
        self.assertEqual(self.dispatcher.stats()["pending"], 3)

    def test_alone_between_quick(self):
        """
        A slow task in the queue ends the batch before it and runs alone;
        quick ones after it are batched again.
        """
        self.feeder.run_times.update(add=0.001, slow=1.0)
        self.pool.task_limits = {"add": (None, None), "slow": (None, None)}
        for d in (delivery(1), delivery(2), delivery(3, task="slow"), delivery(4), delivery(5)):
            self.dispatcher.deliver(d)
        self.pool.idle = 3
        self.dispatcher.pump()
        self.assertEqual(
            self.batch_ids(), [[task_id(1), task_id(2)], [task_id(3)], [task_id(4), task_id(5)]]
        )

    def test_batch_within_quick_time(self):
        """
        A batch's tasks together are expected to take at most 20 ms, by
        their averages: tasks of 8 ms go two to a batch, even when the
        batch could hold more.
        """
        self.feeder.run_times["add"] = 0.008
        self.deliver(6)
        self.pool.idle = 1
        self.dispatcher.pump()
        self.assertEqual(self.batch_ids(), [[task_id(1), task_id(2)]])
        self.assertEqual(self.dispatcher.stats()["pending"], 4)

    def test_batch_time_of_mixed_tasks(self):
        """
        The expected times of different tasks add up: one of 15 ms takes
        the room of fifteen of 1 ms.
        """
        self.feeder.run_times.update(add=0.001, mul=0.015)
        self.pool.task_limits = {"add": (None, None), "mul": (None, None)}
        for d in (delivery(1, task="mul"), delivery(2), delivery(3), delivery(4)):
            self.dispatcher.deliver(d)
        self.pool.idle = 1
        self.dispatcher.pump()
        self.assertEqual(self.batch_ids(), [[task_id(n) for n in (1, 2, 3, 4)]])
        self.pool.finish(0)
        self.pool.idle = 0
        self.feeder.run_times.update(add=0.003, mul=0.015)
        for d in (delivery(5, task="mul"), delivery(6), delivery(7), delivery(8)):
            self.dispatcher.deliver(d)
        self.pool.idle = 1
        self.dispatcher.pump()
        self.assertEqual(self.batch_ids()[1], [task_id(5), task_id(6)])

    def test_moving_average(self):
        """
        A batch's run time, divided over its tasks, moves the average of
        their task a quarter of the way: a quick task that turns slow runs
        alone once its average passes 20 ms, and is batched again once it
        falls back under.
        """
        self.feeder.run_times["add"] = 0.001
        self.deliver(8)
        self.pool.idle = 1
        self.dispatcher.pump()
        self.clock.advance(0.4)  # 4 tasks: 0.1 s each
        self.pool.finish(0)
        self.assertAlmostEqual(self.feeder.run_times["add"], 0.001 + 0.25 * (0.1 - 0.001))
        self.dispatcher.pump()
        self.assertEqual(self.batch_ids()[1], [task_id(5)])
        self.pool.finish(1)  # at once: the average falls under 20 ms
        self.assertLess(self.feeder.run_times["add"], 0.02)
        self.assertGreater(self.feeder.run_times["add"], 0.01)
        self.dispatcher.pump()  # batched again, one a batch: two would pass 20 ms
        self.assertEqual(self.batch_ids()[2], [task_id(6)])

    def test_lost_batch_not_measured(self):
        """
        A batch whose child died is not counted in the average.
        """
        self.deliver(1)
        self.pool.idle = 1
        self.dispatcher.pump()
        self.clock.advance(5)
        self.pool.lose(0, "killed by signal 9")
        self.flushLoggedErrors()
        self.assertEqual(self.feeder.run_times, {})


class SettlingTests(DispatcherTestCase):
    """
    Deliveries are acked once their outcomes are stored, and go back to the
    queue when anything fails first.
    """

    def setUp(self):
        super().setUp()
        self.deliveries = self.deliver(3)
        self.pool.idle = 1
        self.dispatcher.pump()

    def test_ack_after_store(self):
        """
        Outcomes are stored with their task ids and deliveries are acked only
        once ``store_results`` fires.
        """
        self.pool.finish(0)
        [(rows, stored)] = held_writes(self.store)
        self.assertEqual([row.task_id for row in rows], [task_id(n) for n in (1, 2, 3)])
        self.assertEqual(json.loads(rows[1].document)["result"], [2])
        for d in self.deliveries:
            self.assertEqual(d.settled, [])
        self.assertEqual(self.dispatcher.stats()["held"], 3)
        stored.answer()
        for d in self.deliveries:
            self.assertEqual(d.settled, ["ack"])
        self.assertEqual(self.dispatcher.stats()["completed"], 3)
        self.assertEqual(self.dispatcher.stats()["failed"], 0)
        self.assertEqual(self.dispatcher.stats()["held"], 0)

    def test_failed_tasks_acked_and_counted(self):
        """
        A task that failed is stored and acked like any other, and counted.
        """
        outcomes = [
            success_document(task_id(1), "add", 1),
            failure_document(task_id(2), "add", ValueError("bad"), traceback=""),
            success_document(task_id(3), "add", {"status": "FAILURE"}),
        ]
        self.pool.finish(0, outcomes)
        held_writes(self.store)[0][1].answer()
        self.assertEqual([d.settled for d in self.deliveries], [["ack"]] * 3)
        self.assertEqual(self.dispatcher.stats()["failed"], 1)

    def test_store_failure_retried_without_rerunning(self):
        """
        When storing fails, nothing is settled and no task runs again: the
        same outcomes are written again after 0.5 s, then 1 s, and acked
        once the store takes them.
        """
        self.pool.finish(0)
        held_writes(self.store)[0][1].fail(ConnectionError("store down"))
        self.assertEqual(len(self.flushLoggedErrors(ConnectionError)), 1)
        for d in self.deliveries:
            self.assertEqual(d.settled, [])
        self.clock.advance(0.5)
        self.assertEqual(len(store_calls(self.store)), 2)
        [(again, second)] = held_writes(self.store)
        self.assertEqual(again, store_calls(self.store)[0])
        second.fail(ConnectionError("still down"))
        self.flushLoggedErrors(ConnectionError)
        self.clock.advance(0.9)
        self.assertEqual(len(store_calls(self.store)), 2)
        self.clock.advance(0.1)
        [(third, written)] = held_writes(self.store)
        written.answer()
        self.assertEqual(sorted(self.store.results), sorted(row.task_id for row in third))
        for d in self.deliveries:
            self.assertEqual(d.settled, ["ack"])
        self.assertEqual(len(self.pool.batches), 1)
        self.assertEqual(self.dispatcher.stats()["store_retries"], 2)

    def test_no_new_task_while_store_down(self):
        """
        Once a write failed, no new task starts, though children are idle;
        when the retried write succeeds, the waiting tasks start.
        """
        self.pool.finish(0)
        held_writes(self.store)[0][1].fail(ConnectionError("store down"))
        self.flushLoggedErrors(ConnectionError)
        self.deliver(2, start=10)
        self.pool.idle = 2
        self.dispatcher.pump()
        self.assertEqual(len(self.pool.batches), 1)
        self.clock.advance(0.5)
        [(_, again)] = held_writes(self.store)
        again.answer()
        self.assertEqual(len(self.pool.batches), 3)
        self.assertEqual(self.dispatcher.health.down_since, None)

    def test_store_failure_while_stopping(self):
        """
        A store failure during shutdown sends the messages back to the queue.
        """
        self.dispatcher.drain()
        self.pool.finish(0)
        held_writes(self.store)[0][1].fail(ConnectionError("store down"))
        self.flushLoggedErrors(ConnectionError)
        for d in self.deliveries:
            self.assertEqual(d.settled, [("reject", True)])

    def test_child_lost_batch_runs_again_alone(self):
        """
        When the child running a batch dies, nothing is settled or stored;
        each task of the batch runs again alone, on the next idle child.
        """
        self.pool.batches[0][1].errback(ChildLost("Process-1 died", "killed by signal 9"))
        self.flushLoggedErrors()
        for d in self.deliveries:
            self.assertEqual(d.settled, [])
        self.assertEqual(store_calls(self.store), [])
        self.pool.idle = 2
        self.dispatcher.pump()
        self.assertEqual(self.batch_ids()[1:], [[task_id(1)], [task_id(2)]])

    def test_child_lost_during_shutdown(self):
        """
        Once draining, a lost batch goes back to the queue at once.
        """
        self.dispatcher.drain()
        self.pool.batches[0][1].errback(ChildLost("Process-1 died", "killed by signal 9"))
        for d in self.deliveries:
            self.assertEqual(d.settled, [("reject", True)])

    def test_wrong_outcome_count(self):
        """
        A child answering fewer outcomes than tasks sends the batch back to
        the queue instead of leaving it unacknowledged for ever.
        """
        self.pool.finish(0, [success_document(task_id(1), "add", 1)])
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual(store_calls(self.store), [])
        for d in self.deliveries:
            self.assertEqual(d.settled, [("reject", True)])


class DrainTests(DispatcherTestCase):
    """
    ``drain()`` on shutdown.
    """

    def test_drain(self):
        """
        ``drain()`` returns queued deliveries to the queue at once and fires
        only after the in-flight batches are stored and acked.
        """
        deliveries = self.deliver(6)
        self.pool.idle = 2
        self.dispatcher.pump()
        self.assertEqual([len(b) for b, _ in self.pool.batches], [3, 3])
        self.pool.idle = 0
        queued = self.deliver(2, start=7)
        drained = self.dispatcher.drain()
        for d in queued:
            self.assertEqual(d.settled, [("reject", True)])
        self.assertEqual(self.dispatcher.stats()["pending"], 0)
        self.assertNoResult(drained)
        self.pool.finish(0)
        held_writes(self.store)[0][1].answer()
        self.assertNoResult(drained)
        self.pool.finish(1)
        self.assertNoResult(drained)
        [(rows, stored)] = held_writes(self.store)
        self.assertEqual([row.task_id for row in rows], [task_id(n) for n in (4, 5, 6)])
        stored.answer()
        self.assertIsNone(self.successResultOf(drained))
        self.assertEqual([d.settled for d in deliveries], [["ack"]] * 6)
        self.assertEqual(
            self.dispatcher.drain_summary(),
            "6 tasks settled while draining (stored, then acknowledged); "
            "2 not started went back to the queue",
        )

    def test_drain_summary_store_down(self):
        """
        When the store fails while draining, the summary says that the
        outcomes were not stored and their messages went back.
        """
        deliveries = self.deliver(2)
        self.pool.idle = 1
        self.dispatcher.pump()
        drained = self.dispatcher.drain()
        self.pool.finish(0)
        [(_, stored)] = held_writes(self.store)
        stored.fail(ConnectionError("down"))
        self.flushLoggedErrors(ConnectionError)
        self.successResultOf(drained)
        self.assertEqual([d.settled for d in deliveries], [[("reject", True)]] * 2)
        self.assertEqual(
            self.dispatcher.drain_summary(),
            "0 tasks settled while draining (stored, then acknowledged); "
            "0 not started went back to the queue; 2 ran but their outcomes could not "
            "be stored: their messages went back to the queue",
        )

    def test_drain_summary_children_killed(self):
        """
        Children killed at the end of the grace period: the summary says
        their tasks were running and went back, not that their outcomes
        could not be stored.
        """
        deliveries = self.deliver(2)
        self.pool.idle = 1
        self.dispatcher.pump()
        drained = self.dispatcher.drain()
        self.pool.batches[0][1].errback(ChildLost("Process-1 died running a batch", "killed"))
        self.successResultOf(drained)
        self.assertEqual([d.settled for d in deliveries], [[("reject", True)]] * 2)
        summary = self.dispatcher.drain_summary()
        self.assertIn("2 were running when their children were killed", summary)
        self.assertNotIn("could not be stored", summary)

    def test_drain_settles_failures(self):
        """
        ``drain()`` also waits for batches that fail, and fires once they are
        rejected.
        """
        deliveries = self.deliver(1)
        self.pool.idle = 1
        self.dispatcher.pump()
        drained = self.dispatcher.drain()
        self.assertNoResult(drained)
        self.pool.batches[0][1].errback(ChildLost("gone"))
        self.successResultOf(drained)
        self.assertEqual(deliveries[0].settled, [("reject", True)])

    def test_drain_idle(self):
        """
        With nothing in flight ``drain()`` fires at once.
        """
        self.successResultOf(self.dispatcher.drain())


class ChildDeathTests(DispatcherTestCase):
    """
    Tasks whose child dies: isolated, retried, then failed and
    dead-lettered; tasks killed at their time limit fail at once.
    """

    def setUp(self):
        super().setUp()
        self.dispatcher = Dispatcher(
            self.pool, self.store, self.clock, DispatchSettings(max_attempts=3)
        )
        self.pool.idle = 1
        [self.poison] = self.deliver(1)

    def kill_last(self, reason="killed by signal 11"):
        self.pool.idle += 1
        self.pool.batches[-1][1].errback(ChildLost("died", reason))
        self.flushLoggedErrors()

    def test_poison_task_fails_after_attempts(self):
        """
        A task that kills its child on each of ``max_attempts`` runs is
        stored as a WorkerLostError failure naming how the child died, then
        dead-lettered; it ran alone each time.
        """
        self.kill_last()
        self.kill_last()
        self.assertEqual(store_calls(self.store), [])
        self.kill_last()
        [(rows, stored)] = held_writes(self.store)
        document = json.loads(rows[0].document)
        self.assertEqual(document["exc"]["type"], "WorkerLostError")
        self.assertIn("killed by signal 11", document["exc"]["message"])
        self.assertIn("3 attempts", document["exc"]["message"])
        self.assertEqual(self.poison.settled, [])
        stored.answer()
        self.assertEqual(self.poison.settled, [("dead-letter", "attempts-exhausted")])
        self.assertIn("3 attempts", self.poison.details[0])
        self.assertEqual(self.batch_ids(), [[task_id(1)]] * 3)

    def test_survivor_is_forgiven(self):
        """
        A task that killed a child once and then succeeds is stored and
        acked normally.
        """
        self.kill_last()
        self.pool.finish(1)
        held_writes(self.store)[0][1].answer()
        self.assertEqual(self.poison.settled, ["ack"])
        self.assertEqual(self.dispatcher.stats()["retrying"], 0)

    def test_time_limit_fails_at_once(self):
        """
        A task killed at its hard time limit is stored as a
        TimeLimitExceeded failure and acked, not retried.
        """
        self.pool.idle += 1
        self.pool.batches[-1][1].errback(ChildLost("over time", "time-limit", 2.5))
        [(rows, stored)] = held_writes(self.store)
        document = json.loads(rows[0].document)
        self.assertEqual(document["exc"]["type"], "TimeLimitExceeded")
        self.assertIn("2.5 s", document["exc"]["message"])
        stored.answer()
        self.assertEqual(self.poison.settled, ["ack"])
        self.assertEqual(len(self.pool.batches), 1)


class TimeLimitDispatchTests(DispatcherTestCase):
    """
    Tasks with a hard time limit run alone, with the limit.
    """

    def test_limited_tasks_run_alone(self):
        """
        With a default limit every task goes to a child alone, with that
        limit; a per-task limit reported by the children wins.
        """
        self.dispatcher = Dispatcher(
            self.pool, self.store, self.clock, DispatchSettings(time_limit=10.0)
        )
        self.pool.task_limits = {"slow": (None, 60.0)}
        self.pool.idle = 3
        self.dispatcher.deliver(delivery(1))
        self.dispatcher.deliver(delivery(2, task="slow"))
        self.assertEqual(self.batch_ids(), [[task_id(1)], [task_id(2)]])
        self.assertEqual(self.pool.time_limits, [10.0, 60.0])

    def test_unlimited_tasks_batch(self):
        """
        Without limits, queued tasks are batched and no limit is passed.
        """
        self.deliver(4)
        self.pool.idle = 1
        self.dispatcher.pump()
        self.assertEqual(self.batch_ids(), [[task_id(n) for n in (1, 2, 3, 4)]])
        self.assertEqual(self.pool.time_limits, [None])


class DuplicateCheckTests(SynchronousTestCase):
    """
    With ``check_duplicates`` and a store without claims, one store read
    per reactor turn tells which deliveries already have a committed
    outcome.
    """

    def setUp(self):
        self.clock = Clock()
        self.pool = FakePool(idle=2)
        self.store = MemoryBackend(self.clock)
        self.dispatcher = Dispatcher(
            self.pool,
            ResultsOnly(self.store),
            self.clock,
            DispatchSettings(max_batch=4, check_duplicates=True),
        )

    def reads(self):
        return [call.args for call in self.store.calls if call.name == "get_results"]

    def test_committed_outcome_acked_without_running(self):
        """
        A delivery whose id already has SUCCESS (or FAILURE) is acked and
        never reaches the pool; a pending record does not count; the others
        run; the deliveries of one turn cost one read.
        """
        done, failed, pending, new = (delivery(n) for n in (1, 2, 3, 4))
        put(self.store, task_id(1), success_document(task_id(1), "add", 1))
        put(
            self.store,
            task_id(2),
            failure_document(task_id(2), "add", ValueError("x"), traceback=""),
        )
        pending_record = b'{"id":"x","task":"add","status":"PENDING","sent_at":"now"}'
        self.successResultOf(self.store.mark_sent([(task_id(3), pending_record)]))
        self.store.calls.clear()
        for d in (done, failed, pending, new):
            self.dispatcher.deliver(d)
        self.assertEqual(self.pool.batches, [])
        self.clock.advance(0)
        self.assertEqual(
            self.store.calls, [Call("get_results", ([task_id(n) for n in (1, 2, 3, 4)],))]
        )
        self.assertEqual((done.settled, failed.settled), (["ack"], ["ack"]))
        ran = sorted(i for batch in self.pool.ids() for i in batch)
        self.assertEqual(ran, [task_id(3), task_id(4)])
        self.assertEqual(self.dispatcher.stats()["duplicates_suppressed"], 2)

    def test_dead_lettered_failure_runs_again(self):
        """
        A FAILURE stored when the message was dead-lettered is not final:
        the message, republished from the dead-letter queue, runs again.
        """
        again = delivery(1)
        put(
            self.store,
            task_id(1),
            failure_document(
                task_id(1), "add", ValueError("x"), traceback="", dead_letter="unknown-task"
            ),
        )
        self.dispatcher.deliver(again)
        self.clock.advance(0)
        self.assertEqual(self.pool.ids(), [[task_id(1)]])
        self.assertEqual(self.dispatcher.stats()["duplicates_suppressed"], 0)

    def test_revoked_while_waiting_for_eta(self):
        """
        A task held for its ETA is checked again when it comes due: revoked
        meanwhile, it is acked without running.
        """
        eta = datetime.datetime.fromtimestamp(60, datetime.timezone.utc).isoformat()
        held = delivery(1, eta=eta)
        self.dispatcher.deliver(held)
        self.clock.advance(0)
        self.assertEqual(len(self.reads()), 1)
        put(self.store, task_id(1), revoked_document(task_id(1), "add", "revoked"))
        self.clock.advance(60)
        self.clock.advance(0)
        self.assertEqual(len(self.reads()), 2)
        self.assertEqual(held.settled, ["ack"])
        self.assertEqual(self.pool.batches, [])

    def test_store_down_holds_tasks(self):
        """
        When the store cannot be read the tasks wait, unacknowledged, and
        the store is probed after 0.5 s, 1 s, 2 s...; once a probe answers
        they run.
        """
        self.store.set_unavailable(ConnectionError("store down"))
        d = delivery(1)
        self.dispatcher.deliver(d)
        self.clock.advance(0)
        self.flushLoggedErrors(ConnectionError)
        self.assertEqual(self.pool.ids(), [])
        self.assertFalse(self.dispatcher.stats()["store_available"])
        self.store.set_available()
        self.store.pause()  # the test answers the probes
        self.clock.advance(0.5)
        [probe] = self.store.held
        self.assertEqual(probe.call, Call("get_result", (STORE_PROBE_ID,)))
        probe.fail(ConnectionError("still down"))
        self.clock.advance(0.9)
        self.assertEqual(self.store.held, [])
        self.clock.advance(0.1)
        [probe] = self.store.held
        self.assertEqual(probe.call, Call("get_result", (STORE_PROBE_ID,)))
        probe.answer()
        self.assertEqual(self.pool.ids(), [[task_id(1)]])
        self.assertEqual(d.settled, [])
        self.assertTrue(self.dispatcher.stats()["store_available"])

    def test_drain_returns_unchecked(self):
        """
        Deliveries waiting for the check go back to the queue on drain.
        """
        d = delivery(1)
        self.dispatcher.deliver(d)
        self.dispatcher.drain()
        self.clock.advance(0)
        self.assertEqual(d.settled, [("reject", True)])
        self.assertEqual(self.reads(), [])
