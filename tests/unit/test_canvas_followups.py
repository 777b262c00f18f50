"""
Tests for :py:mod:`twistedq.daemon.followups` inside the dispatcher: what
a workflow publishes after a task's outcome is stored, before its ack.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.fakes import FakeDelivery, FakePool, answered, put, task_id
from twistedq.amqp.broker import ChannelRefused, QueueMismatch
from twistedq.backends.memory import MemoryBackend
from twistedq.canvas import Signature, chord_member_id
from twistedq.daemon.dispatcher import Dispatcher, DispatchSettings
from twistedq.message import MessageError, TaskMessage, new_task_id
from twistedq.outcome import (
    Outcome,
    failure_document,
    pending_document,
    revoked_document,
    success_document,
)

CHORD = "5f0c8a34-9a4b-4d8e-8b59-3f5ad0c1e7a2"
CALLBACK = "6f0c8a34-9a4b-4d8e-8b59-3f5ad0c1e7a2"
NEXT = "7f0c8a34-9a4b-4d8e-8b59-3f5ad0c1e7a2"


class FollowUpTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemoryBackend(self.clock)
        self.pool = FakePool(idle=1)
        self.published: list[tuple[TaskMessage, str | None]] = []
        self.pending: list[defer.Deferred[None]] | None = None
        self.failures = 0
        self.dispatcher = Dispatcher(
            self.pool,
            self.store,
            self.clock,
            DispatchSettings(max_batch=1, check_duplicates=True),
            republish=self.republish,
        )

    def republish(self, message: TaskMessage, queue: str | None) -> defer.Deferred[None]:
        if self.failures:
            self.failures -= 1
            return defer.fail(ConnectionError("broker down"))
        if message.task == "huge":
            return defer.fail(MessageError("over the limit", "too-large", message.id))
        if message.task == "forbidden":
            return defer.fail(ChannelRefused(str(queue), 403, "ACCESS_REFUSED - not for you"))
        if message.task == "mismatched":
            return defer.fail(QueueMismatch(str(queue), {}, "PRECONDITION_FAILED - x"))
        self.published.append((message, queue))
        if self.pending is not None:
            d: defer.Deferred[None] = defer.Deferred()
            self.pending.append(d)
            return d
        return defer.succeed(None)

    def run_task(self, message: TaskMessage, outcome: bytes | None = None) -> FakeDelivery:
        """
        Deliver ``message`` and finish it with ``outcome`` (a success with
        its args by default).
        """
        delivery = FakeDelivery(message.encode())
        self.dispatcher.deliver(delivery)
        self.clock.advance(0)
        index = len(self.pool.batches) - 1
        self.pool.finish(index, None if outcome is None else [outcome])
        self.clock.advance(0)
        return delivery

    def test_chain_and_links(self) -> None:
        """
        On success the next step of the chain (carrying the rest) and each
        link are published with the result first; immutable ones without.
        The delivery is acked only once the broker confirmed them.
        """
        self.pending = []
        step = dict(Signature("mul", (4,), options={"task_id": NEXT}))
        rest = dict(Signature("mul", (10,)))
        message = TaskMessage(
            id=task_id(1),
            task="add",
            args=(2, 2),
            chain=(step, rest),
            links=(dict(Signature("log", ("done",), immutable=True)),),
        )
        delivery = self.run_task(message, success_document(task_id(1), "add", 4))
        (link, _), (following, queue) = self.published
        self.assertEqual((link.task, link.args), ("log", ("done",)))
        self.assertEqual((following.id, following.args, following.chain), (NEXT, (4, 4), (rest,)))
        self.assertIsNone(queue)
        self.assertEqual(delivery.settled, [])
        for d in self.pending:
            d.callback(None)
        self.assertEqual(delivery.settled, ["ack"])

    def test_errlinks_on_failure_only(self) -> None:
        """
        On failure the errlinks get the task id, the links nothing; on
        success the reverse.
        """
        links = (dict(Signature("ok")),)
        errlinks = (dict(Signature("oops", ("x",))),)
        failed = TaskMessage(id=task_id(1), task="add", links=links, errlinks=errlinks)
        self.run_task(failed, failure_document(task_id(1), "add", ValueError("no")))
        self.assertEqual(
            [(m.task, m.args) for m, _ in self.published], [("oops", (task_id(1), "x"))]
        )
        del self.published[:]
        worked = TaskMessage(id=task_id(2), task="add", links=links, errlinks=errlinks)
        self.run_task(worked, success_document(task_id(2), "add", 7))
        self.assertEqual([(m.task, m.args) for m, _ in self.published], [("ok", (7,))])

    def test_follow_up_ids_fixed(self) -> None:
        """
        A follow-up without a task id gets one derived from its parent's:
        the same on a second publish.
        """
        links = (dict(Signature("ok", options={"queue": "other", "countdown": 30})),)
        self.run_task(TaskMessage(id=task_id(1), task="add", links=links))
        first, queue = self.published[0]
        self.assertEqual(queue, "other")
        self.assertIsNotNone(first.eta)
        followups = self.dispatcher.settlement.followups
        assert followups is not None
        document = answered(self.store.get_result(task_id(1)))
        answered(followups.after(TaskMessage(id=task_id(1), task="add", links=links), document))
        self.assertEqual(self.published[1][0].id, first.id)

    def test_publish_retried(self) -> None:
        """
        A follow-up whose publish fails is published again after a pause;
        the delivery waits unacknowledged meanwhile.
        """
        self.failures = 1
        delivery = self.run_task(
            TaskMessage(id=task_id(1), task="add", links=(dict(Signature("ok")),))
        )
        self.assertEqual((self.published, delivery.settled), ([], []))
        self.clock.advance(1)
        self.assertEqual(len(self.flushLoggedErrors(ConnectionError)), 1)
        self.assertEqual(len(self.published), 1)
        self.assertEqual(delivery.settled, ["ack"])

    def test_stop_during_a_long_pause(self) -> None:
        """
        A daemon that stops while a follow-up waits out a long pause
        between attempts (the broker down for minutes) gives the delivery
        back within a second, not at the end of the pause (up to a
        minute: warm stops took twice --shutdown-grace).
        """
        self.failures = 100
        delivery = self.run_task(
            TaskMessage(id=task_id(1), task="add", links=(dict(Signature("ok")),))
        )
        for _ in range(8):  # pauses of 0.5, 1, 2, ... 32 s: now in one of a minute
            self.clock.advance(60)
        self.assertEqual(delivery.settled, [])
        self.dispatcher.in_flight.stopping = True
        self.clock.advance(1)
        self.assertEqual(delivery.settled, [("reject", True)])
        self.flushLoggedErrors(ConnectionError)

    def test_refused_follow_up(self) -> None:
        """
        A follow-up the publisher refuses for good (over the size limit)
        gets a FAILURE stored under its id; the parent is acked.
        """
        link = Signature("huge", options={"task_id": NEXT})
        delivery = self.run_task(TaskMessage(id=task_id(1), task="add", links=(dict(link),)))
        self.assertEqual(delivery.settled, ["ack"])
        outcome = Outcome.from_bytes(NEXT, answered(self.store.get_result(NEXT)))
        self.assertEqual((outcome.status, outcome.exc["type"]), ("FAILURE", "MessageError"))

    def test_follow_up_the_broker_refuses(self) -> None:
        """
        A follow-up whose queue the broker refuses to declare (it closed
        the channel: ChannelRefused, QueueMismatch) gets a FAILURE stored
        under its id at once, not a retry for ever; the parent is acked.
        """
        for task, error in (("forbidden", "ChannelRefused"), ("mismatched", "QueueMismatch")):
            link = Signature(task, options={"task_id": NEXT, "queue": "elsewhere"})
            parent = TaskMessage(id=new_task_id(), task="add", links=(dict(link),))
            delivery = self.run_task(parent)
            self.assertEqual(delivery.settled, ["ack"])
            outcome = Outcome.from_bytes(NEXT, answered(self.store.get_result(NEXT)))
            self.assertEqual((outcome.status, outcome.exc["type"]), ("FAILURE", error))
            self.assertIn("elsewhere", outcome.exc["message"])
            answered(self.store.forget([NEXT]))

    def test_redelivered_done(self) -> None:
        """
        A delivery of a task already done (a crash between the commit and
        the ack) publishes its follow-ups again before it is acked.
        """
        links = (dict(Signature("ok")),)
        message = TaskMessage(id=task_id(1), task="add", links=links)
        put(self.store, task_id(1), success_document(task_id(1), "add", 3))
        delivery = FakeDelivery(message.encode(), redelivered=True)
        self.dispatcher.deliver(delivery)
        self.clock.advance(0)
        self.assertEqual(self.pool.batches, [])
        self.assertEqual([(m.task, m.args) for m, _ in self.published], [("ok", (3,))])
        self.assertEqual(delivery.settled, ["ack"])

    def members(self, size: int, callback: dict[str, Any]) -> list[TaskMessage]:
        answered(self.store.create_taskset(CHORD, size))
        return [
            TaskMessage(
                id=chord_member_id(CHORD, i), task="add", args=(i,), taskset=CHORD, chord=callback
            )
            for i in range(size)
        ]

    def test_chord(self) -> None:
        """
        The callback is published once the count is complete, with the
        members' results in member order, whatever order they finish in.
        """
        callback = dict(Signature("tsum", options={"task_id": CALLBACK}))
        members = self.members(3, callback)
        for i in (2, 0):
            self.run_task(members[i], success_document(members[i].id, "add", i * 10))
        self.assertEqual(self.published, [])
        self.run_task(members[1], success_document(members[1].id, "add", 10))
        ((message, _),) = self.published
        self.assertEqual(
            (message.id, message.task, message.args), (CALLBACK, "tsum", ([0, 10, 20],))
        )

    def test_chord_one_publisher(self) -> None:
        """
        Members that all see the count complete publish the callback once:
        only the member elected does, and it does again when it asks again
        (its delivery came back after a crash before its ack).
        """
        callback = dict(Signature("tsum", options={"task_id": CALLBACK}))
        members = self.members(3, callback)
        for i, member in enumerate(members):
            put(self.store, member.id, success_document(member.id, "add", i), CHORD)
        followups = self.dispatcher.settlement.followups
        assert followups is not None
        for member in (members[1], members[0], members[2], members[1]):
            document = answered(self.store.get_result(member.id))
            answered(followups.after(member, document))
        self.assertEqual([m.id for m, _ in self.published], [CALLBACK, CALLBACK])
        record = Outcome.from_bytes(CALLBACK, answered(self.store.get_result(CALLBACK)))
        self.assertEqual(record.status, "PENDING")
        put(self.store, CALLBACK, success_document(CALLBACK, "tsum", 3))
        answered(followups.after(members[1], answered(self.store.get_result(members[1].id))))
        self.assertEqual(len(self.published), 2)

    def test_chord_member_failed(self) -> None:
        """
        A member that failed: the callback does not run, a ChordError is
        stored for it and its errlinks are published.
        """
        callback = Signature("tsum", options={"task_id": CALLBACK})
        callback.link_error(Signature("oops"))
        members = self.members(2, dict(callback))
        self.run_task(members[0], failure_document(members[0].id, "add", ValueError("no")))
        self.run_task(members[1])
        self.assertEqual([(m.task, m.args) for m, _ in self.published], [("oops", (CALLBACK,))])
        outcome = Outcome.from_bytes(CALLBACK, answered(self.store.get_result(CALLBACK)))
        self.assertEqual((outcome.status, outcome.exc["type"]), ("FAILURE", "ChordError"))
        self.assertIn(members[0].id, json.dumps(outcome.exc))
        self.assertIn("raised ValueError: no", outcome.exc["message"])

    def deliver_revoked(self, member: TaskMessage) -> FakeDelivery:
        """
        Deliver ``member`` after a client revoked it while it was queued:
        its REVOKED outcome is stored, not counted in its taskset (the
        client does not know the taskset).
        """
        put(self.store, member.id, revoked_document(member.id, member.task, "revoked"))
        delivery = FakeDelivery(member.encode())
        self.dispatcher.deliver(delivery)
        self.clock.advance(0)
        return delivery

    def test_chord_member_revoked(self) -> None:
        """
        A chord member revoked while queued completes the chord's count as
        failed when a daemon receives it: the callback does not run, a
        ChordError naming the member is stored for it, its errlinks are
        published, and the member's delivery is acked without running.
        """
        callback = Signature("tsum", options={"task_id": CALLBACK})
        callback.link_error(Signature("oops"))
        members = self.members(3, dict(callback))
        for i in (0, 2):
            self.run_task(members[i], success_document(members[i].id, "add", i))
        batches = len(self.pool.batches)
        delivery = self.deliver_revoked(members[1])
        self.assertEqual(delivery.settled, ["ack"])
        self.assertEqual(len(self.pool.batches), batches)
        state = answered(self.store.get_taskset(CHORD))
        self.assertEqual((state.completed, state.failed), (3, 1))
        self.assertEqual([(m.task, m.args) for m, _ in self.published], [("oops", (CALLBACK,))])
        outcome = Outcome.from_bytes(CALLBACK, answered(self.store.get_result(CALLBACK)))
        self.assertEqual((outcome.status, outcome.exc["type"]), ("FAILURE", "ChordError"))
        self.assertIn(f"{members[1].id} is REVOKED", outcome.exc["message"])

    def test_taskset_member_revoked(self) -> None:
        """
        A plain taskset's member revoked while queued is counted (failed)
        when a daemon receives it, once however often it is delivered, so
        the taskset becomes ready.
        """
        answered(self.store.create_taskset(CHORD, 2))
        first, second = (
            TaskMessage(id=task_id(i), task="add", args=(i,), taskset=CHORD) for i in (1, 2)
        )
        self.run_task(first)
        for _ in range(2):
            delivery = self.deliver_revoked(second)
            self.assertEqual(delivery.settled, ["ack"])
        state = answered(self.store.get_taskset(CHORD))
        self.assertEqual((state.total, state.completed, state.failed), (2, 2, 1))
        self.assertEqual(self.published, [])

    def test_forged_member(self) -> None:
        """
        A message that names itself a member of the chord without being
        one (unsigned deployments) is counted, but does not end the chord
        early: while a real member is still waiting (its pending record),
        neither the callback nor a ChordError is published or stored; the
        callback runs once every real member succeeded.
        """
        callback = dict(Signature("tsum", options={"task_id": CALLBACK}))
        members = self.members(3, callback)
        for member in members:
            put(self.store, member.id, pending_document(member.id, "add"))
        forged = TaskMessage(id=new_task_id(), task="add", taskset=CHORD, chord=callback)
        self.run_task(forged, success_document(forged.id, "add", 99))
        for i in (0, 1):
            self.run_task(members[i], success_document(members[i].id, "add", i * 10))
        self.assertEqual(answered(self.store.get_taskset(CHORD)).completed, 3)
        self.assertEqual(self.published, [])
        self.assertIsNone(answered(self.store.get_result(CALLBACK)))
        self.run_task(members[2], success_document(members[2].id, "add", 20))
        ((message, _),) = self.published
        self.assertEqual((message.id, message.args), (CALLBACK, ([0, 10, 20],)))

    def test_plain_message_untouched(self) -> None:
        """
        A message without workflow fields is acked with nothing published.
        """
        delivery = self.run_task(TaskMessage(id=task_id(1), task="add", args=(1,)))
        self.assertEqual((self.published, delivery.settled), ([], ["ack"]))
