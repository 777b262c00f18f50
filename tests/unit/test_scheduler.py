"""
The scheduler on a :py:class:`Clock`, with an in-memory schedule store that
keeps the store contract (one claim wins, leases lapse): several daemons,
crashes between claim and commit, failed publishes, catch-up, clock steps
and pauses.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from twistedq.backends.base import IScheduleStore, PeriodicState, SlotClaim
from twistedq.scheduler import LocalJob, Scheduler, slot_task_id
from twistedq.schedules import Interval, crontab

START = 1_800_000_000.0  # a whole minute, UTC


@implementer(IScheduleStore)
class MemoryScheduleStore:
    """
    The schedule store's contract in memory; leases lapse on ``clock``.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.slots: dict[str, tuple[str, float | None]] = {}  # key: (owner or "done", expiry)
        self.states: dict[str, PeriodicState] = {}
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise ConnectionRefusedError("store down")

    def claim_slot(self, key: str, owner: str, lease: float) -> defer.Deferred[SlotClaim]:
        return defer.maybeDeferred(self._claim, key, owner, lease)

    def _claim(self, key: str, owner: str, lease: float) -> SlotClaim:
        self._check()
        held = self.slots.get(key)
        if held is not None and held[1] is not None and held[1] <= self.clock.seconds():
            held = None
        if held is None:
            self.slots[key] = (owner, self.clock.seconds() + lease)
            return SlotClaim.WON
        return SlotClaim.DONE if held[0] == "done" else SlotClaim.HELD

    def release_slot(self, key: str, owner: str) -> defer.Deferred[None]:
        if self.slots.get(key, ("",))[0] == owner:
            del self.slots[key]
        return defer.succeed(None)

    def commit_slot(self, key, name, slot, next_run_at, keep) -> defer.Deferred[None]:
        self._check()
        self.slots[key] = ("done", None)
        state = self.states.get(name, PeriodicState(name))
        last = slot if state.last_run_at is None else max(state.last_run_at, slot)
        self.states[name] = state._replace(
            last_run_at=last, total_run_count=state.total_run_count + 1, next_run_at=next_run_at
        )
        return defer.succeed(None)

    def note_schedule(self, name, next_run_at) -> defer.Deferred[None]:
        self._check()
        state = self.states.get(name, PeriodicState(name))
        self.states[name] = state._replace(next_run_at=next_run_at)
        return defer.succeed(None)

    def get_periodic_states(self, names) -> defer.Deferred[dict[str, PeriodicState]]:
        return defer.maybeDeferred(
            lambda: (self._check(), {n: self.states[n] for n in names if n in self.states})[1]
        )

    def set_periodic_enabled(self, name, enabled) -> defer.Deferred[None]:
        state = self.states.get(name, PeriodicState(name))
        self.states[name] = state._replace(enabled=enabled)
        return defer.succeed(None)


class Broker:
    """
    Records published messages; can fail or hang publishes.
    """

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.queues: list[str | None] = []
        self.fail = False
        self.hang = False

    def publish(self, message: Any, queue: str | None) -> defer.Deferred[None]:
        if self.fail:
            return defer.fail(ConnectionError("broker down"))
        if self.hang:
            return defer.Deferred()
        self.messages.append(message)
        self.queues.append(queue)
        return defer.succeed(None)

    def ids(self) -> Counter[str]:
        return Counter(message.id for message in self.messages)


EVERY_SECOND = {"every": 1.0, "catch_up": "once", "queue": None}


class Daemon:
    """
    One scheduler with its own wall clock offset, on a shared Clock.
    """

    def __init__(self, clock: Clock, store: MemoryScheduleStore, broker: Broker, **kwargs):
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
        self.store = MemoryScheduleStore(self.clock)
        self.broker = Broker()

    def daemon(self, specs=None, **kwargs) -> Daemon:
        daemon = Daemon(self.clock, self.store, self.broker, **kwargs)
        daemon.scheduler.add_tasks(specs if specs is not None else {"beat": EVERY_SECOND})
        return daemon

    def expected(self, first: float, last: float, name: str = "beat") -> set[str]:
        return {slot_task_id(name, START + s) for s in range(int(first), int(last) + 1)}

    def test_store_fake_keeps_interface(self) -> None:
        """
        The in-memory store provides the interface the real ones do.
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
        state = self.store.states["beat"]
        self.assertEqual(state.total_run_count, 61)
        self.assertEqual(state.last_run_at, START + 60)
        self.assertEqual(state.next_run_at, START + 61)
        self.assertEqual([m.task for m in self.broker.messages[:1]], ["beat"])

    def test_crash_between_claim_and_publish(self) -> None:
        """
        A daemon that claimed a slot and died before publishing it holds
        it only for its lease; another daemon then publishes it, once.
        """
        hanging = Broker()
        hanging.hang = True
        crashing = Daemon(self.clock, self.store, hanging, lease=5.0)
        crashing.scheduler.add_tasks({"beat": EVERY_SECOND})
        survivor = self.daemon(lease=5.0)
        crashing.scheduler.startService()
        survivor.scheduler.startService()
        advance(self.clock, 1)  # slots 0 and 1 claimed, their publishes never return
        crashing.scheduler._loop.stop()  # and it dies
        advance(self.clock, 10)
        ids = self.broker.ids()
        self.assertEqual(set(ids.values()), {1})
        self.assertEqual(set(ids), self.expected(0, 11))

    def test_failed_publish_retried(self) -> None:
        """
        A publish that fails releases the claim; the slot is published a
        second later, once.
        """
        daemon = self.daemon()
        self.broker.fail = True
        daemon.scheduler.startService()
        advance(self.clock, 1)
        self.assertEqual(self.broker.messages, [])
        self.broker.fail = False
        advance(self.clock, 3)
        self.assertEqual(set(self.broker.ids()), self.expected(0, 4))
        self.assertEqual(daemon.scheduler.failures, 3)  # slot 0 at 0 s and 1 s, slot 1

    def test_store_down_then_back(self) -> None:
        """
        While the store is down nothing is published (nothing can be
        claimed); slots that came due during a short outage are published
        once it is back.
        """
        daemon = self.daemon()
        daemon.scheduler.startService()
        advance(self.clock, 2)
        self.store.down = True
        advance(self.clock, 3)
        published = len(self.broker.messages)
        self.assertEqual(published, 3)
        self.store.down = False
        advance(self.clock, 3)
        ids = self.broker.ids()
        self.assertEqual(set(ids.values()), {1})
        self.assertEqual(set(ids), self.expected(0, 8))

    def test_catch_up_once(self) -> None:
        """
        After a downtime of every daemon, a task with ``catch_up="once"``
        runs its latest missed slot once, then keeps its schedule.
        """
        self.store.states["beat"] = PeriodicState("beat", True, START - 100, 7, START - 99)
        self.daemon().scheduler.startService()
        advance(self.clock, 2)
        ids = self.broker.ids()
        self.assertEqual(set(ids), {slot_task_id("beat", START - 1)} | self.expected(0, 2))

    def test_catch_up_skip(self) -> None:
        """
        With ``catch_up="skip"`` the missed slots are not run.
        """
        self.store.states["beat"] = PeriodicState("beat", True, START - 100, 7, START - 99)
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
        self.assertEqual(self.store.states["daily"].next_run_at, START - START % 86400 + 86400)

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
        self.assertTrue(self.store.states["beat"].enabled)

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
        self.assertEqual(self.store.states["cleanup"].total_run_count, 5)

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
