"""
The stored outcome of a task: one JSON document per task id, written by the
daemon, read by clients and by the status resource.

A success::

    {"id": "...", "task": "add", "status": "SUCCESS", "result": 3,
     "date_done": "2026-11-24T10:00:00.000000+00:00"}

A failure keeps the exception's type, message, arguments and traceback::

    {"id": "...", "task": "add", "status": "FAILURE", "result": null,
     "exc": {"module": "builtins", "type": "ValueError",
             "message": "bad", "args": ["bad"]},
     "traceback": "Traceback (most recent call last): ...",
     "date_done": "..."}

A task waiting to run again (see :py:func:`retry_document`) keeps the
exception that made it retry, when it runs again and how many retries it
has had::

    {"id": "...", "task": "fetch", "status": "RETRY", "result": null,
     "exc": {...}, "traceback": "...", "countdown": 4.0, "retries": 1,
     "eta": "2026-11-24T10:00:04.000000+00:00", "date_done": "..."}
"""

from __future__ import annotations

import builtins
import datetime
import importlib
import json
import traceback as traceback_module
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twistedq.exceptions import ResultTooLarge
from twistedq.states import FAILURE, PENDING, READY_STATES, RETRY, REVOKED, SUCCESS

if TYPE_CHECKING:  # the stores read and write outcomes: they import this module
    from twistedq.backends.base import TasksetState

__all__ = [
    "DEFAULT_MAX_RESULT_SIZE",
    "SEED_SUCCESS",
    "Outcome",
    "RemoteTaskError",
    "dead_letter_reason",
    "described_exception",
    "failure_document",
    "mark_dead_lettered",
    "pending_document",
    "retry_document",
    "retry_failed",
    "revoked_document",
    "schedule_retry",
    "status_document",
    "success_document",
    "taskset_status_document",
    "too_large_document",
    "top_status",
]


#: The default limit on one outcome document, in bytes: 8 MiB, as the
#: default limit on a task message.  Every store keeps it whole (MariaDB's
#: default packet is 16 MiB; memcached stores larger outcomes than its item
#: as its own ``ResultTooLarge``), and a larger value belongs in a file or
#: a database of its own, its name in the result.
DEFAULT_MAX_RESULT_SIZE = 8 * 1024 * 1024

#: How much of the original traceback a ``ResultTooLarge`` outcome keeps,
#: in characters (its end, where the raising frame is).
_KEPT_TRACEBACK = 16 * 1024

#: How much of the original exception's message the ``ResultTooLarge``
#: message quotes, in characters.
_QUOTED_MESSAGE = 200


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


#: The encoder of documents (json.dumps would make one per call).
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def _dumps(document: dict[str, Any]) -> bytes:
    return _ENCODER.encode(document).encode("utf-8")


def success_document(task_id: str, task: str, value: Any) -> bytes:
    """
    Encode the outcome of a task that returned ``value``.

    :raises TypeError: ``value`` is not a JSON value.
    :raises ValueError: ``value`` holds a float that JSON cannot carry.
    """
    return _dumps(
        {"id": task_id, "task": task, "status": SUCCESS, "result": value, "date_done": _now()}
    )


def pending_document(task_id: str, task: str, sent_at: str | None = None) -> bytes:
    """
    Encode the record of a task that was published and has no outcome
    yet; it tells a queued task from an unknown id.

    :param sent_at: when it was sent (ISO 8601), by default now.
    """
    sent_at = _now() if sent_at is None else sent_at
    return _dumps({"id": task_id, "task": task, "status": PENDING, "sent_at": sent_at})


def revoked_document(task_id: str, task: str, reason: str) -> bytes:
    """
    Encode the outcome of a task that was not run (for example because it
    expired before a daemon could run it).
    """
    return _dumps(
        {
            "id": task_id,
            "task": task,
            "status": REVOKED,
            "result": None,
            "reason": reason,
            "date_done": _now(),
        }
    )


def _json_args(args: tuple[Any, ...]) -> list[Any] | None:
    try:
        json.dumps(args, allow_nan=False)
    except (TypeError, ValueError):
        return None
    return list(args)


def _exception_fields(
    task_id: str, task: str, status: str, exception: BaseException, traceback: str | None
) -> dict[str, Any]:
    if traceback is None:
        traceback = "".join(
            traceback_module.format_exception(type(exception), exception, exception.__traceback__)
        )
    kind = type(exception)
    return {
        "id": task_id,
        "task": task,
        "status": status,
        "result": None,
        "exc": {
            "module": kind.__module__,
            "type": kind.__qualname__,
            "message": str(exception),
            "args": _json_args(exception.args),
        },
        "traceback": traceback,
        "date_done": _now(),
    }


