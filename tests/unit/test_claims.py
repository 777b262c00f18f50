"""
The dispatcher under claims: a task runs only under a lease, its outcome
is committed only with the latest fencing token, and a Hypothesis state
machine interleaves deliveries, crashes, pauses, lease expiries and clock
steps over the memory store, checking that no task is committed twice,
each commit holds the task's latest token, none runs after its outcome
was committed, and every delivered task ends with one committed outcome.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.unit.fakes import (
    FakeDelivery,
    FakePool,
    committed,
    delivery,
    held_named,
    put,
    task_id,
)
from twistedq.backends.base import IClaimStore
from twistedq.backends.memory import MemoryBackend
from twistedq.daemon.dispatcher import Dispatcher, DispatchSettings
from twistedq.message import TaskMessage
from twistedq.outcome import retry_document, revoked_document, success_document

LEASE = 15.0


class ClaimDispatchTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemoryBackend(self.clock)
        self.pool = FakePool(idle=2)
        self.dispatcher = self.make_dispatcher(self.pool)

    def elapse(self, seconds: float) -> None:
        """
        Let time pass a second at a time, as a running reactor would.
        """
        for _ in range(int(seconds)):
            self.clock.advance(1)

    def make_dispatcher(self, pool: FakePool) -> Dispatcher:
        return Dispatcher(
            pool,
            self.store,
            self.clock,
            DispatchSettings(max_batch=4, check_duplicates=True, claim_lease=LEASE),
        )

    def test_store_keeps_interface(self) -> None:
        """
        The store the dispatcher claims with provides the claims interface.
        """
        self.assertTrue(verifyObject(IClaimStore, self.store))

    def test_claimed_run_and_committed(self) -> None:
        """
        Deliveries of one turn are claimed together, run, and committed
        with their tokens before the ack.
        """
        deliveries = [delivery(n) for n in (1, 2)]
        for d in deliveries:
            self.dispatcher.deliver(d)
        self.assertEqual(self.pool.batches, [])
        self.clock.advance(0)
        self.assertEqual(len(self.pool.batches), 2)  # one per idle child
        self.pool.finish(0)
        self.pool.finish(1)
        self.assertEqual([d.settled for d in deliveries], [["ack"], ["ack"]])
        self.assertEqual(committed(self.store), [(task_id(1), 1), (task_id(2), 1)])
        self.assertEqual(self.dispatcher.stats()["claimed"], 0)

    def test_done_is_acked(self) -> None:
        """
        A task with a final outcome (here revoked) is acked without running.
        """
        put(self.store, task_id(1), revoked_document(task_id(1), "add", "revoked"))
        d = delivery(1)
        self.dispatcher.deliver(d)
        self.clock.advance(0)
        self.assertEqual((d.settled, self.pool.batches), (["ack"], []))

    def test_stale_copy_of_a_retried_attempt(self) -> None:
        """
        A copy of attempt 1 delivered again after it scheduled attempt 2
        (the daemon died between storing RETRY and the ack) is acked
        without running, so the retries do not fork; attempt 2 runs.
        """
        put(
            self.store,
            task_id(1),
            retry_document(task_id(1), "add", ValueError("again"), retries=2, countdown=0),
        )
        stale, next_attempt = delivery(1, retries=1), delivery(1, retries=2)
        self.dispatcher.deliver(stale)
        self.clock.advance(0)
        self.assertEqual((stale.settled, self.pool.batches), (["ack"], []))
        self.dispatcher.deliver(next_attempt)
        self.clock.advance(0)
        self.assertEqual(len(self.pool.batches), 1)

    def test_held_elsewhere_waits_for_the_lease(self) -> None:
        """
        A duplicate delivered while another attempt holds the task waits,
        unacknowledged, and is acked without running once the other
        attempt has committed.
        """
        other = self.make_dispatcher(FakePool(idle=1))
        first, duplicate = delivery(1), delivery(1)
        other.deliver(first)
        self.clock.advance(0)
        self.dispatcher.deliver(duplicate)
        self.clock.advance(0)
        self.assertEqual((duplicate.settled, self.pool.batches), ([], []))
        self.assertEqual(self.dispatcher.stats()["held_elsewhere"], 1)
        other.feeder.pool.finish(0)
        self.elapse(LEASE)
        self.assertEqual((duplicate.settled, self.pool.batches), (["ack"], []))

    def test_long_task_keeps_its_lease(self) -> None:
        """
        A task running for ten leases keeps its claim through renewals: a
        duplicate meanwhile does not run it, and the outcome is committed.
        """
        d = delivery(1)
        self.dispatcher.deliver(d)
        self.clock.advance(0)
        other = self.make_dispatcher(FakePool(idle=1))
        for _ in range(10):
            self.elapse(LEASE)
            duplicate = delivery(1)
            other.deliver(duplicate)
            self.clock.advance(0)
        self.assertEqual(other.feeder.pool.batches, [])
        self.pool.finish(0)
        self.assertEqual(d.settled, ["ack"])
        self.assertEqual(committed(self.store), [(task_id(1), 1)])

    def test_paused_attempt_is_fenced_off(self) -> None:
        """
        An attempt paused past its lease (no renewal) is overtaken by
        another; its late outcome is not committed, the newer one is.
        """
        paused = delivery(1)
        self.dispatcher.deliver(paused)
        self.clock.advance(0)
        self.dispatcher.leases.renewal.stop()  # the daemon is paused
        self.clock.advance(LEASE + 1)
        other = self.make_dispatcher(FakePool(idle=1))
        again = delivery(1)
        other.deliver(again)
        self.clock.advance(0)
        other.feeder.pool.finish(0, [success_document(task_id(1), "add", "second")])
        self.pool.finish(0, [success_document(task_id(1), "add", "first")])
        self.assertEqual(committed(self.store), [(task_id(1), 2)])
        self.assertIn(b'"second"', self.store.results[task_id(1)])
        self.assertEqual(self.dispatcher.stats()["fenced_off"], 1)
        self.assertEqual((paused.settled, again.settled), (["ack"], ["ack"]))

    def test_drain_releases_claims(self) -> None:
        """
        Tasks given back on drain lose their claims at once, so another
        daemon can run them without waiting for the lease.
        """
        self.pool.idle = 0
        d = delivery(1)
        self.dispatcher.deliver(d)
        self.clock.advance(0)
        self.successResultOf(self.dispatcher.drain())
        self.assertEqual(d.settled, [("reject", True)])
        self.assertNotIn(task_id(1), self.store.leases)

    def test_drain_keeps_the_running_copys_claim(self) -> None:
        """
        A second copy of a task this daemon runs waits here owning no
        claim; draining gives it back without releasing the running copy's
        claim, whose outcome is still committed.
        """
        running, copy = delivery(1), delivery(1)
        self.dispatcher.deliver(running)
        self.clock.advance(0)
        self.dispatcher.deliver(copy)
        self.clock.advance(0)
        draining = self.dispatcher.drain()
        self.assertEqual(copy.settled, [("reject", True)])
        self.assertIn(task_id(1), self.store.leases)
        self.pool.finish(0)
        self.successResultOf(draining)
        self.assertEqual((running.settled, committed(self.store)), (["ack"], [(task_id(1), 1)]))

    def test_failed_write_gives_the_claim_back(self) -> None:
        """
        When the outcome of a task the daemon decides itself (here an
        expired one) cannot be written, the message goes back to the queue
        and its claim is released, so its next delivery is claimed at once.
        """
        self.pool.idle = 0
        d = delivery(1, expires="1970-01-01T00:00:30+00:00")
        self.dispatcher.deliver(d)
        self.clock.advance(0)
        self.clock.advance(40)
        self.store.pause()
        self.pool.idle = 1
        self.dispatcher.pump()
        [commit] = held_named(self.store, "commit_fenced")
        commit.fail(ConnectionError("store down"))
        self.assertEqual(committed(self.store), [])
        self.store.resume()  # the release
        self.assertEqual(d.settled, [("reject", True)])
        self.assertNotIn(task_id(1), self.store.leases)
        self.assertEqual(self.dispatcher.stats()["claimed"], 0)

    def test_timer_early_after_clock_step(self) -> None:
        """
        An ETA timer that fires early (the wall clock stepped back and the
        guard moved it) finds the task still early: its claim is given back
        and it waits, then runs once when due.
        """
        d = delivery(1, eta="1970-01-01T00:01:00+00:00")
        self.dispatcher.deliver(d)
        self.clock.advance(0)
        (job,) = self.dispatcher.timing.waiting
        job.timer.reset(10)  # as ClockStepGuard moves timers
        self.clock.advance(10)
        self.clock.advance(0)
        self.assertEqual(self.pool.batches, [])
        self.assertNotIn(task_id(1), self.store.leases)
        self.clock.advance(50)
        self.clock.advance(0)
        self.assertEqual(len(self.pool.batches), 1)
        self.pool.finish(0)
        self.assertEqual(d.settled, ["ack"])

    def test_long_task_parked_and_acked(self) -> None:
        """
        A task running past ``park_after`` has its message parked in the
        store and acknowledged while it runs; its outcome is committed
        later and the parked copy goes away.
        """
        self.dispatcher.leases.park_after = 3 * LEASE
        d = delivery(1)
        self.dispatcher.deliver(d)
        self.clock.advance(0)
        for _ in range(3):
            self.elapse(LEASE)
        self.assertEqual(d.settled, ["ack"])
        self.assertIn(task_id(1), self.store.parked)
        self.assertEqual(self.dispatcher.stats()["parked"], 1)
        self.pool.finish(0)
        self.assertEqual(committed(self.store), [(task_id(1), 1)])
        self.assertEqual(self.store.parked, {})

    def test_orphan_published_again(self) -> None:
        """
        When the daemon running a parked task dies, its claim lapses and
        the recovery job (in any daemon) publishes the parked message
        again, once; the new delivery then runs and commits.
        """
        self.dispatcher.leases.park_after = LEASE
        d = delivery(1)
        self.dispatcher.deliver(d)
        self.clock.advance(0)
        self.elapse(LEASE)
        self.elapse(LEASE)
        self.assertIn(task_id(1), self.store.parked)
        self.dispatcher.leases.renewal.stop()  # the daemon dies
        survivor = self.make_dispatcher(FakePool(idle=1))
        published = []

        async def republish(message, queue):
            published.append((message.id, queue))

        survivor.leases.republish = republish
        self.successResultOf(defer.ensureDeferred(survivor.recover_parked()))
        self.assertEqual(published, [])  # the claim is still live
        self.elapse(LEASE)
        self.successResultOf(defer.ensureDeferred(survivor.recover_parked()))
        self.successResultOf(defer.ensureDeferred(survivor.recover_parked()))
        self.assertEqual(published, [(task_id(1), "celery")])
        self.assertEqual(survivor.stats()["recovered"], 1)
        again = delivery(1)
        survivor.deliver(again)
        self.clock.advance(0)
        survivor.feeder.pool.finish(0)
        self.assertEqual(again.settled, ["ack"])
        self.assertEqual(committed(self.store), [(task_id(1), 2)])

    def test_early_task_claimed_when_due(self) -> None:
        """
        A task with a later ETA is claimed when it comes due, not while it
        waits.
        """
        eta = "1970-01-01T00:01:00+00:00"
        d = delivery(1, eta=eta)
        self.dispatcher.deliver(d)
        self.clock.advance(0)
        self.assertEqual(self.store.fences, {})
        self.clock.advance(60)
        self.clock.advance(0)
        self.assertEqual(self.store.fences, {task_id(1): 1})
        self.assertEqual(len(self.pool.batches), 1)


TASKS = 4


class ClaimMachine(RuleBasedStateMachine):
    """
    Three daemons share one store and one clock.  Each task's message is
    delivered, redelivered after a daemon crash, or duplicated; children
    finish batches in any order; daemons crash, pause, come back.
    """

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.store = MemoryBackend(self.clock)
        self.daemons: list[dict[str, Any]] = [self.new_daemon() for _ in range(3)]
        self.unsettled: list[tuple[FakeDelivery, int]] = []  # deliveries not acked
        self.runs: list[tuple[str, float]] = []  # task id, when its body started
        self.committed_at: dict[str, float] = {}

    def new_daemon(self) -> dict[str, Any]:
        pool = FakePool(idle=2)
        dispatcher = Dispatcher(
            pool,
            self.store,
            self.clock,
            DispatchSettings(max_batch=2, check_duplicates=True, claim_lease=LEASE),
        )
        dispatcher.leases.park_after = 2 * LEASE  # long tasks are parked and acked early

        async def republish(message: TaskMessage, queue: str | None) -> None:
            number = int(message.id.rsplit("-", 1)[1])
            self.deliver(0, number)

        dispatcher.leases.republish = republish
        run_batch = pool.run_batch

        def recording_run_batch(bodies: Any, time_limit: Any = None) -> Any:
            for body in bodies:
                self.runs.append((TaskMessage.decode(body).id, self.clock.seconds()))
            return run_batch(bodies, time_limit)

        pool.run_batch = recording_run_batch
        return {"pool": pool, "dispatcher": dispatcher, "finished": set()}

    def note_commits(self) -> None:
        for task, _token in committed(self.store):
            self.committed_at.setdefault(task, self.clock.seconds())

    @rule(daemon=st.integers(0, 2), number=st.integers(1, TASKS))
    def deliver(self, daemon: int, number: int) -> None:
        d = delivery(number)
        self.unsettled.append((d, number))
        self.daemons[daemon]["dispatcher"].deliver(d)
        self.clock.advance(0)
        self.note_commits()

    @rule(daemon=st.integers(0, 2), data=st.data())
    def finish_batch(self, daemon: int, data: st.DataObject) -> None:
        state = self.daemons[daemon]
        running = [i for i in range(len(state["pool"].batches)) if i not in state["finished"]]
        if not running:
            return
        index = data.draw(st.sampled_from(running))
        self.finish(state, index)
        self.clock.advance(0)
        self.note_commits()

    def finish(self, state: dict[str, Any], index: int) -> None:
        state["finished"].add(index)
        state["pool"].finish(index)
        state["dispatcher"].pump()  # as the pool's on_idle does in the daemon

    @rule(daemon=st.integers(0, 2))
    def redeliver_rejected(self, daemon: int) -> None:
        """
        The broker delivers again the messages given back with a requeue.
        """
        rejected = [(d, n) for d, n in self.unsettled if d.settled == [("reject", True)]]
        self.unsettled = [(d, n) for d, n in self.unsettled if (d, n) not in rejected]
        for _d, number in rejected:
            self.deliver(daemon, number)

    @rule(daemon=st.integers(0, 2))
    def crash(self, daemon: int) -> None:
        """
        The daemon dies: the broker redelivers what it had not acked (to
        whichever daemon the next rules pick); a new daemon takes its place.
        """
        old = self.daemons[daemon]["dispatcher"]
        if old.leases.renewal.running:
            old.leases.renewal.stop()
        for job in list(old.gate.held) + list(old.timing.waiting):
            job.stop_timer()
        old.in_flight.stopping = True  # its late callbacks settle nothing
        self.daemons[daemon] = self.new_daemon()
        dead = [(d, n) for d, n in self.unsettled if not d.settled]
        self.unsettled = [(d, n) for d, n in self.unsettled if d.settled]
        for _d, number in dead:
            self.deliver(daemon, number)

    @rule(daemon=st.integers(0, 2))
    def pause(self, daemon: int) -> None:
        """
        The daemon stops renewing for longer than a lease (a long GC pause,
        SIGSTOP), then goes on.
        """
        dispatcher = self.daemons[daemon]["dispatcher"]
        renewal = dispatcher.leases.renewal
        if renewal.running:
            renewal.stop()
        self.clock.advance(LEASE + 1)
        self.note_commits()
        if len(dispatcher.leases) and not dispatcher.in_flight.stopping and not renewal.running:
            # It resumes: its overdue renewal runs at once.
            renewal.start(LEASE / 3, now=True)
            self.note_commits()

    @rule(daemon=st.integers(0, 2))
    def recover_parked(self, daemon: int) -> None:
        """
        The periodic recovery job publishes again the parked messages of
        dead daemons.
        """
        dispatcher = self.daemons[daemon]["dispatcher"]
        defer.ensureDeferred(dispatcher.recover_parked())
        self.note_commits()

    @rule(seconds=st.sampled_from([0.5, 5.0, LEASE, 2 * LEASE]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.note_commits()

    @invariant()
    def one_commit_per_task(self) -> None:
        counts = Counter(task for task, _token in committed(self.store))
        assert all(count == 1 for count in counts.values()), counts

    @invariant()
    def commits_hold_the_latest_token(self) -> None:
        for task, token in committed(self.store):
            assert self.store.fences[task] == token, (task, token, self.store.fences[task])

    @invariant()
    def no_run_after_commit(self) -> None:
        for task, started in self.runs:
            committed = self.committed_at.get(task)
            assert committed is None or started <= committed, (task, started, committed)

    def teardown(self) -> None:
        """
        Liveness: with the faults over, every delivered task ends with its
        outcome committed once.
        """
        delivered = {task_id(n) for _, n in self.unsettled} | set(self.committed_at)
        for _ in range(20):
            self.redeliver_rejected(0)
            self.recover_parked(0)
            for state in self.daemons:
                pool = state["pool"]
                for index in range(len(pool.batches)):
                    if index not in state["finished"]:
                        self.finish(state, index)
            self.clock.advance(LEASE)
            self.note_commits()
        self.one_commit_per_task()
        missing = delivered - {task for task, _ in committed(self.store)}
        assert not missing, missing


class ClaimPropertyTests(SynchronousTestCase):
    def test_claim_machine(self) -> None:
        """
        The invariants hold over 500 interleavings of up to 50 steps
        (derandomized, so that CI runs the same ones; set
        ``TWISTEDQ_CLAIM_EXAMPLES`` to explore more, at random).
        """
        examples = int(os.environ.get("TWISTEDQ_CLAIM_EXAMPLES", "0"))
        ClaimMachine.TestCase.settings = settings(
            max_examples=examples or 500,
            stateful_step_count=50,
            deadline=None,
            derandomize=not examples,
            suppress_health_check=[HealthCheck.too_slow],
        )
        ClaimMachine.TestCase("runTest").runTest()
