"""
The entry point of a pool child: ``python -m twistedq.worker.child``.

The child imports the task modules once, then answers AMP commands from the
daemon on file descriptors 3 (in) and 4 (out), so task code may print to
stdout and stderr freely: the daemon logs both under the child's name.  It
exits when the daemon closes the pipe; with ``--parent`` it is also killed
when the daemon dies, even mid-task (``PR_SET_PDEATHSIG``, Linux).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import inspect
import json
import logging
import multiprocessing
import os
import resource
import signal
import sys
import traceback as traceback_module
from collections.abc import Callable, Iterator
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.protocols import amp
from twisted.python.failure import Failure

from twistedq import context, hooks
from twistedq.exceptions import MaxRetriesExceededError, Retry, SoftTimeLimitExceeded
from twistedq.log import LOG_LEVELS, SEED_FORMAT
from twistedq.message import MessageError, TaskMessage
from twistedq.outcome import (
    DEFAULT_MAX_RESULT_SIZE,
    described_exception,
    failure_document,
    success_document,
    too_large_document,
    top_status,
)
from twistedq.registry import TaskRegistry, import_task_modules
from twistedq.retries import retry_outcome, wants_retry
from twistedq.states import FAILURE, RETRY
from twistedq.task import FunctionTask, Task, tasks
from twistedq.worker.commands import Hello, RunTasks, Shutdown, pack, unpack

__all__ = ["ChildLocator", "TaskRunner", "main", "serve"]

AMP_IN_FD = 3
AMP_OUT_FD = 4


def _extras_taken(function: Any) -> tuple[str, ...] | None:
    """
    The names of the positional parameters of a task function that
    accepts any keyword (``**kwargs``), in order; :py:obj:`None` for one
    that does not.
    """
    if isinstance(function, FunctionTask):
        function = function.function
    elif isinstance(function, Task):
        function = function.run
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return None
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return tuple(p.name for p in parameters if p.kind in positional)


def _raise_soft_time_limit(signum: int, frame: Any) -> None:
    raise SoftTimeLimitExceeded("the task ran past its soft time limit")


@contextlib.contextmanager
def _soft_time_limit(seconds: float | None) -> Iterator[None]:
    """
    Raise :py:obj:`SoftTimeLimitExceeded` in the task (the main thread)
    after ``seconds``, through ``SIGALRM``.
    """
    if not seconds:
        yield
        return
    previous = signal.signal(signal.SIGALRM, _raise_soft_time_limit)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def resident_kib() -> int:
    """
    This process's resident memory now, in KiB.
    """
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def die_with_parent(parent: int) -> None:
    """
    Ask Linux to kill this process when its parent dies (even while a task
    runs), and exit now if the parent is already gone.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(1)


def _trim_memory() -> None:
    """
    Return freed heap memory to the system (glibc's ``malloc_trim``), after
    a value too large to send was dropped.
    """
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def outcome_of(message: TaskMessage, value: Any) -> bytes:
    """
    The success document of a task that returned ``value``, or a failure
    if ``value`` is not a JSON value.
    """
    try:
        return success_document(message.id, message.task, value)
    except (TypeError, ValueError) as e:
        return failure_document(
            message.id,
            message.task,
            TypeError(f"the task's return value is not a JSON value: {e}"),
            traceback="",
        )


