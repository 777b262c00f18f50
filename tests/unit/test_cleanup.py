"""
The daemon's cleanup of expired results, for stores without their own
expiry: a periodic job of the scheduler.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.fakes import START, FakeBroker, held_named
from twistedq.backends.memory import MemoryBackend
from twistedq.backends.url import backend_from_url
from twistedq.daemon.periodic import CLEANUP_JOB, cleanup_job
from twistedq.scheduler import Scheduler
from twistedq.schedules import Interval
from twistedq.tap import Options, makeService


def scheduler_with_cleanup(store, clock, interval):
    scheduler = Scheduler(
        store,
        FakeBroker().publish,
        clock,
        wall=lambda: START + clock.seconds(),
        monotonic=clock.seconds,
    )
    scheduler.add_job(cleanup_job(store, interval))
    return scheduler


def advance(clock, seconds):
    for _ in range(int(seconds)):
        clock.advance(1)


def cleanups(store):
    """
    How many cleanups were asked of the store.
    """
    return sum(1 for call in store.calls if call.name == "delete_expired")


class CleanupTests(SynchronousTestCase):
    def test_runs_every_interval(self):
        """
        Expired results are removed at each slot of the interval, counted
        in the job's periodic state, and no longer once stopped.
        """
        clock = Clock()
        store = MemoryBackend(clock)
        scheduler = scheduler_with_cleanup(store, clock, 60.0)
        scheduler.startService()
        advance(clock, 150)
        self.assertEqual(cleanups(store), 3)  # at 0, 60 and 120 s
        states = self.successResultOf(store.get_periodic_states([CLEANUP_JOB]))
        self.assertEqual(states[CLEANUP_JOB].total_run_count, 3)
        self.successResultOf(scheduler.stopService())
        advance(clock, 600)
        self.assertEqual(cleanups(store), 3)

    def test_failure_logged_loop_goes_on(self):
        """
        A failed cleanup is logged and the next one still runs.
        """
        clock = Clock()
        store = MemoryBackend(clock)
        store.pause()
        scheduler_with_cleanup(store, clock, 10.0).startService()
        while not held_named(store, "delete_expired"):  # the first slot comes due
            if store.held:
                store.held[0].answer()
            else:
                clock.advance(0.25)
        [cleanup] = held_named(store, "delete_expired")
        cleanup.fail(ConnectionError("store down"))
        store.resume()
        advance(clock, 15)
        self.assertEqual(len(self.flushLoggedErrors(ConnectionError)), 1)
        self.assertEqual(cleanups(store), 2)

    def test_once_across_daemons(self):
        """
        Two daemons on one store clean once per slot between them.
        """
        clock = Clock()
        store = MemoryBackend(clock)
        for _ in range(2):
            scheduler_with_cleanup(store, clock, 10.0).startService()
        advance(clock, 35)
        self.assertEqual(cleanups(store), 4)

    def test_store_with_own_expiry(self):
        """
        A store without delete_expired (Redis, memcached) gets no job.
        """
        redis = backend_from_url("redis://127.0.0.1:6379/0", Clock())
        self.assertFalse(hasattr(redis, "delete_expired"))
        self.assertIsNone(cleanup_job(redis, 10.0))

    def test_daemon_schedules_cleanup(self):
        """
        The daemon on SQLite schedules the job at ``--cleanup-interval``.
        """
        options = Options()
        options.parseOptions(["-r", "sqlite:///results.sqlite3", "--cleanup-interval", "90"])
        scheduler = next(s for s in makeService(options) if isinstance(s, Scheduler))
        self.assertEqual(scheduler.entries[CLEANUP_JOB].schedule, Interval(90))
