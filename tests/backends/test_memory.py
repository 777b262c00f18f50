"""
The memory store: the whole contract on a clock the test drives, and the
controls that let unit tests show a store that is down or slow.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.backends.contract import BackendContract, ClaimStoreContract, ScheduleStoreContract
from twistedq.backends.base import (
    ClaimState,
    IResultBackend,
    OutcomeRecord,
    ParkedTask,
    StoreRefused,
    TaskClaim,
)
from twistedq.backends.memory import Call, MemoryBackend, Write
from twistedq.backends.url import backend_from_url
from twistedq.outcome import failure_document, success_document

TASK = "00000000-0000-4000-8000-000000000001"
OTHER = "00000000-0000-4000-8000-000000000002"


class MemoryContractTests(BackendContract, ScheduleStoreContract, ClaimStoreContract, TestCase):
    def make_backend(self, ttl: int) -> IResultBackend:
        # One store per test, as the other stores' tests share one server.
        if not hasattr(self, "store"):
            self.clock = Clock()
            self.store = MemoryBackend(self.clock, ttl=ttl)
        return self.store

    async def pass_time(self, seconds: float) -> None:
        self.clock.advance(seconds)


RECORD = OutcomeRecord(TASK, success_document(TASK, "t", 1))


class ControlTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemoryBackend(self.clock, ttl=60)

    def test_unavailable(self) -> None:
        """
        While unavailable, every call fails with the error given, and
        nothing is written; once available again, calls work.
        """
        error = ConnectionRefusedError("store down")
        self.store.set_unavailable(error)
        for d in (
            self.store.connect(),
            self.store.store_results([RECORD]),
            self.store.get_result(TASK),
            self.store.claim_tasks([TASK], 15),
        ):
            self.assertIs(self.failureResultOf(d, ConnectionRefusedError).value, error)
        self.assertEqual(self.store.results, {})
        self.store.set_available()
        self.successResultOf(self.store.store_results([RECORD]))
        self.assertEqual(self.store.results, {TASK: RECORD.document})

    def test_pause_holds_calls_in_order(self) -> None:
        """
        While paused, calls are held: a write is in flight (not stored,
        not answered) until resume, which runs the held calls in the order
        they were made and answers each.
        """
        self.store.pause()
        written = self.store.store_results([RECORD])
        read = self.store.get_result(TASK)
        self.assertNoResult(written)
        self.assertNoResult(read)
        self.assertEqual(self.store.results, {})
        self.assertEqual(self.store.waiting, 2)
        self.store.resume()
        self.assertIsNone(self.successResultOf(written))
        self.assertEqual(self.successResultOf(read), RECORD.document)
        self.assertEqual(self.store.waiting, 0)
        self.successResultOf(self.store.get_result(TASK))  # answered at once again

    def test_unavailable_when_resumed(self) -> None:
        """
        A held call runs when resumed, so it fails if the store is
        unavailable by then.
        """
        self.store.pause()
        written = self.store.store_results([RECORD])
        self.store.set_unavailable(ConnectionRefusedError("gone"))
        self.store.resume()
        self.failureResultOf(written, ConnectionRefusedError)
        self.assertEqual(self.store.results, {})

    def test_claim_is_one_step(self) -> None:
        """
        Claiming a task with no outcome, or a pending record, is one call
        to the store.
        """
        self.store.pause()
        claimed = self.store.claim_tasks([TASK], 15)
        self.assertEqual(self.store.waiting, 1)
        self.store.resume()
        self.assertEqual(self.successResultOf(claimed), [TaskClaim(ClaimState.CLAIMED, 1)])

    def test_claim_sees_a_racing_commit(self) -> None:
        """
        A claim that must look twice (the outcome names a status that does
        not stop it: a dead-lettered failure) and takes the lease once
        another attempt committed finds the task done and gives the lease
        back.
        """
        dead = failure_document(TASK, "t", ValueError("x"), traceback="", dead_letter="x")
        self.successResultOf(self.store.store_results([OutcomeRecord(TASK, dead, None, True)]))
        (first,) = self.successResultOf(self.store.claim_tasks([TASK], 15))
        self.assertEqual(first, TaskClaim(ClaimState.CLAIMED, 1))
        self.store.pause()
        late = self.store.claim_tasks([TASK], 15)  # finds the lease held, looks again
        committed = self.store.commit_outcomes([RECORD], [first.token])
        self.store.resume()  # the late claim's first look, the commit, its second look
        self.assertEqual(self.successResultOf(committed), [True])
        self.assertEqual(self.successResultOf(late), [TaskClaim(ClaimState.DONE)])
        self.assertEqual(self.successResultOf(self.store.take_leases([TASK], 15))[0][0], 3)

    def test_results_expire_by_the_clock(self) -> None:
        """
        Outcomes lapse after the TTL by the store's clock, and
        delete_expired counts those it removes.
        """
        self.successResultOf(self.store.store_results([RECORD]))
        self.clock.advance(59)
        self.assertEqual(list(self.store.results), [TASK])
        self.clock.advance(1)
        self.assertEqual(self.store.results, {})
        self.assertEqual(self.successResultOf(self.store.delete_expired()), 1)

    def test_from_url(self) -> None:
        """
        ``memory://`` names a new memory store timed by the reactor given.
        """
        store = backend_from_url("memory://", self.clock, ttl=5)
        self.assertIsInstance(store, MemoryBackend)
        self.assertIs(store.clock, self.clock)
        self.assertEqual((store.url, store.ttl), ("memory://", 5))

    def test_default_clock(self) -> None:
        """
        Without a clock the store uses the global reactor's.
        """
        self.assertIs(MemoryBackend().clock, reactor)


class RecordTests(SynchronousTestCase):
    """
    What the memory store records for tests (the calls made to it and the
    outcomes it wrote), what it shows of claims, and held calls answered
    one at a time.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemoryBackend(self.clock, ttl=60)

    def test_calls_in_order(self) -> None:
        """
        Every call is recorded with its arguments, in the order made,
        whether answered at once, failed or held; a claim is recorded as
        the store's steps.
        """
        self.successResultOf(self.store.store_results([RECORD]))
        self.store.set_unavailable(ConnectionRefusedError("down"))
        self.failureResultOf(self.store.get_result(TASK), ConnectionRefusedError)
        self.store.set_available()
        self.store.pause()
        self.store.get_taskset("ts")
        self.assertEqual(
            self.store.calls,
            [
                Call("store_results", ([RECORD],)),
                Call("get_result", (TASK,)),
                Call("get_taskset", ("ts",)),
            ],
        )
        self.store.resume()
        del self.store.calls[:]
        self.successResultOf(self.store.claim_tasks([OTHER], 15))
        names = {call.name for call in self.store.calls}
        self.assertIn("take_leases", names)
        self.assertNotIn("claim_tasks", names)

    def test_held_answered_alone(self) -> None:
        """
        A held call can be answered, or failed, before those made earlier;
        the others stay held, and a call made meanwhile is held too.
        """
        self.store.pause()
        read = self.store.get_result(TASK)
        written = self.store.store_results([RECORD])
        probe = self.store.get_result("probe")
        first, second, third = self.store.held
        self.assertEqual(
            [held.call for held in self.store.held],
            [Call("get_result", (TASK,)), Call("store_results", ([RECORD],)), third.call],
        )
        second.answer()
        self.assertIsNone(self.successResultOf(written))
        self.assertEqual(self.store.results, {TASK: RECORD.document})
        self.assertNoResult(read)
        third.fail(ConnectionRefusedError("lost"))
        self.failureResultOf(probe, ConnectionRefusedError)
        self.assertEqual(self.store.held, [first])
        later = self.store.get_result(TASK)
        self.assertEqual(self.store.waiting, 2)
        self.store.resume()
        self.assertEqual(self.successResultOf(read), RECORD.document)
        self.assertEqual(self.successResultOf(later), RECORD.document)

    def test_writes(self) -> None:
        """
        Every outcome written is recorded: stored plainly without a token,
        committed with the token it held; a commit fenced off writes
        nothing.
        """
        self.successResultOf(self.store.store_results([RECORD]))
        (first,) = self.successResultOf(self.store.claim_tasks([OTHER], 15))
        other = OutcomeRecord(OTHER, success_document(OTHER, "t", 2))
        self.assertEqual(
            self.successResultOf(self.store.commit_outcomes([other, other], [first.token, 99])),
            [True, False],
        )
        self.assertEqual(self.store.writes, [Write(RECORD), Write(other, first.token)])

    def test_claims_shown(self) -> None:
        """
        The fences, live leases and parked messages can be read directly;
        a lease lapses by the clock, its fence stays.
        """
        (claim,) = self.successResultOf(self.store.claim_tasks([TASK], 15))
        parked = ParkedTask(TASK, claim.token, "celery", b"body")
        self.assertEqual(self.successResultOf(self.store.park_tasks([parked])), [True])
        self.assertEqual(self.store.fences, {TASK: claim.token})
        self.assertEqual(self.store.leases, {TASK: claim.token})
        self.assertEqual(self.store.parked, {TASK: parked})
        self.clock.advance(15)
        self.assertEqual((self.store.leases, self.store.fences), ({}, {TASK: claim.token}))