class TaskRunner:
    """
    Runs task messages against a registry and turns whatever happens into
    an outcome document.

    A task function that accepts ``**kwargs`` also receives the seed's
    extra keyword arguments: ``task_id`` (its idempotency key),
    ``task_name``, ``logfile`` and ``loglevel``, so
    ``setup_logger(**kwargs)`` works inside it; not one whose name a
    positional argument fills (an errback ``on_error(task_id, **kwargs)``
    gets the failed task's id).  Others are called with their own
    arguments only.

    A task that raises :py:class:`~twistedq.exceptions.Retry`, or one of
    its ``autoretry_for`` exceptions, gives a RETRY outcome while the
    message's ``retries`` is below its ``max_retries`` (see
    :py:mod:`twistedq.retries`).

    An outcome document longer than ``max_result_size`` bytes (a return
    value, or an exception's message and traceback) becomes a FAILURE
    :py:class:`~twistedq.exceptions.ResultTooLarge` that names the task,
    the size and the limit; ``None`` means no limit.
    """

    def __init__(
        self,
        registry: TaskRegistry,
        loglevel: int = logging.INFO,
        soft_time_limit: float | None = None,
        max_result_size: int | None = DEFAULT_MAX_RESULT_SIZE,
    ) -> None:
        self.registry = registry
        self.loglevel = loglevel
        self.soft_time_limit = soft_time_limit
        self.max_result_size = max_result_size
        self._freed = False
        self._takes_extras: dict[Any, tuple[str, ...] | None] = {}
        #: Called after every task (Django closes stale connections there).
        self.after_task: Any = None

    def limits(self) -> dict[str, list[float | None]]:
        """
        Every task's ``[soft_time_limit, time_limit]``, for the daemon.
        """
        return {
            name: [
                getattr(function, "soft_time_limit", None),
                getattr(function, "time_limit", None),
            ]
            for name, function in self.registry.get_all().items()
        }

    def schedules(self) -> dict[str, dict[str, Any]]:
        """
        Every periodic task's schedule, for the daemon's scheduler.
        """
        return {
            name: task.schedule_spec() for name, task in self.registry.get_all_periodic().items()
        }

    def _arguments(self, function: Any, message: TaskMessage) -> dict[str, Any]:
        try:
            positional = self._takes_extras[function]
        except KeyError:
            positional = self._takes_extras[function] = _extras_taken(function)
        if positional is None:
            return message.kwargs
        extras = {
            "task_id": message.id,
            "task_name": message.task,
            "logfile": None,
            "loglevel": self.loglevel,
        }
        # An extra a positional argument fills is not passed again (an
        # errback's first parameter is the failed task's id, task_id).
        for name in positional[: len(message.args)]:
            extras.pop(name, None)
        extras.update(message.kwargs)
        return extras

    def run(self, body: bytes) -> bytes:
        """
        Run one encoded task message; never raises.
        """
        try:
            return self._run(body)
        finally:
            if self._freed:
                # The large value is gone: give its memory back to the system.
                self._freed = False
                _trim_memory()
            if self.after_task is not None:
                try:
                    self.after_task()
                except Exception:
                    logging.getLogger("twistedq").exception("after_task failed")

    def _run(self, body: bytes) -> bytes:
        try:
            message = TaskMessage.decode(body)
        except MessageError as e:
            return failure_document("", "", e, traceback="")
        try:
            function = self.registry[message.task]
        except KeyError as e:
            return failure_document(message.id, message.task, e, traceback="")
        if hooks.task_signals_connected():
            return self._call_with_hooks(message, function)
        return self._call(message, function)

    def _call(self, message: TaskMessage, function: Any, seen: list[Any] | None = None) -> bytes:
        """
        Call the task function of ``message``; its outcome document.  With
        ``seen``, what it returned or raised is appended to it.
        """
        soft = getattr(function, "soft_time_limit", None) or self.soft_time_limit
        try:
            with _soft_time_limit(soft):
                value = function(*message.args, **self._arguments(function, message))
        except (Exception, SystemExit) as e:
            if seen is not None:
                seen.append(e)
            return self.raised(message, function, e)
        if seen is not None:
            seen.append(value)
        if inspect.isawaitable(value) or isinstance(value, Deferred):
            if inspect.iscoroutine(value):
                value.close()
            elif isinstance(value, Deferred):
                value.addErrback(lambda failure: None)
            return failure_document(
                message.id,
                message.task,
                TypeError(
                    f"task {message.task} returned {type(value).__name__}: a task that returns "
                    "a Deferred or is async must be marked on_reactor and the daemon started "
                    "with --reactor-tasks"
                ),
                traceback="",
            )
        return self.succeeded(message, value)

    def _call_with_hooks(self, message: TaskMessage, function: Any) -> bytes:
        """
        :py:meth:`_call`, with the task signals of :py:mod:`twistedq.hooks`
        sent around it: ``task_prerun``, then ``task_success``,
        ``task_failure`` or ``task_retry`` by its outcome, then
        ``task_postrun``.  A receiver's exception is logged, never part
        of the outcome.
        """
        args, kwargs = message.args, message.kwargs
        task_id = message.id
        hooks.task_prerun.send(function, task_id=task_id, task=function, args=args, kwargs=kwargs)
        seen: list[Any] = []
        document = self._call(message, function, seen)
        state = top_status(document)
        retval = seen[0] if seen else None
        if state == RETRY:
            hooks.task_retry.send(function, task_id=task_id, reason=retval, retries=message.retries)
        elif state == FAILURE:
            error = retval if isinstance(retval, BaseException) else None
            traceback = error.__traceback__ if error is not None else None
            if isinstance(error, Retry):  # out of retries: it failed with the cause
                retval = error = retry_cause(message, error)
                traceback = error.__traceback__ or traceback
            hooks.task_failure.send(
                function,
                task_id=task_id,
                exception=error,
                args=args,
                kwargs=kwargs,
                traceback=traceback,
            )
        else:
            hooks.task_success.send(function, task_id=task_id, result=retval)
        hooks.task_postrun.send(
            function,
            task_id=task_id,
            task=function,
            args=args,
            kwargs=kwargs,
            retval=retval,
            state=state,
        )
        return document

    def succeeded(self, message: TaskMessage, value: Any) -> bytes:
        """
        The outcome of a task that returned ``value``, within the limit.
        """
        document = outcome_of(message, value)
        limit = self.max_result_size
        if limit is not None and len(document) > limit:
            return self._too_large(message, len(document), f"returned a {type(value).__name__}")
        return document

    def _too_large(self, message: TaskMessage, size: int, what: str, traceback: str = "") -> bytes:
        limit = self.max_result_size
        assert limit is not None
        self._freed = True
        logging.getLogger("twistedq").error(
            "Task %s[%s] %s: its outcome of %d bytes is over the result size limit of %d",
            message.task,
            message.id,
            what.split(":", 1)[0],
            size,
            limit,
        )
        return too_large_document(message.id, message.task, size, limit, what, traceback)

    def raised(
        self,
        message: TaskMessage,
        function: Any,
        error: BaseException,
        traceback: str | None = None,
    ) -> bytes:
        """
        The outcome of a task that raised ``error``: a RETRY when it asks
        for a retry and has retries left (the message's ``retries`` is
        below its ``max_retries``), else a FAILURE.
        """
        if wants_retry(function, error):
            document = retry_outcome(message, function, error, traceback)
        else:
            document = failure_document(message.id, message.task, error, traceback)
        limit = self.max_result_size
        if limit is not None and len(document) > limit:
            # The frames, without the message that made it too large.
            frames = "".join(traceback_module.format_tb(error.__traceback__))
            if not frames and traceback:
                frames = traceback
            return self._too_large(message, len(document), described_exception(error), frames)
        return document


