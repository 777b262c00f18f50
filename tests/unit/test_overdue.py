"""
Tests for :py:mod:`twistedq.daemon.overdue`: no delivery stays
unacknowledged here long enough to reach the broker's consumer timeout.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.fakes import FakeDelivery, FakePool, delivery, iso, task_id
from twistedq.backends.memory import MemoryBackend
from twistedq.daemon.dispatcher import Dispatcher, DispatchSettings
from twistedq.daemon.events import EventKind

GIVE_BACK_AFTER = 100.0


def dispatcher_on(store, pool, clock, **settings):
    figures = {
        "check_duplicates": True,
        "park_after": 60.0,
        "give_back_after": GIVE_BACK_AFTER,
        "claim_lease": 15.0,
    }
    figures.update(settings)
    return Dispatcher(pool, store, clock, DispatchSettings(**figures))


class OverdueTests(SynchronousTestCase):
    def test_held_while_store_down_given_back(self):
        """
        A delivery held because the store is down (it can be neither
        claimed nor parked) goes back to the queue once it has been here
        ``give_back_after`` seconds, not later; the daemon keeps no job
        for it.
        """
        clock = Clock()
        store = MemoryBackend(clock)
        store.set_unavailable(ConnectionError("down"))
        dispatcher = dispatcher_on(store, FakePool(idle=1), clock)
        first = delivery(1)
        dispatcher.deliver(first)
        clock.advance(0)
        self.flushLoggedErrors(ConnectionError)
        for _ in range(int(GIVE_BACK_AFTER) - 1):
            clock.advance(1)
        self.assertEqual(first.settled, [])
        clock.advance(2)
        self.flushLoggedErrors(ConnectionError)
        self.assertEqual(first.settled, [("reject", True)])
        self.assertEqual(dispatcher.gate.held, set())
        self.assertEqual(dispatcher.stats()["given_back"], 1)
        self.assertEqual(dispatcher.events.counts[EventKind.GIVEN_BACK], 1)

    def test_claimed_and_queued_while_store_down_given_back(self):
        """
        A claimed task that waits for a child while the store is down
        (parking fails) is given back in time, and its claim released
        when the store allows.
        """
        clock = Clock()
        store = MemoryBackend(clock)
        pool = FakePool(idle=0)
        dispatcher = dispatcher_on(store, pool, clock)
        first = delivery(1)
        dispatcher.deliver(first)
        clock.advance(0)
        self.assertEqual(len(dispatcher.feeder.pending), 1)
        store.set_unavailable(ConnectionError("down"))
        clock.pump([1] * int(GIVE_BACK_AFTER + 1))
        self.flushLoggedErrors(ConnectionError)
        self.assertEqual(first.settled, [("reject", True)])
        self.assertEqual(len(dispatcher.feeder.pending), 0)

    def test_running_task_keeps_running_its_delivery_given_back(self):
        """
        A task that runs past ``give_back_after`` while the store is down
        (so its message could not be parked) keeps running; its delivery
        goes back to the queue so the broker does not close the channel,
        and the claim keeps the copy the broker sends again from running
        twice.  Its outcome is stored when it ends; the ack that follows
        is a no-op on a given-back delivery.
        """
        clock = Clock()
        store = MemoryBackend(clock)
        pool = FakePool(idle=1)
        dispatcher = dispatcher_on(store, pool, clock)
        first = delivery(1)
        dispatcher.deliver(first)
        clock.advance(0)
        self.assertEqual(len(pool.batches), 1)
        store.set_unavailable(ConnectionError("down"))
        clock.pump([1] * int(GIVE_BACK_AFTER + 1))
        self.flushLoggedErrors(ConnectionError)
        self.assertEqual(first.settled, [("reject", True)])
        store.set_available()
        pool.finish(0)
        clock.pump([1] * 5)
        self.assertEqual(first.settled, [("reject", True)])
        self.assertEqual(dispatcher.stats()["completed"], 1)

    def test_parked_in_time_not_given_back(self):
        """
        With the store up, a claimed task running long is parked at
        ``park_after`` (and acked): nothing is given back.
        """
        clock = Clock()
        store = MemoryBackend(clock)
        pool = FakePool(idle=1)
        dispatcher = dispatcher_on(store, pool, clock)
        first = delivery(1)
        dispatcher.deliver(first)
        clock.pump([1] * int(GIVE_BACK_AFTER * 2))
        self.assertEqual(first.settled, ["ack"])
        self.assertEqual(dispatcher.stats()["parked"], 1)
        self.assertEqual(dispatcher.stats()["given_back"], 0)

    def test_parked_with_its_own_queue(self):
        """
        A task parked from a queue other than the daemon's first is parked
        with the queue it came from, so that a recovery publishes it back
        there; one from an unnamed queue is parked with the home queue.
        """
        clock = Clock()
        store = MemoryBackend(clock)
        dispatcher = dispatcher_on(store, FakePool(idle=2), clock, home_queue="first")
        second = FakeDelivery(delivery(1).body, queue="second")
        dispatcher.deliver(second)
        dispatcher.deliver(delivery(2))
        clock.pump([1] * 70)
        self.assertEqual(
            {parked.task_id: parked.queue for parked in store.parked.values()},
            {task_id(1): "second", task_id(2): "first"},
        )

    def test_eta_held_in_memory_given_back(self):
        """
        A task whose ETA is held in memory (no delay queue) longer than
        ``give_back_after`` is given back.
        """
        clock = Clock()
        clock.advance(1_000_000)
        store = MemoryBackend(clock)
        dispatcher = dispatcher_on(store, FakePool(idle=1), clock, hold_eta=10_000.0)
        first = delivery(1, eta=iso(clock.seconds() + 5_000))
        dispatcher.deliver(first)
        clock.pump([1] * int(GIVE_BACK_AFTER + 1))
        self.assertEqual(first.settled, [("reject", True)])
        self.assertEqual(dispatcher.timing.waiting, set())

    def test_off(self):
        """
        ``give_back_after=None`` turns it off.
        """
        clock = Clock()
        store = MemoryBackend(clock)
        store.set_unavailable(ConnectionError("down"))
        dispatcher = dispatcher_on(store, FakePool(idle=1), clock, give_back_after=None)
        first = delivery(1)
        dispatcher.deliver(first)
        clock.pump([1] * int(GIVE_BACK_AFTER * 2))
        self.flushLoggedErrors(ConnectionError)
        self.assertEqual(first.settled, [])

    def test_stopped_by_drain(self):
        """
        Draining stops the sweep: no timer of it is left behind.
        """
        clock = Clock()
        store = MemoryBackend(clock)
        dispatcher = dispatcher_on(store, FakePool(idle=1), clock)
        dispatcher.deliver(delivery(1))
        clock.advance(0)
        dispatcher.drain()
        self.assertFalse(dispatcher.overdue.running)

    def test_claim_in_flight_released(self):
        """
        A job whose claim call is still unanswered at the limit (a hung
        store) has its delivery given back; when the claim comes, it runs,
        and the ack after its outcome touches the given-back delivery no
        more.
        """
        clock = Clock()
        store = MemoryBackend(clock)
        store.pause()
        pool = FakePool(idle=1)
        dispatcher = dispatcher_on(store, pool, clock)
        first = delivery(1)
        dispatcher.deliver(first)
        clock.pump([1] * int(GIVE_BACK_AFTER + 1))
        self.assertEqual(first.settled, [("reject", True)])
        store.resume()
        clock.advance(0)
        self.assertEqual(len(pool.batches), 1)
        pool.finish(0)
        clock.advance(0)
        self.assertEqual(first.settled, [("reject", True)])
        self.assertEqual(dispatcher.stats()["completed"], 1)