class RefusalTests(SynchronousTestCase):
    """
    The memory store refuses one chosen outcome for good, as a real store
    refuses a value over its limit: the write fails with StoreRefused
    naming the task, again whenever it is written, while the store stays
    available and stores another document in its place.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemoryBackend(self.clock, ttl=60)

    def test_refused_for_good(self) -> None:
        """
        The first document written for a refused task is refused, the
        batch holding it writes nothing, and it is refused again when
        written again; nothing marks the store unavailable.
        """
        self.store.refuse(TASK, "too large for the test")
        other = OutcomeRecord(OTHER, success_document(OTHER, "t", 2))
        for _ in range(2):
            error = self.failureResultOf(
                self.store.store_results([other, RECORD]), StoreRefused
            ).value
            self.assertEqual((str(error), error.task_id), ("too large for the test", TASK))
        self.assertEqual((self.store.results, self.store.writes), ({}, []))
        self.assertIsNone(self.successResultOf(self.store.get_result(TASK)))

    def test_another_document_is_stored(self) -> None:
        """
        Another document for the refused task (the short FAILURE the daemon
        stores in its place) is stored, committed with the claim's token.
        """
        (claim,) = self.successResultOf(self.store.claim_tasks([TASK], 15))
        self.store.refuse(TASK)
        refused = self.store.commit_outcomes([RECORD], [claim.token])
        self.assertEqual(self.failureResultOf(refused, StoreRefused).value.task_id, TASK)
        self.assertEqual(self.store.leases, {TASK: claim.token})
        failure = OutcomeRecord(TASK, failure_document(TASK, "t", ValueError("x"), ""), None, True)
        committed = self.store.commit_outcomes([failure], [claim.token])
        self.assertEqual(self.successResultOf(committed), [True])
        self.assertEqual(self.store.results, {TASK: failure.document})
        self.failureResultOf(self.store.store_results([RECORD]), StoreRefused)

    def test_the_refusal_is_chosen_by_document(self) -> None:
        """
        ``refuse`` given a document refuses that one only, whenever written.
        """
        failure = OutcomeRecord(TASK, failure_document(TASK, "t", ValueError("x"), ""), None, True)
        self.store.refuse(TASK, document=RECORD.document)
        self.successResultOf(self.store.store_results([failure]))
        self.failureResultOf(self.store.store_results([RECORD]), StoreRefused)
        self.assertEqual(self.store.results, {TASK: failure.document})
