"""
Tasks that run on the daemon's reactor instead of in a child: I/O-bound
task code that returns a Deferred or is an ``async def`` coroutine, marked
``on_reactor`` (``Task.on_reactor = True`` or ``@task(on_reactor=True)``)
and enabled with ``twistd twistedq --reactor-tasks``.

Their hard time limit cancels the Deferred (or coroutine); the task then
fails with :py:class:`~twistedq.exceptions.TimeLimitExceeded`.  They must
not block: a blocking call stops the whole daemon.
"""

from __future__ import annotations

import inspect
from typing import Any, cast

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from twistedq.exceptions import TimeLimitExceeded
from twistedq.message import TaskMessage
from twistedq.outcome import DEFAULT_MAX_RESULT_SIZE, failure_document
from twistedq.registry import TaskRegistry
from twistedq.worker.child import TaskRunner

__all__ = ["ReactorTaskRunner"]


class ReactorTaskRunner(TaskRunner):
    """
    Runs the registry's ``on_reactor`` tasks on the reactor.
    """

    def __init__(
        self,
        registry: TaskRegistry,
        clock: IReactorTime,
        time_limit: float | None = None,
        max_result_size: int | None = DEFAULT_MAX_RESULT_SIZE,
    ) -> None:
        TaskRunner.__init__(self, registry, max_result_size=max_result_size)
        self.clock = clock
        self.time_limit = time_limit

    def handles(self, name: str) -> bool:
        """
        Whether the task of that name runs on the reactor.
        """
        return bool(getattr(self.registry.get_all().get(name), "on_reactor", False))

    def run_message(self, message: TaskMessage) -> defer.Deferred[bytes]:
        """
        Run one task; fires with its outcome document, never fails.
        """
        function = self.registry[message.task]
        limit = getattr(function, "time_limit", None) or self.time_limit
        try:
            result = function(*message.args, **self._arguments(function, message))
        except Exception as e:
            return defer.succeed(self.raised(message, function, e))
        if inspect.iscoroutine(result):
            d: defer.Deferred[Any] = defer.Deferred.fromCoroutine(result)
        elif isinstance(result, defer.Deferred):
            d = result
        else:
            d = defer.succeed(result)
        if limit:
            d.addTimeout(limit, self.clock)

        def failed(failure: Failure) -> bytes:
            if failure.check(defer.TimeoutError, defer.CancelledError):
                error: BaseException = TimeLimitExceeded(
                    f"task {message.task} ran past its time limit of {limit} s"
                )
                return failure_document(message.id, message.task, error, traceback="")
            error = cast(BaseException, failure.value)  # a Failure always holds one
            return self.raised(message, function, error, failure.getTraceback())

        return d.addCallbacks(lambda value: self.succeeded(message, value), failed)
