"""
What publishing a task (:py:mod:`twistedq.task`) and publishing a workflow
(:py:mod:`twistedq.canvas`) share: the client a call without one uses, the
times a message carries, and what is recorded of a taskset whose publish
failed part way.

It imports neither of the two, so the workflows do not need the task
module, which imports them for ``.s()``.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

from twistedq import context

if TYPE_CHECKING:
    from twistedq.client import Client
    from twistedq.message import TaskMessage

__all__ = ["abandon_taskset", "client_or_default", "message_times", "utc_iso"]


def client_or_default(client: Client | None) -> Client:
    """
    ``client``, or the process-wide default client when it is
    :py:obj:`None` (:py:func:`twistedq.context.default_client`).
    """
    if client is not None:
        return client
    return context.default_client()


def utc_iso(moment: datetime.datetime | float | None) -> str | None:
    """
    An ISO 8601 UTC time from a datetime (naive means UTC) or a Unix time.
    """
    if moment is None:
        return None
    if isinstance(moment, (int, float)):
        moment = datetime.datetime.fromtimestamp(moment, datetime.timezone.utc)
    elif moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc).isoformat()


def message_times(
    countdown: float | None,
    eta: datetime.datetime | float | None,
    expires: datetime.datetime | datetime.timedelta | float | None,
) -> tuple[str | None, str | None]:
    """
    The ETA and expiry of a message, as ISO 8601 UTC times, from the
    options of :py:func:`twistedq.task.publish_task`.

    :raises ValueError: both ``countdown`` and ``eta`` were given.
    """
    if countdown is not None and eta is not None:
        raise ValueError("give countdown or eta, not both")
    now = datetime.datetime.now(datetime.timezone.utc)
    if countdown is not None:
        eta = now + datetime.timedelta(seconds=countdown)
    if isinstance(expires, datetime.timedelta):
        expires = now + expires
    return utc_iso(eta), utc_iso(expires)


def abandon_taskset(
    client: Client,
    taskset_id: str,
    messages: list[TaskMessage],
    confirmed: set[str],
    error: Exception,
) -> None:
    """
    After a failed publish, record every subtask the broker did not
    confirm as REVOKED, counted in the taskset, so the taskset
    completes; say so in ``error``'s message (Python 3.10 has no
    exception notes).

    :param messages: every subtask of the taskset.
    :param confirmed: the ids of those the broker confirmed.
    :param error: the publish's error, whose message is extended.
    """
    left = [m for m in messages if m.id not in confirmed]
    reason = f"not published: {error}"
    try:
        revoked = client.abandon(left, reason)
    except Exception as recording:
        note = (
            f"taskset {taskset_id}: {len(confirmed)} of {len(messages)} subtasks were "
            f"published; the others could not be recorded as REVOKED ({recording}), so "
            "the taskset will not complete"
        )
    else:
        note = (
            f"taskset {taskset_id}: {len(confirmed)} of {len(messages)} subtasks were "
            f"published; {len(revoked)} others are recorded as REVOKED"
        )
    error.args = (f"{error}; {note}", *error.args[1:])
