"""
Follow-ups: what a workflow (:py:mod:`twistedq.canvas`) publishes after a
task's outcome is stored and before its message is acknowledged.

- On SUCCESS: the next step of its chain and its links, the result first
  in their arguments (unless immutable).
- On FAILURE: its errlinks, its task id first in their arguments (unless
  immutable).
- For a taskset or chord member revoked by a client while it was queued
  (the client could not count it): it is counted, as failed, in its
  taskset when a daemon receives it.
- For a chord member whatever its outcome: when the chord's count (the
  taskset of the chord's id, each member counted once however often it is
  stored) is complete, the callback with the list of the members'
  results; or, if a member failed or was revoked, a FAILURE
  (:py:class:`~twistedq.canvas.ChordError`) stored for the callback and
  its errlinks published.

Every follow-up has a task id fixed before it is first published (chosen
by the client, or derived from the parent's id), so publishing it again
(the parent's delivery redelivered after a crash between the publish and
the ack, two members completing a chord together) runs nothing twice: the
claim on that id lets one copy run, and acks the others.  A message
without workflow fields never comes here.
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from twistedq.amqp.broker import ChannelRefused, QueueMismatch
from twistedq.amqp.protocol import Unroutable
from twistedq.backends.base import IResultBackend, OutcomeRecord
from twistedq.backends.chords import elect_publisher
from twistedq.canvas import ChordError, chord_member_id
from twistedq.daemon.backoff import FIRST_PAUSE, LONGEST_PAUSE
from twistedq.daemon.inflight import InFlight
from twistedq.daemon.job import Job
from twistedq.message import MessageError, TaskMessage
from twistedq.outcome import Outcome, dead_letter_reason, failure_document, top_status
from twistedq.states import FAILURE, READY_STATES, REVOKED, SUCCESS

__all__ = ["FollowUps", "follow_up_message"]

log = Logger()

#: Publishes a task message to a queue (None: the daemon's own) and fires
#: once the broker confirmed.
Publish = Callable[[TaskMessage, str | None], Awaitable[None]]

#: Publish errors that the same publish would meet again: the follow-up
#: gets a FAILURE stored instead (a message over the size limit, a queue
#: that does not exist, one the broker refuses to declare or that exists
#: with other arguments).
_REFUSALS = (MessageError, Unroutable, ChannelRefused, QueueMismatch)

#: While a follow-up waits to be published again, how often it looks
#: whether the daemon stops, in seconds.
STOP_CHECK = 1.0

#: How many member results are read at once for a chord's callback.
READ_CHUNK = 1000


def _derived_id(parent_id: str, kind: str, index: int = 0) -> str:
    return str(uuid.uuid5(uuid.UUID(parent_id), f"{kind}-{index}"))


def follow_up_message(
    signature: dict[str, Any],
    default_id: str,
    head: Sequence[Any],
    now: float,
    chain: Sequence[dict[str, Any]] = (),
) -> tuple[TaskMessage, str | None]:
    """
    The message that runs a signature document as a follow-up, and the
    queue it goes to (None: the daemon's own).

    :param default_id: its task id when the signature sets none.
    :param head: the arguments put before its own, unless it is
        immutable.
    :param now: the time its ``countdown`` counts from.
    :param chain: the steps of its chain still to run after it.
    """
    options = signature.get("options", {})
    eta = None
    countdown = options.get("countdown")
    if countdown:
        moment = datetime.datetime.fromtimestamp(now + countdown, datetime.timezone.utc)
        eta = moment.isoformat()
    first = () if signature.get("immutable") else tuple(head)
    message = TaskMessage(
        id=options.get("task_id") or default_id,
        task=signature["task"],
        args=(*first, *signature.get("args", ())),
        kwargs=dict(signature.get("kwargs", {})),
        eta=eta,
        links=tuple(options.get("links", ())),
        errlinks=tuple(options.get("errlinks", ())),
        chain=tuple(chain),
    )
    return message, options.get("queue")


def _what_became(task_id: str, document: bytes | None) -> str:
    """
    What became of a task that did not succeed, for a ChordError.
    """
    if document is None:
        return "has no outcome (expired or forgotten)"
    outcome = Outcome.from_bytes(task_id, document)
    if outcome.status == FAILURE and outcome.exc:
        return f"raised {outcome.exc.get('type')}: {outcome.exc.get('message')}"
    if outcome.reason:
        return f"is {outcome.status}: {outcome.reason}"
    return f"is {outcome.status}"


class FollowUps:
    """
    Publishes the follow-ups of tasks whose outcomes are stored.

    :ivar published: follow-up messages the broker confirmed.
    :ivar refused: follow-ups that could not be published for good (a
        message over the size limit, an unroutable one, one to a queue the
        broker refuses): a FAILURE saying so is stored under their ids.
    """

    def __init__(
        self, backend: IResultBackend, publish: Publish, clock: IReactorTime, in_flight: InFlight
    ) -> None:
        self.backend = backend
        self.publish = publish
        self.clock = clock
        self.in_flight = in_flight
        self.published = 0
        self.refused = 0

    def settle(self, job: Job, document: bytes) -> defer.Deferred[None]:
        """
        Publish the follow-ups of a job whose outcome ``document`` is
        stored, then ack its delivery.  If the daemon stops before they
        are published, the delivery goes back to the queue: its next
        delivery finds the task done and publishes them then.
        """

        def not_published(failure: Failure) -> None:
            log.failure(
                "Could not publish what follows task {task}[{id}]; it goes back to the queue",
                failure,
                task=job.message.task,
                id=job.task_id,
            )
            job.give_back()

        d = self.after(job.message, document)
        return d.addCallbacks(lambda _: job.ack(), not_published)

    def after(self, message: TaskMessage, document: bytes | None) -> defer.Deferred[None]:
        """
        Publish what follows ``message`` given its stored outcome
        (nothing for one not final, or dead-lettered: it may run again).
        """
        if document is None:
            return defer.succeed(None)
        status = top_status(document)
        if status not in READY_STATES or dead_letter_reason(document) is not None:
            return defer.succeed(None)
        now = self.clock.seconds()
        outgoing: list[tuple[TaskMessage, str | None]] = []
        if status == SUCCESS and (message.links or message.chain):
            result = json.loads(document).get("result")
            for index, link in enumerate(message.links):
                outgoing.append(
                    follow_up_message(link, _derived_id(message.id, "link", index), (result,), now)
                )
            if message.chain:
                step, rest = message.chain[0], message.chain[1:]
                default = _derived_id(message.id, "chain")
                outgoing.append(follow_up_message(step, default, (result,), now, rest))
        elif status == FAILURE:
            outgoing = self._errbacks(message.id, message.errlinks, now)
        d = self._send(outgoing)
        if status == REVOKED and message.taskset is not None:
            # Revoked by a client while queued: counted now, once however
            # often (the client did not know its taskset).
            record = OutcomeRecord(message.id, document, message.taskset, True)
            d.addCallback(lambda _: self._persist(lambda: self.backend.store_results([record])))
        if message.chord is not None and message.taskset is not None:
            chord_id, callback, member_id = message.taskset, message.chord, message.id
            d.addCallback(
                lambda _: self._persist(lambda: self._chord(chord_id, callback, member_id))
            )
        return d

    def _errbacks(
        self, task_id: str, errlinks: Sequence[dict[str, Any]], now: float
    ) -> list[tuple[TaskMessage, str | None]]:
        return [
            follow_up_message(errlink, _derived_id(task_id, "errlink", index), (task_id,), now)
            for index, errlink in enumerate(errlinks)
        ]

    def _persist(self, attempt: Callable[[], Awaitable[None]]) -> defer.Deferred[None]:
        """
        Do ``attempt`` until it succeeds, after a pause that doubles up to
        a minute, or until the daemon stops (then fail, within
        :py:data:`STOP_CHECK` seconds of the stop even in a long pause).
        """

        async def until_done() -> None:
            pause = FIRST_PAUSE
            while True:
                try:
                    await attempt()
                    return
                except Exception:
                    failure = Failure()
                    if self.in_flight.stopping or failure.check(*_REFUSALS):
                        raise
                log.failure("A follow-up failed; trying again in {pause} s", failure, pause=pause)
                await self._pause(pause)
                if self.in_flight.stopping:
                    failure.raiseException()
                pause = min(pause * 2, LONGEST_PAUSE)

        return defer.ensureDeferred(until_done())

    async def _pause(self, seconds: float) -> None:
        """
        Wait ``seconds``, or less if the daemon stops meanwhile.
        """
        end = self.clock.seconds() + seconds
        while not self.in_flight.stopping:
            left = end - self.clock.seconds()
            if left <= 0:
                return
            await deferLater(self.clock, min(left, STOP_CHECK), lambda: None)

    def _send(self, outgoing: list[tuple[TaskMessage, str | None]]) -> defer.Deferred[None]:
        """
        Publish each message (all at once, each until confirmed); one over
        the size limit gets a FAILURE stored in its place.
        """
        if not outgoing:
            return defer.succeed(None)
        sent = []
        for message, queue in outgoing:
            d = self._persist(lambda m=message, q=queue: self.publish(m, q))  # type: ignore[misc]
            d.addCallbacks(self._confirmed, self._refused, errbackArgs=(message,))
            sent.append(d)
        return defer.gatherResults(sent, consumeErrors=True).addCallbacks(
            lambda _: None, lambda f: f.value.subFailure
        )

    def _confirmed(self, _: object) -> None:
        self.published += 1

    def _refused(self, failure: Failure, message: TaskMessage) -> defer.Deferred[None] | Failure:
        if not failure.check(*_REFUSALS):
            return failure
        self.refused += 1
        log.error(
            "Follow-up {task}[{id}] cannot be published: {why}; a FAILURE is stored for it",
            task=message.task,
            id=message.id,
            why=str(failure.value),
        )
        error = failure.value
        assert isinstance(error, Exception)
        document = failure_document(message.id, message.task, error, traceback="")
        return self.backend.store_results([OutcomeRecord(message.id, document)])

    async def _chord(self, chord_id: str, callback: dict[str, Any], member_id: str) -> None:
        """
        If the chord's count is complete, every member has an outcome, and
        this member is elected to
        (:py:func:`~twistedq.backends.chords.elect_publisher`), publish its
        callback with the members' results, or store its FAILURE if a
        member did not succeed.
        """
        state = await self.backend.get_taskset(chord_id)
        if state is None or state.completed < state.total:
            return
        ids = [chord_member_id(chord_id, index) for index in range(state.total)]
        documents: list[bytes | None] = []
        for start in range(0, len(ids), READ_CHUNK):
            documents.extend(await self.backend.get_results(ids[start : start + READ_CHUNK]))
        waiting = [
            i
            for i, d in zip(ids, documents, strict=True)
            if d and top_status(d) not in READY_STATES
        ]
        if waiting:
            # Counted complete with members still to finish: the count holds
            # a task that is no member (a forged message, without signing).
            log.warn(
                "Chord {chord} counts {completed} of {total} done, but member {member} has not "
                "finished: a task that is not one of its members was counted; its callback "
                "waits for the members",
                chord=chord_id,
                completed=state.completed,
                total=state.total,
                member=waiting[0],
            )
            return
        callback_id = callback.get("options", {}).get("task_id") or _derived_id(chord_id, "chord")
        if not await elect_publisher(self.backend, callback_id, callback["task"], member_id):
            return
        for member_id, document in zip(ids, documents, strict=True):
            if document is None or top_status(document) != SUCCESS:
                await self._chord_failed(callback, callback_id, member_id, document)
                return
        results = [json.loads(document)["result"] for document in documents if document]
        now = self.clock.seconds()
        await self._send([follow_up_message(callback, callback_id, (results,), now)])

    async def _chord_failed(
        self, callback: dict[str, Any], callback_id: str, member_id: str, document: bytes | None
    ) -> None:
        error = ChordError(f"chord member {member_id} {_what_became(member_id, document)}")
        failure = failure_document(callback_id, callback["task"], error, traceback="")
        await self.backend.store_results([OutcomeRecord(callback_id, failure, None, True)])
        errlinks = callback.get("options", {}).get("errlinks", ())
        await self._send(self._errbacks(callback_id, errlinks, self.clock.seconds()))
