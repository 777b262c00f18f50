"""
The catch-up policy applies to every gap in a schedule, whatever caused
it: the broker or the result store unreachable for a while, or the daemon
held up (stopped, swapped out) so that its tick came late.  A slot that
fails for a moment is tried again; slots that could not run before the
next one came due follow the task's ``catch_up``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.fakes import START, FakeBroker
from twistedq.backends.memory import MemoryBackend
from twistedq.scheduler import Scheduler, slot_task_id

EVERY_TWO = {"every": 2.0, "catch_up": "once", "queue": None}
SKIP_EVERY_TWO = {**EVERY_TWO, "catch_up": "skip"}


class SlowBroker(FakeBroker):
    """
    As the publisher without a connection: while ``down``, a publish waits
    for the broker 7.5 s (its slot claimed all that time), then fails; one
    still waiting when the broker is back (:py:meth:`back`) goes out.
    """

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.down = False
        self.waiting: list[tuple[Any, Any, defer.Deferred[None]]] = []

    def publish(self, message: Any, queue: Any) -> defer.Deferred[None]:
        if not self.down:
            return super().publish(message, queue)

        def cancel(d: defer.Deferred[None]) -> None:
            self.waiting.remove(waiting)

        d: defer.Deferred[None] = defer.Deferred(cancel)
        waiting = (message, queue, d)
        self.waiting.append(waiting)

        def give_up() -> None:
            if waiting in self.waiting:
                self.waiting.remove(waiting)
                d.errback(ConnectionError("no connection to the broker"))

        self.clock.callLater(7.5, give_up)
        return d

    def back(self) -> None:
        self.down = False
        waiting, self.waiting = self.waiting, []
        for message, queue, d in waiting:
            super().publish(message, queue).chainDeferred(d)


def advance(clock: Clock, seconds: float, step: float = 0.25) -> None:
    for _ in range(round(seconds / step)):
        clock.advance(step)


class GapTests(SynchronousTestCase):
    def setUp(self) -> None:
        # Slots of the two-second task fall on even seconds after START.
        self.clock = Clock()
        self.store = MemoryBackend(self.clock)
        self.broker = FakeBroker()

    def start(self, spec: dict[str, Any] = EVERY_TWO, **kwargs: Any) -> Scheduler:
        scheduler = Scheduler(
            self.store,
            self.broker.publish,
            self.clock,
            wall=lambda: START + self.clock.seconds(),
            monotonic=self.clock.seconds,
            **kwargs,
        )
        scheduler.add_tasks({"beat": spec})
        scheduler.startService()
        self.addCleanup(scheduler.stopService)
        return scheduler

    def slots(self, first: int, last: int) -> set[str]:
        """
        The ids of the slots of "beat" from ``first`` to ``last`` seconds
        after START.
        """
        return {slot_task_id("beat", START + s) for s in range(first, last + 1, 2)}

    def published_between(self, before: int, after: int) -> list[str]:
        """
        The published ids, once each, between two counts of messages.
        """
        return [m.id for m in self.broker.messages[before:after]]

    def test_broker_outage_once(self) -> None:
        """
        A broker outage of 105 s under a two-second task: when the broker
        is back, ``catch_up="once"`` runs one slot of the gap (its latest),
        not the 53 it missed, and the schedule goes on.
        """
        self.start()
        advance(self.clock, 10)
        self.assertEqual(set(self.broker.ids()), self.slots(0, 10))
        self.broker.fail = True
        advance(self.clock, 104.5)  # slots 12 to 114 cannot be published
        self.broker.fail = False
        before = len(self.broker.messages)
        advance(self.clock, 1)
        caught_up = self.published_between(before, len(self.broker.messages))
        self.assertEqual(caught_up, [slot_task_id("beat", START + 114)])
        advance(self.clock, 20.5)
        ids = self.broker.ids()
        self.assertEqual(set(ids.values()), {1})
        self.assertEqual(set(ids), self.slots(0, 10) | self.slots(114, 136))

    def test_outage_ending_at_a_slot_once(self) -> None:
        """
        When the gap ends as the next slot comes due, that slot is the
        gap's one run: one publish in the second the broker is back, and
        every failed slot of the gap stays unpublished.
        """
        self.start()
        advance(self.clock, 10)
        self.broker.fail = True
        advance(self.clock, 105)  # the tick at 115 s fails too
        self.broker.fail = False
        before = len(self.broker.messages)
        advance(self.clock, 1)
        caught_up = self.published_between(before, len(self.broker.messages))
        self.assertEqual(caught_up, [slot_task_id("beat", START + 116)])
        advance(self.clock, 20)
        self.assertEqual(set(self.broker.ids()), self.slots(0, 10) | self.slots(116, 136))

    def test_two_daemons_outage_once(self) -> None:
        """
        Two daemons whose publishes wait for the broker (so each finds some
        slots held by the other) still run the gap once between them.
        """
        slow = SlowBroker(self.clock)
        schedulers = []
        for _ in range(2):
            scheduler = Scheduler(
                self.store,
                slow.publish,
                self.clock,
                wall=lambda: START + self.clock.seconds(),
                monotonic=self.clock.seconds,
                lease=15.0,
            )
            scheduler.add_tasks({"beat": EVERY_TWO})
            scheduler.startService()
            schedulers.append(scheduler)
        advance(self.clock, 10)
        slow.down = True
        advance(self.clock, 104.5)
        before = len(slow.messages)
        slow.back()
        advance(self.clock, 16)  # past every lease taken in the outage
        gap = {slot_task_id("beat", START + s) for s in range(12, 116, 2)}
        published = [m.id for m in slow.messages[before:]]
        self.assertEqual(len(set(published) & gap), 1, published)
        self.assertEqual(len(published), len(set(published)))
        for scheduler in schedulers:
            scheduler.stopService()

    def test_broker_outage_skip(self) -> None:
        """
        With ``catch_up="skip"`` nothing of the gap runs: the task waits
        for its next slot.
        """
        self.start(SKIP_EVERY_TWO)
        advance(self.clock, 10)
        self.broker.fail = True
        advance(self.clock, 105)
        self.broker.fail = False
        advance(self.clock, 21)
        self.assertEqual(set(self.broker.ids()), self.slots(0, 10) | self.slots(116, 136))

    def test_store_outage_once(self) -> None:
        """
        The same after an outage of the result store (nothing can be
        claimed): one slot of the gap runs when it is back.
        """
        self.start()
        advance(self.clock, 10)
        self.store.set_unavailable(ConnectionRefusedError("store down"))
        advance(self.clock, 104.5)
        self.store.set_available()
        before = len(self.broker.messages)
        advance(self.clock, 1)
        self.assertEqual(
            self.published_between(before, len(self.broker.messages)),
            [slot_task_id("beat", START + 114)],
        )
        advance(self.clock, 20.5)
        ids = self.broker.ids()
        self.assertEqual(set(ids.values()), {1})
        self.assertEqual(set(ids), self.slots(0, 10) | self.slots(114, 136))

    def test_store_outage_skip(self) -> None:
        """
        With ``catch_up="skip"``, a store outage drops the gap's slots too.
        """
        self.start(SKIP_EVERY_TWO)
        advance(self.clock, 10)
        self.store.set_unavailable(ConnectionRefusedError("store down"))
        advance(self.clock, 105)
        self.store.set_available()
        advance(self.clock, 21)
        self.assertEqual(set(self.broker.ids()), self.slots(0, 10) | self.slots(116, 136))

    def short_failure(self, spec: dict[str, Any]) -> None:
        self.start(spec)
        advance(self.clock, 4)
        self.broker.fail = True
        advance(self.clock, 2)  # slot 6 fails at 6 s
        self.broker.fail = False
        advance(self.clock, 4)
        self.assertEqual(set(self.broker.ids()), self.slots(0, 10))

    def test_short_failure_once(self) -> None:
        """
        A publish that fails for less than the task's period is tried
        again a second later: the slot runs late, it is not dropped.
        """
        self.short_failure(EVERY_TWO)

    def test_short_failure_skip(self) -> None:
        """
        Under ``catch_up="skip"`` too: a slot not yet followed by the next
        one is not missed.
        """
        self.short_failure(SKIP_EVERY_TWO)

    def test_held_up_daemon_once(self) -> None:
        """
        A daemon held up for 105 s (its tick late: the process stopped or
        swapped out, both clocks moving on) runs one slot of the gap with
        ``catch_up="once"``, not all of them.
        """
        self.start()
        advance(self.clock, 10)
        before = len(self.broker.messages)
        self.clock.advance(105)  # one late tick, at 115 s
        caught_up = self.published_between(before, len(self.broker.messages))
        self.assertEqual(caught_up, [slot_task_id("beat", START + 114)])
        advance(self.clock, 9)
        self.assertEqual(set(self.broker.ids()), self.slots(0, 10) | self.slots(114, 124))

    def test_held_up_daemon_skip(self) -> None:
        """
        With ``catch_up="skip"`` a late tick runs none of the slots it
        missed.
        """
        self.start(SKIP_EVERY_TWO)
        advance(self.clock, 10)
        self.clock.advance(105)
        advance(self.clock, 9)
        self.assertEqual(set(self.broker.ids()), self.slots(0, 10) | self.slots(116, 124))

    def test_slightly_late_tick_keeps_every_slot(self) -> None:
        """
        A tick a little late (a busy reactor, under the grace) still runs
        every slot it passed.
        """
        self.start(SKIP_EVERY_TWO)
        advance(self.clock, 10)
        self.clock.advance(1.5)
        advance(self.clock, 2.5)
        self.assertEqual(set(self.broker.ids()), self.slots(0, 14))
