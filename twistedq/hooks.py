"""
Hooks (signals) around a task and around the daemon, with Celery's names::

    from twistedq.hooks import task_prerun, task_failure, worker_ready

    @task_prerun.connect
    def started(sender, task_id, task, args, kwargs, **rest):
        metrics.increment(f"started.{sender.name}")

    @task_failure.connect(sender="myapp.fetch")
    def fetch_failed(sender, task_id, exception, **rest):
        alert(task_id, exception)

A receiver is called with the keyword arguments its signal names (and
``signal``, and ``sender``); it should take ``**rest`` too, so that an
argument added later does not break it.  What a receiver returns is
ignored; an exception in one is logged at ERROR with its traceback and
never changes the task's outcome, nor stops the other receivers.

``task_prerun`` gets the task's own ``args`` (a tuple) and ``kwargs`` (a
dict): a receiver that changes ``kwargs`` changes what the task is called
with, as in Celery; ``args`` cannot be changed.

Where each runs (so where its receivers must be connected):

======================== ========== =========================================
signal                   runs in    when
======================== ========== =========================================
``worker_process_init``  the child  a child imported its task modules
``task_prerun``          the child  just before the task function is called
``task_success``         the child  it returned (before its result is stored)
``task_failure``         the child  it raised, and does not retry
``task_retry``           the child  it raised and asked to run again
``task_postrun``         the child  after any of the three above
``task_received``        the daemon a message was decoded into a task (once)
``task_revoked``         the daemon it was revoked, expired or terminated
``worker_ready``         the daemon its children are up (it consumes once connected)
``worker_shutting_down`` the daemon it was asked to stop, before draining
======================== ========== =========================================

A child imports the task modules (``--tasks``) and the hook modules
(``twistd twistedq --hooks``); the daemon imports the hook modules only
(and the task modules with ``--reactor-tasks``).  So connect the child's
signals in either, and the daemon's in a hook module.  A task that runs on
the reactor (``on_reactor``) fires none of the child's signals.

No receiver connected costs no work per task beyond one check.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from typing import Any, overload

from twisted.application.service import Service
from twisted.logger import Logger, LogLevel

__all__ = [
    "DaemonHooks",
    "Signal",
    "task_failure",
    "task_postrun",
    "task_prerun",
    "task_received",
    "task_retry",
    "task_revoked",
    "task_signals_connected",
    "task_success",
    "worker_process_init",
    "worker_ready",
    "worker_shutting_down",
]

log = Logger()

Receiver = Callable[..., Any]

#: Where a signal runs.
CHILD = "child"
DAEMON = "daemon"


class Signal:
    """
    A hook: receivers connected to it are called, in the order connected,
    each time it is sent.

    :ivar name: its name (Celery's).
    :ivar where: :py:data:`CHILD` or :py:data:`DAEMON`: the process it is
        sent in.
    :ivar arguments: the keyword arguments its receivers get (besides
        ``sender`` and ``signal``).
    :ivar receivers: ``(receiver, sender)`` pairs; a sender of None takes
        every sender.
    """

    def __init__(self, name: str, where: str, arguments: tuple[str, ...]) -> None:
        self.name = name
        self.where = where
        self.arguments = arguments
        self.receivers: list[tuple[Receiver, Any]] = []

    def __repr__(self) -> str:
        return f"<Signal {self.name}>"

    @overload
    def connect(self, receiver: Receiver, *, sender: Any = None) -> Receiver: ...

    @overload
    def connect(self, *, sender: Any = None) -> Callable[[Receiver], Receiver]: ...

    def connect(self, receiver: Receiver | None = None, *, sender: Any = None) -> Any:
        """
        Connect ``receiver``; as a decorator, bare or called
        (``@task_prerun.connect(sender="add")``).  With ``sender``, it is
        called only for that sender: a task's name (or the task itself) for
        the task signals.  Connecting the same receiver twice for the same
        sender connects it once.

        :return: the receiver, so that the function stays usable.
        """
        if receiver is None:
            return lambda function: self.connect(function, sender=sender)
        if (receiver, sender) not in self.receivers:
            self.receivers.append((receiver, sender))
        return receiver

    def disconnect(self, receiver: Receiver, *, sender: Any = None) -> bool:
        """
        Disconnect ``receiver`` (for ``sender``); False if it was not
        connected.
        """
        try:
            self.receivers.remove((receiver, sender))
        except ValueError:
            return False
        return True

    def send(self, sender: Any, **arguments: Any) -> list[tuple[Receiver, Any]]:
        """
        Call every receiver connected for ``sender`` (or for every sender)
        with ``sender``, ``signal`` and ``arguments``.

        :return: ``(receiver, what it returned)`` pairs; for a receiver
            that raised, the exception (logged, never raised here).
        """
        if not self.receivers:
            return []
        answers: list[tuple[Receiver, Any]] = []
        for receiver, wanted in list(self.receivers):
            if wanted is not None and not _matches(wanted, sender):
                continue
            try:
                answers.append((receiver, receiver(sender=sender, signal=self, **arguments)))
            except Exception as e:
                self._log_error(receiver, e)
                answers.append((receiver, e))
        return answers

    def _log_error(self, receiver: Receiver, error: Exception) -> None:
        name = getattr(receiver, "__qualname__", repr(receiver))
        if self.where == DAEMON:
            log.failure(
                "A receiver of {signal} failed: {receiver}",
                level=LogLevel.error,
                signal=self.name,
                receiver=name,
            )
        else:
            logging.getLogger("twistedq.hooks").error(
                "A receiver of %s failed: %s", self.name, name, exc_info=error
            )


def _matches(wanted: Any, sender: Any) -> bool:
    """
    Whether a receiver connected for ``wanted`` takes ``sender``: the same
    object, or a task and its name.
    """
    if wanted is sender or wanted == sender:
        return True
    return isinstance(wanted, str) and getattr(sender, "name", None) == wanted


_TASK = ("task_id", "task", "args", "kwargs")

#: Before the task function is called; ``sender`` is the task.
task_prerun = Signal("task_prerun", CHILD, _TASK)
#: After it ended, however: ``retval`` is what it returned or raised,
#: ``state`` ``SUCCESS``, ``FAILURE`` or ``RETRY``.
task_postrun = Signal("task_postrun", CHILD, (*_TASK, "retval", "state"))
#: It returned ``result``.
task_success = Signal("task_success", CHILD, ("task_id", "result"))
#: It raised ``exception`` (``traceback`` its traceback object) and does
#: not retry; when its retries ran out, ``exception`` is the one it retried
#: for (``MaxRetriesExceededError`` after a bare ``retry()``), as stored.
task_failure = Signal(
    "task_failure", CHILD, ("task_id", "exception", "args", "kwargs", "traceback")
)
#: It raised ``reason`` and runs again later (``retries``: the retries it
#: had before this one).
task_retry = Signal("task_retry", CHILD, ("task_id", "reason", "retries"))
#: A child imported its task and hook modules; ``sender`` is its name.
worker_process_init = Signal("worker_process_init", CHILD, ())

#: A message was decoded into a task (``sender`` is its name, ``message``
#: the :py:class:`~twistedq.message.TaskMessage`): once per task, not again
#: when it comes back from a delay queue (an ETA, a rate limit's wait); a
#: retry is a new message, received again.
task_received = Signal("task_received", DAEMON, ("task_id", "message"))
#: It was revoked (``sender`` is its name): ``reason`` says why,
#: ``terminated`` whether its child was killed, ``expired`` whether it
#: passed its expiry.
task_revoked = Signal("task_revoked", DAEMON, ("task_id", "reason", "terminated", "expired"))
#: The daemon's children are up (it consumes as soon as the broker is
#: connected); ``sender`` is its name.
worker_ready = Signal("worker_ready", DAEMON, ())
#: The daemon was asked to stop and is about to drain; ``sender`` is its
#: name.
worker_shutting_down = Signal("worker_shutting_down", DAEMON, ())

_TASK_SIGNALS = (task_prerun, task_postrun, task_success, task_failure, task_retry)


def task_signals_connected() -> bool:
    """
    Whether any receiver is connected to a signal sent around a task in
    the child: if not, the child sends none.
    """
    for signal in _TASK_SIGNALS:
        if signal.receivers:
            return True
    return False


class DaemonHooks(Service):
    """
    Sends the daemon's signals: ``task_received`` and ``task_revoked``
    from its events seam (observed only while a receiver is connected to
    one of them when the daemon starts), ``worker_ready`` when told
    (:py:meth:`ready`) and ``worker_shutting_down`` when it stops, which
    it does before the consumer drains.

    :param events: the daemon's :py:class:`~twistedq.daemon.events.Events`.
    :param name: the daemon's name (the ``sender`` of its signals).
    :param modules: the hook modules, imported when it starts (``--hooks``).
    """

    def __init__(self, events: Any, name: Callable[[], str], modules: Sequence[str] = ()) -> None:
        self.events = events
        self.daemon_name = name
        self.modules = list(modules)
        self.observing = False

    def startService(self) -> None:
        Service.startService(self)
        for module in self.modules:
            importlib.import_module(module)
        if not self.observing and (task_received.receivers or task_revoked.receivers):
            self.events.subscribe(self._observe)
            self.observing = True

    def stopService(self) -> None:
        Service.stopService(self)
        self.shutting_down()

    def ready(self) -> None:
        worker_ready.send(self.daemon_name())

    def shutting_down(self) -> None:
        worker_shutting_down.send(self.daemon_name())

    def _observe(self, event: Any) -> None:
        kind = event.kind.value
        if kind == "received":
            task_received.send(
                event.task_name, task_id=event.task_id, message=event.fields.get("message")
            )
        elif kind == "revoked":
            reason = str(event.fields.get("reason", ""))
            task_revoked.send(
                event.task_name,
                task_id=event.task_id,
                reason=reason,
                terminated=reason.startswith("terminated"),
                expired=reason.startswith("expired"),
            )