def failure_document(
    task_id: str,
    task: str,
    exception: BaseException,
    traceback: str | None = None,
    dead_letter: str | None = None,
) -> bytes:
    """
    Encode the outcome of a task that raised ``exception``.

    :param dead_letter: the reason its message went to the dead-letter
        queue, if it did (see :py:func:`dead_letter_reason`).
    """
    document = _exception_fields(task_id, task, FAILURE, exception, traceback)
    if dead_letter is not None:
        document["dead_letter"] = dead_letter
    return _dumps(document)


def too_large_document(
    task_id: str,
    task: str,
    size: int,
    limit: int,
    what: str,
    traceback: str = "",
) -> bytes:
    """
    Encode the FAILURE that stands for an outcome document of ``size``
    bytes over ``limit``: a :py:class:`~twistedq.exceptions.ResultTooLarge`
    whose message names the task, both sizes and ``what`` the task did
    (``"returned a str"``, ``"raised ValueError: ..."``), with the end of
    ``traceback`` kept.
    """
    error = ResultTooLarge(
        f"task {task} {what}; its outcome is {size:,} bytes encoded, over the result "
        f"size limit of {limit:,} bytes (--max-result-size); return a smaller value, "
        "or store large data elsewhere and return where it is",
        size,
        limit,
    )
    kept = min(_KEPT_TRACEBACK, limit // 4)
    if len(traceback) > kept:
        cut = len(traceback) - kept
        traceback = f"[{cut:,} characters cut]\n" + traceback[cut:]
    return failure_document(task_id, task, error, traceback=traceback)


def described_exception(exception: BaseException) -> str:
    """
    ``raised <type>: <the beginning of its message>``, for a
    ``ResultTooLarge`` message.
    """
    try:
        message = str(exception)
    except Exception:
        message = ""
    if len(message) > _QUOTED_MESSAGE:
        message = message[:_QUOTED_MESSAGE] + f"... ({len(message):,} characters)"
    return f"raised {type(exception).__qualname__}: {message}"


def retry_document(
    task_id: str,
    task: str,
    exception: BaseException,
    retries: int,
    countdown: float | None = None,
    eta: str | None = None,
    traceback: str | None = None,
) -> bytes:
    """
    Encode the outcome of a task that asked to run again: the exception
    that made it retry, ``retries``, the retries it will have had when it
    runs again, and when that is: ``countdown`` seconds from now or at
    ``eta`` (ISO 8601).  The daemon sets the time of the next run
    (:py:func:`schedule_retry`).
    """
    document = _exception_fields(task_id, task, RETRY, exception, traceback)
    document["retries"] = retries
    if eta is not None:
        document["eta"] = eta
    else:
        document["countdown"] = countdown or 0.0
    return _dumps(document)


def retry_failed(document: bytes) -> bytes:
    """
    The FAILURE a RETRY document becomes when the task cannot be retried:
    the same exception and traceback.
    """
    parsed = json.loads(document)
    for key in ("countdown", "eta", "retries"):
        parsed.pop(key, None)
    parsed["status"] = FAILURE
    return _dumps(parsed)


def schedule_retry(document: bytes, now: float) -> tuple[bytes, str]:
    """
    A RETRY document with the time of its next run, and that time in ISO
    8601: its ``eta`` if it has one, else ``now`` (seconds since the
    epoch) plus its countdown.
    """
    parsed = json.loads(document)
    eta = parsed.get("eta")
    if not isinstance(eta, str):
        countdown = max(0.0, float(parsed.get("countdown") or 0.0))
        eta = datetime.datetime.fromtimestamp(now + countdown, datetime.timezone.utc).isoformat()
        parsed["eta"] = eta
    return _dumps(parsed), eta


def mark_dead_lettered(document: bytes, reason: str) -> bytes:
    """
    A failure document with the reason its message was dead-lettered added.
    """
    parsed = json.loads(document)
    parsed["dead_letter"] = reason
    return _dumps(parsed)


def dead_letter_reason(document: bytes) -> str | None:
    """
    The reason a failed task's message went to the dead-letter queue, when
    it did: such a failure is not final, as the message may be republished
    (``twistedq-deadletter republish``) to run again.
    """
    if b'"dead_letter"' not in document:
        return None
    reason = json.loads(document).get("dead_letter")
    return reason if isinstance(reason, str) else None


class RemoteTaskError(Exception):
    """
    Stands for an exception raised by a task whose class cannot be rebuilt
    here (not importable, or not built from its arguments).

    :ivar exc_module: the module of the original exception class.
    :ivar exc_type: the qualified name of the original exception class.
    :ivar traceback: the traceback text from the child process.
    """

    def __init__(self, exc_module: str, exc_type: str, message: str, traceback: str | None):
        super().__init__(f"{exc_type}: {message}")
        self.exc_module = exc_module
        self.exc_type = exc_type
        self.message = message
        self.traceback = traceback


@dataclass(frozen=True)
class Outcome:
    """
    A parsed stored outcome.  ``eta`` and ``retries`` are those of a
    ``RETRY`` outcome: when the task runs again, and its retries by then.
    """

    task_id: str
    status: str
    result: Any = None
    task: str | None = None
    exc: dict[str, Any] | None = None
    traceback: str | None = None
    date_done: str | None = None
    sent_at: str | None = None
    reason: str | None = None
    eta: str | None = None
    retries: int | None = None

    @classmethod
    def pending(cls, task_id: str) -> Outcome:
        """
        The outcome of a task the store knows nothing of.
        """
        return cls(task_id=task_id, status=PENDING)

    @classmethod
    def from_bytes(cls, task_id: str, data: bytes | None) -> Outcome:
        """
        Parse a stored document; :py:obj:`None` means pending.
        """
        if data is None:
            return cls.pending(task_id)
        document = json.loads(data)
        return cls(
            task_id=task_id,
            status=document["status"],
            result=document.get("result"),
            task=document.get("task"),
            exc=document.get("exc"),
            traceback=document.get("traceback"),
            date_done=document.get("date_done"),
            sent_at=document.get("sent_at"),
            reason=document.get("reason"),
            eta=document.get("eta"),
            retries=document.get("retries"),
        )

    @property
    def ready(self) -> bool:
        """
        Whether the task has finished: succeeded, failed or was revoked.
        """
        return self.status in READY_STATES

    @property
    def known(self) -> bool:
        """
        Whether the store knows this task at all: finished, or recorded as
        published (a pending record), as opposed to an id never seen.
        """
        return self.status != PENDING or self.sent_at is not None

    def exception(self) -> BaseException:
        """
        Rebuild the exception the task raised: an instance of the original
        class when it can be imported and built from its arguments, else a
        :py:obj:`RemoteTaskError`.  Either carries the child's traceback text as
        ``remote_traceback``.
        """
        exc = self.exc or {}
        module_name = exc.get("module", "builtins")
        type_name = exc.get("type", "Exception")
        message = exc.get("message", "")
        args = exc.get("args")
        rebuilt: BaseException | None = None
        if args is not None:
            try:
                if module_name == "builtins":
                    kind = getattr(builtins, type_name)
                else:
                    kind = importlib.import_module(module_name)
                    for part in type_name.split("."):
                        kind = getattr(kind, part)
                if isinstance(kind, type) and issubclass(kind, Exception):
                    rebuilt = kind(*args)
            except Exception:
                rebuilt = None
        if rebuilt is None:
            rebuilt = RemoteTaskError(module_name, type_name, message, self.traceback)
        # Any exception type: the attribute is ours, not the type's.
        rebuilt.remote_traceback = self.traceback  # type: ignore[attr-defined]
        return rebuilt


#: The seed's name for SUCCESS, reported when the compatibility switch is on.
SEED_SUCCESS = "DONE"


def status_document(outcome: Outcome, seed_states: bool = False) -> dict[str, Any]:
    """
    The JSON of ``/celery/<task_id>/status/``, shared by the daemon's status
    resource and the Django view::

        {"task": {"id": ..., "status": ..., "result": ...}}

    with ``exc`` (the exception's class name) and ``traceback`` added for a
    failure or a retry, whose ``result`` is the exception's message.  With
    ``seed_states``, SUCCESS is reported as the seed's ``DONE``.
    """
    status = outcome.status
    if seed_states and status == SUCCESS:
        status = SEED_SUCCESS
    task: dict[str, Any] = {
        "id": outcome.task_id,
        "status": status,
        "result": outcome.result,
    }
    if outcome.status in (FAILURE, RETRY):
        exc = outcome.exc or {}
        task["result"] = exc.get("message", "")
        task["exc"] = exc.get("type", "Exception")
        task["traceback"] = outcome.traceback
    return {"task": task}


def taskset_status_document(taskset_id: str, state: TasksetState | None) -> dict[str, Any]:
    """
    The JSON of ``/celery/taskset/<taskset_id>/status/``, for a progress
    bar::

        {"taskset": {"id": ..., "total": 500, "completed": 120, "failed": 2,
                     "ready": false}}

    An unknown taskset has ``total`` 0 and ``ready`` false.
    """
    if state is None:
        return {
            "taskset": {"id": taskset_id, "total": 0, "completed": 0, "failed": 0, "ready": False}
        }
    return {
        "taskset": {
            "id": taskset_id,
            "total": state.total,
            "completed": state.completed,
            "failed": state.failed,
            "ready": state.ready,
        }
    }


def top_status(outcome: bytes) -> str:
    """
    The status of an outcome document without parsing it, for the daemon's
    hot path: the first ``"status"`` key is the top-level one (values
    before it are strings, whose quotes are escaped).
    """
    start = outcome.find(b'"status":"')
    if start < 0:
        start = outcome.find(b'"status": "')
        if start < 0:
            return ""
        start += len(b'"status": "')
    else:
        start += len(b'"status":"')
    return outcome[start : outcome.find(b'"', start)].decode("ascii", "replace")
