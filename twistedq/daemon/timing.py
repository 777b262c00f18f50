"""
Timing: ETAs and expiry.  A task due soon is held in memory,
unacknowledged, until its ETA; one due later than ``hold_eta`` seconds goes
to a delay queue of the broker, which brings it back when due, so no daemon
holds it meanwhile.  A task past its expiry is revoked instead of run.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from twistedq.daemon.events import EventKind, Events
from twistedq.daemon.inflight import InFlight
from twistedq.daemon.job import Job, JobState
from twistedq.message import TaskMessage

__all__ = ["DEFAULT_HOLD_ETA", "Timing"]

#: Tasks due within this many seconds are held in memory, later ones go to
#: a delay queue of the broker.
DEFAULT_HOLD_ETA = 60.0

log = Logger()


class PublishLater(Protocol):
    """
    Publishes a task message to come back to its queue after about
    ``delay`` seconds, with an AMQP ``priority`` when given, marked as a
    ``hop`` when asked, and fires once the broker confirmed
    (:py:meth:`twistedq.amqp.broker.Publisher.publish_later`).
    """

    def __call__(
        self, message: TaskMessage, delay: float, *, priority: int | None = None, hop: bool = False
    ) -> Coroutine[Any, Any, None] | defer.Deferred[None]: ...


class Timing:
    """
    Passes on due jobs (to ``queue``), holds early ones, revokes expired
    ones (through ``revoke``).

    :ivar publish_later: publishes a task message to come back to the queue
        after about the given seconds and fires once the broker confirmed
        (:py:meth:`twistedq.amqp.broker.Publisher.publish_later`); or None:
        every ETA is then held in memory.
    :ivar hold_eta: a task due within this many seconds is held in memory
        until its ETA; one due later goes to a delay queue.
    """

    def __init__(
        self,
        clock: IReactorTime,
        events: Events,
        in_flight: InFlight,
        queue: Callable[[Job], None],
        recheck: Callable[[Job], None] | None,
        revoke: Callable[[Job, str], None],
        publish_later: PublishLater | None = None,
        hold_eta: float = DEFAULT_HOLD_ETA,
    ) -> None:
        self.clock = clock
        self.events = events
        self.in_flight = in_flight
        self.queue = queue
        self.recheck = recheck
        self.revoke = revoke
        self.publish_later = publish_later
        self.hold_eta = hold_eta
        #: Jobs held in memory until their ETA.
        self.waiting: set[Job] = set()

    def admit(self, job: Job) -> None:
        """
        A job checked (or not to be checked): hold it until its ETA, revoke
        it if it expired, else queue it.
        """
        now = self.clock.seconds()
        if job.expires is not None and job.expired(now):
            self.revoke_expired(job)
        elif job.eta is not None and job.early(now):
            left = job.eta - now
            if left > self.hold_eta and self.publish_later is not None:
                self._send_to_delay_queue(job, left)
            else:
                self.wait(job, left)
        else:
            self.queue(job)

    def revoke_expired(self, job: Job) -> None:
        self.revoke(job, f"expired at {job.message.expires}")

    def wait(self, job: Job, delay: float, then: Callable[[Job], None] | None = None) -> None:
        """
        Hold a job (unacknowledged, so the broker still owns it) for
        ``delay`` seconds, then pass it to ``then`` (by default: revoke it
        if it expired meanwhile, else check it again, since it may have been
        revoked, or admit it, since it may still be early if the clock
        stepped back).
        """

        def due() -> None:
            self.waiting.discard(job)
            job.timer = None
            if then is not None:
                then(job)
            elif job.expired(self.clock.seconds()):
                self.revoke_expired(job)
            elif self.recheck is not None:
                self.recheck(job)
            else:
                self.admit(job)

        job.state = JobState.WAITING
        job.timer = self.clock.callLater(delay, due)
        self.waiting.add(job)

    def withdraw(self, job: Job) -> None:
        """
        Take a waiting job out: it no longer wakes.
        """
        job.stop_timer()
        self.waiting.discard(job)

    def give_back_all(self) -> list[Job]:
        """
        On stopping: return the waiting jobs to the queue.
        """
        jobs = list(self.waiting)
        for job in jobs:
            job.give_back()
        self.waiting.clear()
        return jobs

    def _send_to_delay_queue(self, job: Job, left: float) -> None:
        """
        Publish a job due in ``left`` seconds into a delay queue, and ack it
        once the broker confirmed.  When the publish fails it is held here.
        """
        assert self.publish_later is not None
        job.state = JobState.DELAYING
        self.events.report(EventKind.DELAYED, job.task_id, job.message.task, job=job)
        d: defer.Deferred[None] = defer.ensureDeferred(self.publish_later(job.message, left))

        def not_sent(failure: Failure) -> None:
            log.warn(
                "Could not move task {task}[{id}] to a delay queue ({why}); holding it here",
                task=job.message.task,
                id=job.task_id,
                why=str(failure.value) or type(failure.value).__name__,
            )
            if self.in_flight.stopping:
                job.give_back()
            else:
                eta = job.eta if job.eta is not None else 0.0
                self.wait(job, max(0.0, eta - self.clock.seconds()))

        d.addCallbacks(lambda _: job.ack(), not_sent)
        self.in_flight.track(d)
