"""
Tests for the seams of the daemon's core: the events every stage reports,
the one back-off, and each job's lifecycle.
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.fakes import FakePool, delivery, held_writes, task_id
from twistedq.backends.memory import MemoryBackend
from twistedq.daemon.backoff import LONGEST_PAUSE, persist
from twistedq.daemon.dispatcher import Dispatcher
from twistedq.daemon.events import EventKind, Events
from twistedq.daemon.job import Job, JobState
from twistedq.message import TaskMessage


class EventsTests(SynchronousTestCase):
    """
    Every stage reports through one :py:class:`Events`; observers see each
    event once, in order, and a failing observer never breaks a stage.
    """

    def test_task_path_reported(self):
        """
        One task that runs and is stored reports received, started and
        succeeded, in that order, with its id and name; the counters in
        ``stats()`` are those events counted.
        """
        clock = Clock()
        pool = FakePool(idle=1)
        store = MemoryBackend(clock)
        store.pause()  # the writes are answered below
        events = Events()
        seen = []
        events.subscribe(lambda event: seen.append((event.kind, event.task_id, event.task_name)))
        dispatcher = Dispatcher(pool, store, clock, events=events)
        dispatcher.deliver(delivery(1))
        pool.finish(0)
        [(_, stored)] = held_writes(store)
        stored.answer()
        kinds = [EventKind.RECEIVED, EventKind.STARTED, EventKind.SUCCEEDED]
        self.assertEqual(seen, [(kind, task_id(1), "add") for kind in kinds])
        self.assertEqual(dispatcher.stats()["completed"], 1)

    def test_daemon_events(self):
        """
        A store that fails a write reports store-down and store-retry; the
        write that goes through reports store-up.
        """
        clock = Clock()
        pool = FakePool(idle=1)
        store = MemoryBackend(clock)
        store.pause()  # the writes are answered below
        events = Events()
        seen = []
        events.subscribe(lambda event: seen.append(event.kind))
        dispatcher = Dispatcher(pool, store, clock, events=events)
        dispatcher.deliver(delivery(1))
        pool.finish(0)
        [(_, stored)] = held_writes(store)
        stored.fail(ConnectionError("down"))
        self.flushLoggedErrors(ConnectionError)
        self.assertIn(EventKind.STORE_DOWN, seen)
        self.assertIn(EventKind.STORE_RETRY, seen)
        clock.advance(0.5)
        [(_, stored)] = held_writes(store)
        stored.answer()
        self.assertEqual(seen[-2:], [EventKind.STORE_UP, EventKind.SUCCEEDED])
        self.assertEqual(dispatcher.stats()["store_retries"], 1)

    def test_failing_observer_unsubscribed(self):
        """
        An observer that raises is logged and unsubscribed; the others and
        the reporting stage go on.
        """
        events = Events()

        def broken(event):
            raise RuntimeError("observer bug")

        events.subscribe(broken)
        events.report(EventKind.RECEIVED, task_id(1), "add")
        events.report(EventKind.RECEIVED, task_id(2), "add")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(events.counts[EventKind.RECEIVED], 2)


class PersistTests(SynchronousTestCase):
    """
    :py:func:`persist` is the one back-off of the core.
    """

    def test_pauses_double_up_to_the_longest(self):
        """
        After each failure it waits, doubling the pause from the first up
        to :py:data:`LONGEST_PAUSE`, and stops once the attempt succeeds.
        """
        clock = Clock()
        attempts = []
        pauses = []

        def attempt():
            attempts.append(clock.seconds())
            if len(attempts) < 10:
                return defer.fail(ConnectionError("not yet"))
            return defer.succeed("done")

        def again(failure, pause):
            pauses.append(pause)
            return True

        d = persist(clock, attempt, again, first=0.5)
        clock.pump([1.0] * 200)
        self.assertEqual(self.successResultOf(d), "done")
        self.assertEqual(pauses, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, LONGEST_PAUSE])

    def test_gives_up_when_told(self):
        """
        When ``again`` answers False the result fails with the attempt's
        failure, and nothing is scheduled.
        """
        clock = Clock()
        d = persist(clock, lambda: defer.fail(ValueError("no")), lambda f, p: False)
        self.failureResultOf(d, ValueError)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_cancel_stops_waiting(self):
        """
        Cancelling the result cancels the pause under way.
        """
        clock = Clock()
        d = persist(clock, lambda: defer.fail(ValueError("no")), lambda f, p: True)
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertEqual(clock.getDelayedCalls(), [])


class LifecycleTests(SynchronousTestCase):
    """
    Each job's state says where it is; only the stages move it.
    """

    def test_states_of_one_task(self):
        """
        A job is queued while no child is idle, running once handed out,
        storing while its outcome is written, and settled once acked.
        """
        clock = Clock()
        pool = FakePool(idle=0)
        store = MemoryBackend(clock)
        store.pause()  # the writes are answered below
        dispatcher = Dispatcher(pool, store, clock)
        dispatcher.deliver(delivery(1))
        (job,) = dispatcher.feeder.pending
        self.assertEqual(job.state, JobState.QUEUED)
        pool.idle = 1
        dispatcher.pump()
        self.assertEqual(job.state, JobState.RUNNING)
        pool.finish(0)
        self.assertEqual(job.state, JobState.STORING)
        [(_, stored)] = held_writes(store)
        stored.answer()
        self.assertEqual(job.state, JobState.SETTLED)
        self.assertEqual(job.delivery.settled, ["ack"])

    def test_waiting_and_given_back(self):
        """
        A job with a near ETA is waiting; a drain gives it back, settled.
        """
        clock = Clock()
        clock.advance(1000)
        dispatcher = Dispatcher(FakePool(idle=1), MemoryBackend(clock), clock)
        body = TaskMessage(id=task_id(1), task="add", eta="1970-01-01T00:17:00+00:00").encode()
        d = delivery(1)
        d.body = body
        dispatcher.deliver(d)
        (job,) = dispatcher.timing.waiting
        self.assertEqual(job.state, JobState.WAITING)
        self.assertEqual(job.eta, 1020.0)
        self.successResultOf(dispatcher.drain())
        self.assertEqual(job.state, JobState.SETTLED)
        self.assertEqual(d.settled, [("reject", True)])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_eta_read_once(self):
        """
        A job parses its message's ETA and expiry once, as seconds since
        the epoch (a time without a zone is UTC).
        """
        message = TaskMessage(
            id=task_id(1), task="add", eta="1970-01-01T00:01:00", expires="1970-01-01T00:02:00Z"
        )
        job = Job(delivery(1), message)
        self.assertEqual((job.eta, job.expires), (60.0, 120.0))
        self.assertTrue(job.early(59.0))
        self.assertFalse(job.early(60.0))
        self.assertTrue(job.expired(120.0))


class StoreWatchTests(SynchronousTestCase):
    """
    The store's health is watched while no task arrives: an outage is
    seen within seconds, and its end too.
    """

    def setUp(self):
        self.clock = Clock()
        self.store = MemoryBackend(self.clock)
        self.dispatcher = Dispatcher(FakePool(idle=1), self.store, self.clock)
        self.health = self.dispatcher.health

    def test_outage_seen_without_tasks(self):
        self.health.watch(2.0)
        self.assertTrue(self.dispatcher.store_available)
        self.store.set_unavailable(ConnectionError("down"))
        self.clock.advance(2.0)
        self.assertFalse(self.dispatcher.store_available)
        self.assertEqual(self.dispatcher.events.counts[EventKind.STORE_DOWN], 1)
        self.store.set_available()
        self.clock.pump([0.5] * 4)
        self.assertTrue(self.dispatcher.store_available)

    def test_down_at_start(self):
        """
        A store that does not answer when the daemon starts is unavailable
        at once, not when the first task comes.
        """
        self.store.set_unavailable(ConnectionError("down"))
        self.health.watch(2.0)
        self.assertFalse(self.dispatcher.store_available)

    def test_hung_store(self):
        """
        A read that takes longer than the period counts as a failure.
        """
        self.health.watch(2.0)
        self.store.pause()
        self.clock.advance(2.0)
        self.assertTrue(self.dispatcher.store_available)
        self.clock.advance(2.0)
        self.assertFalse(self.dispatcher.store_available)

    def test_quiet_while_busy(self):
        """
        No health read while other calls answer within the period.
        """
        self.health.watch(2.0)
        reads = len(self.store.calls)
        for _ in range(5):
            self.clock.advance(1.0)
            self.health.answered()
        self.assertEqual(len(self.store.calls), reads)

    def test_drain_stops_watching(self):
        self.health.watch(2.0)
        self.dispatcher.drain()
        self.assertEqual(self.clock.getDelayedCalls(), [])