def retry_cause(message: TaskMessage, error: Retry) -> BaseException:
    """
    The exception a task that asked to retry with no retries left failed
    with, as its outcome stores it: the one it retried for, else
    :py:class:`~twistedq.exceptions.MaxRetriesExceededError`.
    """
    if error.exc is not None:
        return error.exc
    return MaxRetriesExceededError(
        f"task {message.task}[{message.id}] asked to retry after its "
        f"{message.retries} retries, its max_retries"
    )


class ChildLocator(amp.CommandLocator):
    """
    The child's AMP responders.
    """

    def __init__(
        self, runner: TaskRunner, stop: Any, resident: Callable[[], int] | None = None
    ) -> None:
        self.runner = runner
        self.stop = stop
        self.resident = resident or resident_kib

    @Hello.responder
    def hello(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "tasks": json.dumps(self.runner.limits()).encode(),
            "periodic": json.dumps(self.runner.schedules()).encode(),
        }

    @RunTasks.responder
    def run_tasks(
        self, bodies: bytes, max_rss: int | None = None, max_result_size: int | None = None
    ) -> dict[str, Any]:
        """
        Run a batch in order.  With ``max_rss``, stop after a task that
        leaves this process above it (KiB), before the next one: the
        answer then holds fewer outcomes than bodies, and the daemon runs
        the rest on another child.
        """
        run = self.runner.run
        self.runner.max_result_size = max_result_size
        records = unpack(bodies)
        outcomes = []
        rss = None
        for index, body in enumerate(records):
            outcomes.append(run(body))
            if max_rss and index < len(records) - 1:
                rss = self.resident()
                if rss > max_rss:
                    break
                rss = None
        return {"outcomes": pack(outcomes), "rss": self.resident() if rss is None else rss}

    @Shutdown.responder
    def shutdown(self) -> dict[str, Any]:
        self.stop()
        return {}


