"""
The daemon's cleanup of expired results, for stores without their own
expiry: a periodic job of the scheduler.
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.test_scheduler import START, Broker, MemoryScheduleStore
from twistedq.daemon.periodic import CLEANUP_JOB, cleanup_job
from twistedq.scheduler import Scheduler
from twistedq.schedules import Interval
from twistedq.tap import Options, makeService


class ExpiringStore(MemoryScheduleStore):
    url = "fake://"

    def __init__(self, clock, fail_first=False):
        super().__init__(clock)
        self.calls = 0
        self.fail_first = fail_first

    def delete_expired(self):
        self.calls += 1
        if self.fail_first and self.calls == 1:
            return defer.fail(ConnectionError("store down"))
        return defer.succeed(3)


def scheduler_with_cleanup(store, clock, interval):
    scheduler = Scheduler(
        store,
        Broker().publish,
        clock,
        wall=lambda: START + clock.seconds(),
        monotonic=clock.seconds,
    )
    scheduler.add_job(cleanup_job(store, interval))
    return scheduler


def advance(clock, seconds):
    for _ in range(int(seconds)):
        clock.advance(1)


class CleanupTests(SynchronousTestCase):
    def test_runs_every_interval(self):
        """
        Expired results are removed at each slot of the interval, counted
        in the job's periodic state, and no longer once stopped.
        """
        clock = Clock()
        store = ExpiringStore(clock)
        scheduler = scheduler_with_cleanup(store, clock, 60.0)
        scheduler.startService()
        advance(clock, 150)
        self.assertEqual(store.calls, 3)  # at 0, 60 and 120 s
        self.assertEqual(store.states[CLEANUP_JOB].total_run_count, 3)
        self.successResultOf(scheduler.stopService())
        advance(clock, 600)
        self.assertEqual(store.calls, 3)

    def test_failure_logged_loop_goes_on(self):
        """
        A failed cleanup is logged and the next one still runs.
        """
        clock = Clock()
        store = ExpiringStore(clock, fail_first=True)
        scheduler_with_cleanup(store, clock, 10.0).startService()
        advance(clock, 15)
        self.assertEqual(len(self.flushLoggedErrors(ConnectionError)), 1)
        self.assertEqual(store.calls, 2)

    def test_once_across_daemons(self):
        """
        Two daemons on one store clean once per slot between them.
        """
        clock = Clock()
        store = ExpiringStore(clock)
        for _ in range(2):
            scheduler_with_cleanup(store, clock, 10.0).startService()
        advance(clock, 35)
        self.assertEqual(store.calls, 4)

    def test_store_with_own_expiry(self):
        """
        A store without delete_expired (Redis, memcached) gets no job.
        """
        self.assertIsNone(cleanup_job(MemoryScheduleStore(Clock()), 10.0))

    def test_daemon_schedules_cleanup(self):
        """
        The daemon on SQLite schedules the job at ``--cleanup-interval``.
        """
        options = Options()
        options.parseOptions(["-r", "sqlite:///results.sqlite3", "--cleanup-interval", "90"])
        scheduler = next(s for s in makeService(options) if isinstance(s, Scheduler))
        self.assertEqual(scheduler.entries[CLEANUP_JOB].schedule, Interval(90))
