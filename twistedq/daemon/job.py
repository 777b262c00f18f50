"""
The value that travels through the daemon's stages: one :py:class:`Job` per
delivery, with its decoded message, its claim and its place in the
lifecycle (:py:class:`JobState`).
"""

from __future__ import annotations

import datetime
import enum
import reprlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall

from twistedq.message import TaskMessage

__all__ = [
    "ARGS_PREVIEW",
    "BrokerDelivery",
    "Job",
    "JobState",
    "args_preview",
    "arguments_preview",
    "few",
    "timestamp",
]

#: The longest preview of a task's arguments (:py:func:`args_preview`).
ARGS_PREVIEW = 120


class BrokerDelivery(Protocol):
    """
    One message from the broker, settled once: acked, rejected or
    dead-lettered (:py:class:`twistedq.amqp.consumer.Delivery`).
    """

    body: bytes
    redelivered: bool

    @property
    def headers(self) -> Mapping[str, Any] | None: ...

    @property
    def queue(self) -> str | None:
        """
        The queue it came from, when known.
        """

    def ack(self) -> None: ...

    def reject(self, requeue: bool) -> None: ...

    def dead_letter(self, reason: str, detail: str) -> defer.Deferred[None]: ...


class JobState(enum.Enum):
    """
    Where a job is.  Every job moves forward through these, except that a
    job held, waiting or queued may be checked again, and a job whose child
    died is queued again.
    """

    #: Decoded; not yet checked against the store.
    RECEIVED = "received"
    #: In this reactor turn's one read or claim of the store.
    CHECKING = "checking"
    #: Unacknowledged, to be checked again after a pause: its claim is held
    #: by another attempt, a copy of it runs here, or the store is down.
    HELD = "held"
    #: Unacknowledged in memory until its ETA (or, for a reactor task,
    #: until the store is back).
    WAITING = "waiting"
    #: Being published into a delay queue of the broker.
    DELAYING = "delaying"
    #: Due, waiting for an idle child.
    QUEUED = "queued"
    #: Handed to a child (or to the reactor).
    RUNNING = "running"
    #: Its outcome is being stored; its delivery is settled after that.
    STORING = "storing"
    #: Acked, rejected or dead-lettered: the daemon is done with it.
    SETTLED = "settled"


class Job:
    """
    One delivery on its way through the daemon.

    :ivar delivery: the broker's delivery, settled once through
        :py:meth:`ack`, :py:meth:`give_back` or :py:meth:`dead_letter`.
    :ivar message: the decoded task message.
    :ivar eta: the message's ETA in seconds since the epoch, or None.
    :ivar expires: when the message expires, in seconds since the epoch, or
        None.
    :ivar token: the fencing token of the claim this daemon holds on the
        task, or None.
    :ivar lease_until: until when (by this daemon's clock) that claim
        surely holds.
    :ivar claimed_at: when the claim was taken (for parking).
    :ivar parked: its message is parked in the store and acknowledged.
    :ivar delivered_at: when (by this daemon's clock) the broker delivered
        it; its delivery is unacknowledged since.
    :ivar released: its delivery went back to the queue while it ran
        (:py:meth:`release_delivery`).
    :ivar deaths: how many children died running it alone.
    :ivar suspect: it was in a batch whose child died: it runs alone.
    :ivar timer: the call that wakes it while it is held or waiting.
    :ivar child: the name of the child it was handed to last
        (``"Process-2"``; ``"reactor"`` for a reactor task), or None.
    :ivar started_at: when (by this daemon's clock) it was last handed to
        a child or to the reactor.
    """

    __slots__ = (
        "__weakref__",
        "child",
        "claimed_at",
        "deaths",
        "delivered_at",
        "delivery",
        "eta",
        "expires",
        "lease_until",
        "message",
        "parked",
        "released",
        "started_at",
        "state",
        "suspect",
        "timer",
        "token",
    )

    def __init__(self, delivery: BrokerDelivery, message: TaskMessage) -> None:
        self.delivery = delivery
        self.message = message
        self.state = JobState.RECEIVED
        self.eta = timestamp(message.eta) if message.eta is not None else None
        self.expires = timestamp(message.expires) if message.expires is not None else None
        self.token: int | None = None
        self.lease_until = 0.0
        self.claimed_at = 0.0
        self.parked = False
        self.delivered_at = 0.0
        self.released = False
        self.deaths = 0
        self.suspect = False
        self.timer: IDelayedCall | None = None
        self.child: str | None = None
        self.started_at = 0.0

    def __repr__(self) -> str:
        return f"<Job {self.message.task}[{self.message.id}] {self.state.value}>"

    @property
    def task_id(self) -> str:
        return self.message.id

    @property
    def claim_token(self) -> int:
        """
        The fencing token of the claim held on its task; only while one is.
        """
        if self.token is None:
            raise LookupError(f"{self!r} holds no claim")
        return self.token

    def early(self, now: float) -> bool:
        """
        Whether its ETA is still ahead at ``now``.
        """
        return self.eta is not None and self.eta > now

    def expired(self, now: float) -> bool:
        """
        Whether it expired by ``now``.
        """
        return self.expires is not None and now >= self.expires

    def stop_timer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def ack(self) -> None:
        self.state = JobState.SETTLED
        if not self.released:
            self.delivery.ack()

    def give_back(self) -> None:
        """
        Return its message to the queue, unacknowledged.
        """
        self.stop_timer()
        self.state = JobState.SETTLED
        self.delivery.reject(requeue=True)

    def release_delivery(self) -> None:
        """
        Return its message to the queue while the job goes on (it runs):
        its later ack, or a dead-lettering, finds the delivery settled and
        does nothing to it.
        """
        self.released = True
        self.delivery.reject(requeue=True)

    def dead_letter(self, reason: str, detail: str) -> defer.Deferred[None]:
        self.state = JobState.SETTLED
        if self.released:  # the copy the broker delivers again meets the outcome
            return defer.succeed(None)
        return self.delivery.dead_letter(reason, detail)


def timestamp(text: str) -> float:
    """
    Seconds since the epoch of an ISO 8601 time; one without a zone is UTC.
    """
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


_preview_repr = reprlib.Repr()
_preview_repr.maxstring = ARGS_PREVIEW
_preview_repr.maxother = ARGS_PREVIEW
_preview_repr.maxlevel = 3


def arguments_preview(
    args: Sequence[Any], kwargs: Mapping[str, Any], limit: int = ARGS_PREVIEW
) -> str:
    """
    A preview of a task's arguments, the repr of its positional and
    keyword arguments (``(1, 'a'), {'key': [1, 2]}``), at most ``limit``
    characters (cut with ``...``): what events, ``inspect`` and the
    dashboard show of a task, never its whole arguments.  Its cost is
    bounded whatever their size (long strings and collections are
    shortened first).
    """
    text = f"{_preview_repr.repr(args)}, {_preview_repr.repr(kwargs)}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def args_preview(message: TaskMessage, limit: int = ARGS_PREVIEW) -> str:
    """
    The :py:func:`arguments_preview` of a task message.
    """
    return arguments_preview(message.args, message.kwargs, limit)


def few(jobs: list[Job], shown: int = 5) -> str:
    """
    The first ``shown`` jobs as ``task[id]``, and how many more, for a log
    line about many.
    """
    text = ", ".join(f"{job.message.task}[{job.task_id}]" for job in jobs[:shown])
    if len(jobs) > shown:
        text += f" and {len(jobs) - shown} more"
    return text
