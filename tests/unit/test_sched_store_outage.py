"""
A store outage is a gap like any other, also when the store holds the
scheduler's calls instead of refusing them: Redis while it is down keeps
the commands sent to it and runs them when it is back, and its store
gives up waiting for an answer after ten seconds, leaving the command to
run later.  When the store answers again, the claims that were in flight
(some of slots that are long past) are answered at once: the task's
``catch_up`` still gives one run for the whole gap under ``"once"`` and
none under ``"skip"``, across daemons, and the slot due when the store is
back still runs, on time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.fakes import START, FakeBroker
from twistedq.backends.memory import Call, MemoryBackend
from twistedq.scheduler import Scheduler, slot_task_id

T = TypeVar("T")

EVERY_FIVE = {"every": 5.0, "catch_up": "once", "queue": None}
SKIP_EVERY_FIVE = {**EVERY_FIVE, "catch_up": "skip"}
EVERY_THIRTY = {**EVERY_FIVE, "every": 30.0}


class TimedStore(MemoryBackend):
    """
    The memory store with the call timeout of the Redis store: a call not
    answered within ``timeout`` seconds fails with a TimeoutError, and the
    call itself stays held, to run (claiming its slot) when the store is
    resumed.  Its late answer is dropped.
    """

    def __init__(self, clock: Clock, timeout: float = 10.0) -> None:
        super().__init__(clock)
        self.timeout = timeout

    def _call(self, call: Call, step: Callable[[], T]) -> defer.Deferred[T]:
        inner = super()._call(call, step)
        if inner.called:
            return inner
        out: defer.Deferred[T] = defer.Deferred()

        def timed_out() -> None:
            out.errback(defer.TimeoutError(f"the store did not answer in {self.timeout} s"))

        timer = self.clock.callLater(self.timeout, timed_out)

        def settle(result: Any) -> None:
            if not timer.active():
                return  # timed out already: the late answer is dropped
            timer.cancel()
            if isinstance(result, Failure):
                out.errback(result)
            else:
                out.callback(result)

        inner.addBoth(settle)
        return out


def advance(clock: Clock, seconds: float, step: float = 0.25) -> None:
    for _ in range(round(seconds / step)):
        clock.advance(step)


class StoreOutageTests(SynchronousTestCase):
    def setUp(self) -> None:
        # Slots of the five-second task fall on multiples of five seconds
        # after START.
        self.clock = Clock()
        self.broker = FakeBroker()

    def start(
        self, store: MemoryBackend, spec: dict[str, Any] = EVERY_FIVE, **kwargs: Any
    ) -> Scheduler:
        scheduler = Scheduler(
            store,
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

    def slots(self, first: int, last: int, every: int = 5) -> set[str]:
        """
        The ids of the slots of "beat" from ``first`` to ``last`` seconds
        after START.
        """
        return {slot_task_id("beat", START + s) for s in range(first, last + 1, every)}

    def published_since(self, before: int) -> list[str]:
        return [m.id for m in self.broker.messages[before:]]

    def outage(self, store: MemoryBackend, down_from: float, back_at: float) -> int:
        """
        Hold every store call from ``down_from`` to ``back_at`` seconds
        after START (as Redis does while it is down), then run them in
        order; answers how many messages were published before it ended.
        """
        advance(self.clock, down_from - self.clock.seconds())
        store.pause()
        advance(self.clock, back_at - self.clock.seconds())
        before = len(self.broker.messages)
        store.resume()
        return before

    def assert_once_each(self, expected: set[str]) -> None:
        ids = self.broker.ids()
        self.assertEqual(set(ids.values()), {1}, ids)
        self.assertEqual(set(ids), expected)

    def test_held_calls_once(self) -> None:
        """
        A 22-second outage of a store that holds calls, as the tester saw
        with Redis and a five-second task: the claims of the slots of 35 s
        to 55 s are answered together when it is back; one slot of the gap
        runs (the latest, 55 s), then 60 s on time.
        """
        store = TimedStore(self.clock)
        self.start(store)
        before = self.outage(store, 33, 57)
        advance(self.clock, 1)
        self.assertEqual(self.published_since(before), [slot_task_id("beat", START + 55)])
        advance(self.clock, 23)
        self.assert_once_each(self.slots(0, 30) | self.slots(55, 80))

    def test_held_calls_without_timeout_once(self) -> None:
        """
        The same when every claim of the gap is still waiting for its
        answer (a store without a call timeout): one run, the latest slot.
        """
        store = MemoryBackend(self.clock)
        self.start(store)
        before = self.outage(store, 33, 57)
        advance(self.clock, 1)
        self.assertEqual(self.published_since(before), [slot_task_id("beat", START + 55)])
        advance(self.clock, 23)
        self.assert_once_each(self.slots(0, 30) | self.slots(55, 80))

    def test_held_calls_skip(self) -> None:
        """
        With ``catch_up="skip"`` none of the slots that came due while the
        store held their claims runs; the next slot runs on time.
        """
        store = TimedStore(self.clock)
        self.start(store, SKIP_EVERY_FIVE)
        before = self.outage(store, 33, 57)
        advance(self.clock, 1)
        self.assertEqual(self.published_since(before), [])
        advance(self.clock, 23)
        self.assert_once_each(self.slots(0, 30) | self.slots(60, 80))

    def test_held_calls_several_daemons_once(self) -> None:
        """
        Three daemons on the same store: the gap still runs once between
        them, also after the leases of the claims taken by calls whose
        answers were dropped have lapsed.
        """
        store = TimedStore(self.clock)
        for _ in range(3):
            self.start(store)
        before = self.outage(store, 33, 57)
        advance(self.clock, 1)
        self.assertEqual(self.published_since(before), [slot_task_id("beat", START + 55)])
        advance(self.clock, 43)  # past every lease taken when the store came back
        self.assert_once_each(self.slots(0, 30) | self.slots(55, 100))

    def test_held_calls_several_daemons_skip(self) -> None:
        """
        Under ``"skip"`` no daemon runs a slot of the gap.
        """
        store = TimedStore(self.clock)
        for _ in range(3):
            self.start(store, SKIP_EVERY_FIVE)
        before = self.outage(store, 33, 57)
        advance(self.clock, 44)
        self.assertNotIn(slot_task_id("beat", START + 55), self.published_since(before))
        self.assert_once_each(self.slots(0, 30) | self.slots(60, 100))

    def test_lost_reply_slot_runs_when_back(self) -> None:
        """
        A thirty-second task whose claim of the slot of 30 s timed out (the
        store took the claim when it was back, and the daemon never learnt
        it): when the store is back the slot runs at once, not after that
        claim's lease lapses, and once.
        """
        store = TimedStore(self.clock)
        self.start(store, EVERY_THIRTY)
        before = self.outage(store, 25, 50)
        advance(self.clock, 1.5)
        self.assertEqual(self.published_since(before), [slot_task_id("beat", START + 30)])
        advance(self.clock, 50)
        self.assert_once_each(self.slots(0, 0, 30) | self.slots(30, 90, 30))

    def test_lost_reply_slot_runs_once_across_daemons(self) -> None:
        """
        The same with two daemons: the slot runs once, when the store is
        back.
        """
        store = TimedStore(self.clock)
        for _ in range(2):
            self.start(store, EVERY_THIRTY)
        before = self.outage(store, 25, 50)
        advance(self.clock, 2.5)
        self.assertEqual(self.published_since(before), [slot_task_id("beat", START + 30)])
        advance(self.clock, 50)
        self.assert_once_each(self.slots(0, 0, 30) | self.slots(30, 90, 30))

    def test_held_calls_short_lease_several_daemons_once(self) -> None:
        """
        With a slot lease shorter than the time since the slot (``--slot-lease
        5``): a daemon that found a slot of the gap held, when the store was
        back, by a claim answered too late elsewhere, does not take the
        claim let go for the lapse of a daemon that died; the gap runs once.
        """
        store = TimedStore(self.clock)
        for _ in range(3):
            self.start(store, lease=5.0)
        before = self.outage(store, 33, 57)
        advance(self.clock, 1)
        self.assertEqual(self.published_since(before), [slot_task_id("beat", START + 55)])
        advance(self.clock, 43)
        self.assert_once_each(self.slots(0, 30) | self.slots(55, 100))

    def test_lost_reply_answered_out_of_order(self) -> None:
        """
        A claim whose answer was lost runs after the release sent before the
        slot is claimed again (a store with several connections answers out
        of order): the daemon finds the slot held by its own lost claim,
        lets it go on its next look and runs the slot then, without waiting
        for that claim's lease to lapse.
        """
        store = TimedStore(self.clock, timeout=5.0)
        self.start(store, EVERY_THIRTY)
        advance(self.clock, 25)
        store.pause()
        advance(self.clock, 12)  # the claim of 30 s timed out at 35 s; its release waits
        lost_claim, release = (c for c in store.held if c.call.name.endswith("_slot"))
        self.assertEqual((lost_claim.call.name, release.call.name), ("claim_slot", "release_slot"))
        before = len(self.broker.messages)
        release.answer()  # nothing to release yet; the claim asked next is held
        lost_claim.answer()  # the store takes the lost claim now
        store.resume()  # the claim asked again finds the slot held
        self.assertEqual(self.published_since(before), [])
        advance(self.clock, 1.5)
        self.assertEqual(self.published_since(before), [slot_task_id("beat", START + 30)])
        advance(self.clock, 55)  # to 93.5 s, past the lease of the lost claim
        self.assert_once_each(self.slots(0, 90, 30))
