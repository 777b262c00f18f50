"""
When a task that raised runs again: the retry policy a task declares and
the outcome a child reports for it.

A task asks to run again by raising :py:class:`~twistedq.exceptions.Retry`
(:py:func:`twistedq.task.retry`, :py:meth:`Task.retry
<twistedq.task.Task.retry>`), or by raising one of the exceptions of its
``autoretry_for``.  While its message's ``retries`` is below its
``max_retries`` the outcome is a ``RETRY`` document with the seconds to wait
(or the time of the next run); the daemon then publishes the message again
with ``retries`` one more.  With no retries left the task fails with the
exception that made it retry, or with
:py:class:`~twistedq.exceptions.MaxRetriesExceededError`.
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twistedq.exceptions import MaxRetriesExceededError, Retry
from twistedq.message import TaskMessage
from twistedq.outcome import failure_document, retry_document

__all__ = [
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_RETRY_BACKOFF_MAX",
    "DEFAULT_RETRY_DELAY",
    "RetryPolicy",
    "retry_outcome",
    "wants_retry",
]

#: Retries of a task that does not say: after the third, it fails.
DEFAULT_MAX_RETRIES = 3
#: Seconds before a retry that gives no countdown, without backoff.
DEFAULT_RETRY_DELAY = 180.0
#: The longest exponential backoff, in seconds.
DEFAULT_RETRY_BACKOFF_MAX = 600.0


@dataclass(frozen=True)
class RetryPolicy:
    """
    A task's retry settings (the attributes of
    :py:class:`~twistedq.task.Task` of the same names).

    :ivar max_retries: the most retries, or :py:obj:`None` for no limit.
    :ivar autoretry_for: exceptions that make the task retry by themselves.
    :ivar retry_backoff: :py:obj:`False`, or the base of an exponential
        backoff in seconds (:py:obj:`True` is 1): ``base * 2 ** retries``.
    :ivar retry_backoff_max: the longest backoff, in seconds.
    :ivar retry_jitter: wait a random time between 0 and the backoff
        instead (full jitter), so that tasks failing together do not
        retry together.
    :ivar default_retry_delay: the seconds before a retry that gives no
        countdown or ETA, when there is no backoff.
    """

    max_retries: int | None = DEFAULT_MAX_RETRIES
    autoretry_for: tuple[type[BaseException], ...] = ()
    retry_backoff: bool | float = False
    retry_backoff_max: float = DEFAULT_RETRY_BACKOFF_MAX
    retry_jitter: bool = True
    default_retry_delay: float = DEFAULT_RETRY_DELAY

    @classmethod
    def of(cls, task: Any) -> RetryPolicy:
        """
        The policy of a registered task: its attributes, the defaults for
        those it lacks (a plain function has none).
        """
        return cls(
            max_retries=getattr(task, "max_retries", DEFAULT_MAX_RETRIES),
            autoretry_for=tuple(getattr(task, "autoretry_for", None) or ()),
            retry_backoff=getattr(task, "retry_backoff", False),
            retry_backoff_max=getattr(task, "retry_backoff_max", DEFAULT_RETRY_BACKOFF_MAX),
            retry_jitter=getattr(task, "retry_jitter", True),
            default_retry_delay=getattr(task, "default_retry_delay", DEFAULT_RETRY_DELAY),
        )

    def countdown(
        self, retries: int, uniform: Callable[[float, float], float] = random.uniform
    ) -> float:
        """
        The seconds to wait before the run that follows ``retries``
        retries, when the task gave no countdown: the backoff (with its
        jitter), else ``default_retry_delay``.
        """
        if self.retry_backoff is False:
            return float(self.default_retry_delay)
        base = 1.0 if self.retry_backoff is True else float(self.retry_backoff)
        backoff = min(float(self.retry_backoff_max), base * 2.0**retries)
        if self.retry_jitter:
            return uniform(0.0, backoff)
        return backoff


def wants_retry(task: Any, error: BaseException) -> bool:
    """
    Whether an exception a task raised asks for a retry: a
    :py:class:`~twistedq.exceptions.Retry`, or one of its
    ``autoretry_for``.
    """
    if isinstance(error, Retry):
        return True
    kinds = getattr(task, "autoretry_for", None)
    return bool(kinds) and isinstance(error, tuple(kinds or ()))


def retry_outcome(
    message: TaskMessage,
    task: Any,
    error: BaseException,
    traceback: str | None = None,
    uniform: Callable[[float, float], float] = random.uniform,
) -> bytes:
    """
    The outcome of ``message``'s task, which raised ``error`` asking for a
    retry (see :py:func:`wants_retry`): a RETRY document while it has
    retries left, else a FAILURE with the exception that made it retry
    (``MaxRetriesExceededError`` for a bare ``retry()``).

    :param traceback: the traceback text, when ``error`` no longer carries
        its own.
    """
    policy = RetryPolicy.of(task)
    limit = policy.max_retries
    countdown: float | None = None
    eta: str | None = None
    if isinstance(error, Retry):
        cause = error.exc
        if error.max_retries is not None:
            limit = error.max_retries
        if error.eta is not None:
            eta = datetime.datetime.fromtimestamp(error.eta, datetime.timezone.utc).isoformat()
        elif error.countdown is not None:
            countdown = max(0.0, float(error.countdown))
    else:
        cause = error
    if cause is not None and cause.__traceback__ is not None:
        traceback = None  # the cause's own traceback, not the retry() call's
    if limit is not None and message.retries >= limit:
        if cause is None:
            cause = MaxRetriesExceededError(
                f"task {message.task}[{message.id}] asked to retry after its "
                f"{message.retries} retries, its max_retries"
            )
            traceback = ""
        return failure_document(message.id, message.task, cause, traceback)
    if countdown is None and eta is None:
        countdown = policy.countdown(message.retries, uniform)
    return retry_document(
        message.id,
        message.task,
        cause if cause is not None else error,
        message.retries + 1,
        countdown=countdown,
        eta=eta,
        traceback=traceback,
    )
