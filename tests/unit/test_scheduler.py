"""
The scheduler on a :py:class:`Clock`, with the memory store (one claim
wins, leases lapse): several daemons, crashes between claim and commit,
failed publishes, catch-up, clock steps and pauses.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.unit.fakes import START, FakeBroker
from twistedq.backends.base import IScheduleStore, PeriodicState
from twistedq.backends.memory import MemoryBackend
from twistedq.scheduler import LocalJob, Scheduler, slot_task_id
from twistedq.schedules import Interval, crontab

EVERY_SECOND = {"every": 1.0, "catch_up": "once", "queue": None}


class Daemon:
    """
    One scheduler with its own wall clock offset, on a shared Clock.
    """

    def __init__(self, clock: Clock, store: MemoryBackend, broker: FakeBroker, **kwargs: Any):
        self.offset = 0.0
        self.scheduler = Scheduler(
            store,
            broker.publish,
            clock,
            wall=lambda: START + clock.seconds() + self.offset,
            monotonic=clock.seconds,
            **kwargs,
        )


def advance(clock: Clock, seconds: float, step: float = 0.25) -> None:
    for _ in range(round(seconds / step)):
        clock.advance(step)


class SchedulerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemoryBackend(self.clock)
        self.broker = FakeBroker()

    def daemon(self, specs=None, **kwargs) -> Daemon:
        daemon = Daemon(self.clock, self.store, self.broker, **kwargs)
        daemon.scheduler.add_tasks(specs if specs is not None else {"beat": EVERY_SECOND})
        return daemon

    def expected(self, first: float, last: float, name: str = "beat") -> set[str]:
        return {slot_task_id(name, START + s) for s in range(int(first), int(last) + 1)}

    def state(self, name: str = "beat") -> PeriodicState:
        """
        A task's periodic state, as the store reads it.
        """
        return self.successResultOf(self.store.get_periodic_states([name]))[name]

    def ran_before(self, last_run_at: float, runs: int, next_run_at: float) -> None:
        """
        Store the state "beat" has after ``runs`` runs, the last at
        ``last_run_at``, the next due at ``next_run_at``.
        """
        for run in range(runs):
            self.successResultOf(
                self.store.commit_slot(f"before-{run}", "beat", last_run_at, next_run_at, 60.0)
            )
        self.assertEqual(self.state(), PeriodicState("beat", True, last_run_at, runs, next_run_at))

    def test_store_keeps_interface(self) -> None:
        """
        The memory store provides the interface the real ones do.
        """
        self.assertTrue(verifyObject(IScheduleStore, self.store))

    def test_three_daemons_each_slot_once(self) -> None:
        """
        Three schedulers on one store publish each one-second slot once,
        under its slot id, and the state counts every run.
        """
        daemons = [self.daemon() for _ in range(3)]
        for daemon in daemons:
            daemon.scheduler.startService()
        advance(self.clock, 60)
        ids = self.broker.ids()
        self.assertEqual(set(ids.values()), {1})
        self.assertEqual(set(ids), self.expected(0, 60))
        state = self.state()
        self.assertEqual(state.total_run_count, 61)
        self.assertEqual(state.last_run_at, START + 60)
        self.assertEqual(state.next_run_at, START + 61)
        self.assertEqual([m.task for m in self.broker.messages[:1]], ["beat"])

    def test_crash_between_claim_and_publish(self) -> None:
        """
        A daemon that claimed a slot and died before publishing it holds
        it only for its lease; another daemon then publishes it, once.
        """
        hanging = FakeBroker()
        hanging.hang = True
        crashing = Daemon(self.clock, self.store, hanging, lease=5.0)
        crashing.scheduler.add_tasks({"beat": EVERY_SECOND})
        survivor = self.daemon(lease=5.0)
        crashing.scheduler.startService()
        survivor.scheduler.startService()
        advance(self.clock, 0.75)  # slot 0 claimed, its publish never returns
        crashing.scheduler._loop.stop()  # and it dies
        advance(self.clock, 10.25)
        ids = self.broker.ids()
        self.assertEqual(set(ids.values()), {1})
        self.assertEqual(set(ids), self.expected(0, 11))

    def test_failed_publish_retried(self) -> None:
        """
        A publish that fails releases the claim and is tried again a
        second later.  Under a one-second task the next slot is due by
        then, so the failed slots are missed and, with ``catch_up="once"``,
        the first slot after the failure is the gap's one run.
        """
        daemon = self.daemon()
        self.broker.fail = True
        daemon.scheduler.startService()
        advance(self.clock, 1)
        self.assertEqual(self.broker.messages, [])
        self.broker.fail = False
        advance(self.clock, 3)
        ids = self.broker.ids()
        self.assertEqual(set(ids.values()), {1})
        self.assertEqual(set(ids), self.expected(2, 4))
        self.assertEqual(daemon.scheduler.failures, 2)  # slot 0 at 0 s, slot 1 at 1 s

    def test_store_down_then_back(self) -> None:
        """
        While the store is down nothing is published (nothing can be
        claimed); the slots that came due meanwhile are a gap: with
        ``catch_up="once"`` one runs when the store is back (here the
        next slot, as it came due first), then every slot as usual.
        """
        daemon = self.daemon()
        daemon.scheduler.startService()
        advance(self.clock, 2)
        self.store.set_unavailable(ConnectionRefusedError("store down"))
        advance(self.clock, 3)
        published = len(self.broker.messages)
        self.assertEqual(published, 3)
        self.store.set_available()
        advance(self.clock, 3)
        ids = self.broker.ids()
        self.assertEqual(set(ids.values()), {1})
        self.assertEqual(set(ids), self.expected(0, 2) | self.expected(6, 8))

    def test_catch_up_once(self) -> None:
        """
        After a downtime of every daemon, a task with ``catch_up="once"``
        runs its latest missed slot once, then keeps its schedule.
        """
        self.ran_before(START - 100, 7, START - 99)
        self.daemon().scheduler.startService()
        advance(self.clock, 2)
        ids = self.broker.ids()
        self.assertEqual(set(ids), {slot_task_id("beat", START - 1)} | self.expected(0, 2))

    def test_catch_up_skip(self) -> None:
        """
        With ``catch_up="skip"`` the missed slots are not run.
        """
        self.ran_before(START - 100, 7, START - 99)
        self.daemon({"beat": {**EVERY_SECOND, "catch_up": "skip"}}).scheduler.startService()
        advance(self.clock, 2)
        self.assertEqual(set(self.broker.ids()), self.expected(0, 2))

    def test_first_start_does_not_catch_up(self) -> None:
        """
        A task that never ran starts with its next slot.
        """
        self.daemon({"daily": {"every": 86400.0, "catch_up": "once"}}).scheduler.startService()
        advance(self.clock, 10)
        self.assertEqual(self.broker.messages, [])
        self.assertEqual(self.state("daily").next_run_at, START - START % 86400 + 86400)

    def test_wall_clock_steps_back(self) -> None:
        """
        A step back of the wall clock neither runs a slot twice nor stalls
        the schedule: slots go on every second.
        """
        daemon = self.daemon()
        daemon.scheduler.startService()
        advance(self.clock, 10)
        daemon.offset = -30.0
        advance(self.clock, 10)
        ids = self.broker.ids()
        self.assertEqual(set(ids.values()), {1})
        self.assertEqual(len(ids), 21)

    def test_wall_clock_steps_forward(self) -> None:
        """
        A step forward of an hour does not run 3,600 slots: the catch-up
        policy runs one, then the schedule goes on.
        """
        daemon = self.daemon()
        daemon.scheduler.startService()
        advance(self.clock, 5)
        daemon.offset = 3600.0
        advance(self.clock, 5)
        ids = self.broker.ids()
        self.assertEqual(set(ids.values()), {1})
        self.assertEqual(set(ids), self.expected(0, 5) | self.expected(3605, 3610))

    def test_pause_and_resume(self) -> None:
        """
        Pausing a task in the store stops its slots in every daemon within
        the state refresh; resuming goes on from the present, without
        catching up the paused time.
        """
        daemons = [self.daemon(state_refresh=2.0) for _ in range(2)]
        for daemon in daemons:
            daemon.scheduler.startService()
        advance(self.clock, 5)
        self.store.set_periodic_enabled("beat", False)
        advance(self.clock, 20)
        paused_at = len(self.broker.messages)
        self.assertLessEqual(paused_at, 8)
        advance(self.clock, 10)
        self.assertEqual(len(self.broker.messages), paused_at)
        daemons[0].scheduler.set_enabled("beat", True)
        advance(self.clock, 10)
        ids = self.broker.ids()
        self.assertEqual(set(ids.values()), {1})
        self.assertGreaterEqual(len(ids) - paused_at, 7)
        self.assertTrue(self.state().enabled)

    def test_queue_and_crontab(self) -> None:
        """
        A crontab task is published at its minutes, to its queue.
        """
        spec = {**crontab(minute="*/2").spec(), "catch_up": "once", "queue": "reports"}
        self.daemon({"report": spec}).scheduler.startService()
        advance(self.clock, 300, step=1.0)
        self.assertEqual(len(self.broker.messages), 3)
        self.assertEqual(set(self.broker.queues), {"reports"})

    def test_unreadable_spec_left_out(self) -> None:
        """
        A spec that describes no schedule is logged and left out; the
        others run.
        """
        daemon = self.daemon({"bad": {"every": -1}, "beat": EVERY_SECOND})
        self.assertEqual(list(daemon.scheduler.entries), ["beat"])
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_local_job_once_across_daemons(self) -> None:
        """
        A local job (the clean-up) runs once per slot across daemons,
        even when it fails, and publishes nothing.
        """
        runs = []

        def run() -> defer.Deferred[None]:
            runs.append(self.clock.seconds())
            if len(runs) == 2:
                return defer.fail(RuntimeError("store hiccup"))
            return defer.succeed(None)

        daemons = [self.daemon({}) for _ in range(2)]
        for daemon in daemons:
            daemon.scheduler.add_job(LocalJob("cleanup", Interval(10), run))
            daemon.scheduler.startService()
        advance(self.clock, 45)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(runs, [0.0, 10.0, 20.0, 30.0, 40.0])
        self.assertEqual(self.broker.messages, [])
        self.assertEqual(self.state("cleanup").total_run_count, 5)

    def test_stop_waits_for_claims(self) -> None:
        """
        Stopping waits for a publish under way.
        """
        daemon = self.daemon()
        self.broker.hang = True
        daemon.scheduler.startService()
        advance(self.clock, 1)
        stopped = daemon.scheduler.stopService()
        self.assertNoResult(stopped)

    def test_tasks_added_after_start(self) -> None:
        """
        Tasks added once the scheduler runs (the children report them after
        the daemon started) are scheduled from then on.
        """
        daemon = self.daemon({})
        daemon.scheduler.add_job(LocalJob("cleanup", Interval(3600), lambda: defer.succeed(None)))
        daemon.scheduler.startService()
        advance(self.clock, 3)
        daemon.scheduler.add_tasks({"beat": EVERY_SECOND})
        advance(self.clock, 3)
        self.assertEqual(set(self.broker.ids()), self.expected(3, 6))