class _PipeWriter:
    """
    The transport of the child's AMP connection: blocking writes to a file
    descriptor.
    """

    disconnecting = False

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]

    def writeSequence(self, data: list[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        self.disconnecting = True

    def getPeer(self) -> str:
        return "twistedq daemon"

    def getHost(self) -> str:
        return f"child process {os.getpid()}"


def serve(protocol: amp.AMP, in_fd: int, out_fd: int, running: list[bool]) -> None:
    """
    Serve AMP on two file descriptors with blocking reads, in the calling
    thread, until the daemon closes the pipe or ``running[0]`` turns false.

    No reactor runs in the child's main thread: tasks run here, where signal
    handlers work, and a task may use the blocking client, whose reactor
    then runs in a thread of its own.
    """
    protocol.makeConnection(_PipeWriter(out_fd))
    reason: Failure = Failure(ConnectionDone("the daemon closed the pipe"))
    while running[0]:
        try:
            data = os.read(in_fd, 1 << 16)
        except InterruptedError:
            continue
        if not data:
            break
        protocol.dataReceived(data)
    protocol.connectionLost(reason)


def main(argv: list[str] | None = None) -> None:
    """
    Import the task modules and serve the daemon until it goes away.
    """
    parser = argparse.ArgumentParser(prog="twistedq.worker.child")
    parser.add_argument("--name", default="Process")
    parser.add_argument("--tasks", action="append", default=[])
    parser.add_argument("--soft-time-limit", type=float, default=None)
    parser.add_argument("--parent", type=int, default=None)
    parser.add_argument("--loglevel", choices=sorted(LOG_LEVELS), default="INFO")
    options = parser.parse_args(argv)
    if options.parent is not None:
        die_with_parent(options.parent)

    context.set_current_child(options.name)
    multiprocessing.current_process().name = options.name
    level = LOG_LEVELS[options.loglevel]
    logging.basicConfig(stream=sys.stderr, level=level, format=SEED_FORMAT)
    runner = TaskRunner(tasks, soft_time_limit=options.soft_time_limit, loglevel=level)
    if os.environ.get("DJANGO_SETTINGS_MODULE"):
        import django
        from django.db import close_old_connections

        django.setup()
        tasks.autodiscover()
        # As after a request: no connection outlives its welcome.
        runner.after_task = close_old_connections
    import_task_modules(options.tasks)
    hooks.worker_process_init.send(options.name)
    running = [True]

    def stop() -> None:
        running[0] = False

    serve(amp.AMP(locator=ChildLocator(runner, stop)), AMP_IN_FD, AMP_OUT_FD, running)


if __name__ == "__main__":
    main()
