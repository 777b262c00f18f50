"""
The memory store: the whole contract on a clock the test drives, and the
controls that let unit tests show a store that is down or slow.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.backends.contract import BackendContract, ClaimStoreContract, ScheduleStoreContract
from twistedq.backends.base import ClaimState, IResultBackend, OutcomeRecord, TaskClaim
from twistedq.backends.memory import MemoryBackend
from twistedq.backends.url import backend_from_url
from twistedq.outcome import success_document

TASK = "00000000-0000-4000-8000-000000000001"


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

    def test_claim_sees_a_racing_commit(self) -> None:
        """
        A claim that read no outcome, then takes the lease once another
        attempt committed, finds the task done and gives the lease back.
        """
        (first,) = self.successResultOf(self.store.claim_tasks([TASK], 15))
        self.store.pause()
        late = self.store.claim_tasks([TASK], 15)  # reads the outcome: none yet
        committed = self.store.commit_outcomes([RECORD], [first.token])
        self.store.resume()  # read, commit, then the late claim's lease
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
