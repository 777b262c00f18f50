"""
Intake: verify, decode, refuse.  A message that is not a valid task
message (or, with signing keys, not signed by one of them) goes to the
dead-letter queue with one log line and its reason in its headers; when
its task id can be read, a FAILURE is stored for it first.

The reasons, in the ``x-twistedq-reason`` header: ``not-json``,
``malformed``, ``too-large`` (:py:mod:`twistedq.message`), ``unsigned`` and
``bad-signature`` (:py:mod:`twistedq.signing`).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import defer
from twisted.logger import Logger

from twistedq.amqp.broker import HOP_HEADER
from twistedq.backends.base import IResultBackend, OutcomeRecord
from twistedq.daemon.events import EventKind, Events
from twistedq.daemon.inflight import InFlight
from twistedq.daemon.job import BrokerDelivery, Job, JobState
from twistedq.message import MALFORMED, MessageError, TaskMessage
from twistedq.outcome import failure_document
from twistedq.signing import SignatureError, SigningKeys

__all__ = ["Intake"]

log = Logger()


class Intake:
    """
    Turns deliveries into jobs, or refuses them.

    :ivar max_body_size: the largest message body taken, in bytes.
    :ivar signing: the keys a message must be signed with, or None to take
        unsigned messages.
    """

    def __init__(
        self,
        backend: IResultBackend,
        events: Events,
        in_flight: InFlight,
        admit: Callable[[Job], None],
        max_body_size: int,
        signing: SigningKeys | None = None,
    ) -> None:
        self.backend = backend
        self.events = events
        self.in_flight = in_flight
        self.admit = admit
        self.max_body_size = max_body_size
        self.signing = signing

    def take(self, delivery: BrokerDelivery) -> None:
        """
        Take one delivery from the consumer: pass it on as a job, or
        dead-letter it.
        """
        if self.signing is not None:
            try:
                self.signing.verify(delivery.body, delivery.headers)
            except SignatureError as e:
                # Its id is not to be trusted: no FAILURE is stored for it.
                self.refuse(delivery, e.reason, str(e))
                return
        try:
            message = TaskMessage.decode(delivery.body, self.max_body_size)
            job = Job(delivery, message)
        except MessageError as e:
            self.refuse(delivery, e.reason, str(e), e)
            return
        except Exception as e:  # a decoder fault must not strand the delivery
            log.failure("Could not decode a message")
            self.refuse(delivery, MALFORMED, f"the body could not be decoded: {_short(e)}")
            return
        headers = delivery.headers
        if not headers or HOP_HEADER not in headers:  # not again after a delay queue
            self.events.report(EventKind.RECEIVED, message.id, message.task, message=message)
        try:
            self.admit(job)
        except Exception as e:  # a fault of the daemon's: the message is not stranded
            log.failure("Could not take task {id}", id=message.id)
            if job.state is JobState.RECEIVED:
                self.refuse(delivery, MALFORMED, f"the daemon could not take it: {_short(e)}")

    def refuse(
        self, delivery: BrokerDelivery, reason: str, detail: str, error: MessageError | None = None
    ) -> None:
        """
        Dead-letter a message that cannot run; when its task id can be
        read from it, store a FAILURE with ``error`` first (and dead-letter
        it all the same when that cannot be stored).
        """
        task_id = error.task_id if error is not None else None
        name = error.task if error is not None else None
        self.events.report(EventKind.REJECTED, task_id, name, reason=reason, error=error)
        log.error("Dead-lettered a message ({reason}): {why}", reason=reason, why=detail)
        if error is None or error.task_id is None:
            self.in_flight.track(self._dead_letter(delivery, task_id, reason, detail))
            return
        document = failure_document(
            error.task_id, error.task or "", error, traceback="", dead_letter=reason
        )
        d = self.backend.store_results([OutcomeRecord(error.task_id, document, None, True)])
        d.addErrback(
            lambda f: log.failure("Could not store the failure of task {id}", f, id=task_id)
        )
        d.addCallback(lambda _: self._dead_letter(delivery, task_id, reason, detail))
        self.in_flight.track(d)

    def _dead_letter(
        self, delivery: BrokerDelivery, task_id: str | None, reason: str, detail: str
    ) -> defer.Deferred[None]:
        self.events.report(EventKind.DEAD_LETTERED, task_id, reason=reason)
        return delivery.dead_letter(reason, detail)


def _short(error: BaseException) -> str:
    """
    An exception's repr, cut to 200 characters for a header and a log line.
    """
    text = repr(error)
    return text if len(text) <= 200 else text[:197] + "..."
