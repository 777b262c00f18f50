"""
A job whose outcome is fenced off (a newer claim owns its task: this
daemon was paused past its lease) reports ``task.fenced-off`` only: not
succeeded, failed or retried, since nothing of its outcome was stored;
its delivery is acked and a retry it asked for is not published.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.fakes import FakePool, committed, delivery, task_id
from twistedq.backends.memory import MemoryBackend
from twistedq.daemon.dispatcher import Dispatcher, DispatchSettings
from twistedq.daemon.events import Event, EventKind, Events
from twistedq.message import TaskMessage
from twistedq.outcome import failure_document, retry_document, success_document

LEASE = 15.0


class FencedOffTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemoryBackend(self.clock)
        self.events = Events()
        self.reported: list[Event] = []
        self.events.subscribe(self.reported.append)
        self.published: list[TaskMessage] = []
        self.pool = FakePool(idle=1)
        self.paused = self.make_dispatcher(self.pool, self.events)

    async def publish_later(self, message: TaskMessage, seconds: float) -> None:
        self.published.append(message)

    def make_dispatcher(self, pool: FakePool, events: Events) -> Dispatcher:
        return Dispatcher(
            pool,
            self.store,
            self.clock,
            DispatchSettings(max_batch=4, check_duplicates=True, claim_lease=LEASE),
            events=events,
            publish_later=self.publish_later,
        )

    def overtaken(self, outcome: bytes) -> Any:
        """
        Task 1 runs on the paused daemon past its lease; another daemon
        claims, runs and commits it; then the paused one's ``outcome``
        comes back.  Returns the paused daemon's delivery.
        """
        paused = delivery(1)
        self.paused.deliver(paused)
        self.clock.advance(0)
        self.paused.leases.renewal.stop()  # the daemon is paused
        self.clock.advance(LEASE + 1)
        other = self.make_dispatcher(FakePool(idle=1), Events())
        other.deliver(delivery(1))
        self.clock.advance(0)
        other.feeder.pool.finish(0, [success_document(task_id(1), "add", "second")])
        self.pool.finish(0, [outcome])
        self.clock.advance(0)
        self.assertEqual(committed(self.store), [(task_id(1), 2)])
        return paused

    def outcome_kinds(self) -> list[EventKind]:
        settled = (
            EventKind.SUCCEEDED,
            EventKind.FAILED,
            EventKind.RETRIED,
            EventKind.DEAD_LETTERED,
            EventKind.FENCED_OFF,
        )
        return [event.kind for event in self.reported if event.kind in settled]

    def test_success_fenced_off(self) -> None:
        paused = self.overtaken(success_document(task_id(1), "add", "first"))
        self.assertEqual(self.outcome_kinds(), [EventKind.FENCED_OFF])
        self.assertEqual(paused.settled, ["ack"])

    def test_failure_fenced_off(self) -> None:
        paused = self.overtaken(failure_document(task_id(1), "add", ValueError("x"), traceback=""))
        self.assertEqual(self.outcome_kinds(), [EventKind.FENCED_OFF])
        self.assertEqual(paused.settled, ["ack"])

    def test_retry_fenced_off(self) -> None:
        """
        A fenced-off retry does not publish its next attempt: the newer
        claim owns the task.
        """
        retry = retry_document(task_id(1), "add", ValueError("again"), retries=0, countdown=0)
        paused = self.overtaken(retry)
        self.assertEqual(self.outcome_kinds(), [EventKind.FENCED_OFF])
        self.assertEqual(self.published, [])
        self.assertEqual(paused.settled, ["ack"])
