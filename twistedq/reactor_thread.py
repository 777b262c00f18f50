"""
Twisted's reactor in a background thread, for blocking callers (Django
views, scripts), the way ``crochet`` does it.

The thread is started lazily, on first use, in the process that uses it, so
a process that imports twistedq and then forks (gunicorn ``--preload``)
starts its own thread in each worker.  A process forked after its parent
started the thread cannot use it (the thread did not survive the fork) and
gets a clear :py:obj:`ForkError`.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.python import threadable
from twisted.python.failure import Failure

__all__ = ["ForkError", "ReactorThread", "reactor_thread"]

T = TypeVar("T")


class ForkError(RuntimeError):
    """
    The blocking client was used in a process forked after its parent had
    started the reactor thread.
    """


class ReactorThread:
    """
    Runs the global reactor in a daemon thread and runs functions on it
    from other threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._started_here = False
        self._reactor: Any = None

    def _ensure_running(self) -> Any:
        with self._lock:
            pid = os.getpid()
            if self._pid == pid:
                return self._reactor
            if self._pid is not None:
                raise ForkError(
                    "twistedq's blocking client was used before os.fork() in "
                    f"process {self._pid}; its reactor thread does not exist in "
                    f"forked process {pid}. Use the client only after forking "
                    "(for gunicorn --preload: not at import time)."
                )
            from twisted.internet import reactor

            if reactor.running:
                if threadable.isInIOThread():
                    raise RuntimeError(
                        "the blocking client cannot wait on the reactor's own "
                        "thread; use twistedq.client.AsyncClient there"
                    )
            else:
                started = threading.Event()
                reactor.callWhenRunning(started.set)
                thread = threading.Thread(
                    target=reactor.run,
                    kwargs={"installSignalHandlers": False},
                    name="twistedq-reactor",
                    daemon=True,
                )
                thread.start()
                if not started.wait(30):
                    raise RuntimeError("the reactor thread did not start")
                self._started_here = True
                atexit.register(self._stop, reactor, thread)
            self._pid = pid
            self._reactor = reactor
            return reactor

    @staticmethod
    def _stop(reactor: Any, thread: threading.Thread) -> None:
        if reactor.running:
            reactor.callFromThread(reactor.stop)
            thread.join(5)

    @property
    def reactor(self) -> Any:
        """
        The running reactor (starting its thread if needed).
        """
        return self._ensure_running()

    def call(
        self, function: Callable[..., Any], *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> Any:
        """
        Run ``function(*args, **kwargs)`` on the reactor thread and wait for
        its result; a Deferred or coroutine result is waited for too.

        :raises TimeoutError: no result within ``timeout`` seconds; the
            Deferred is cancelled.
        """
        reactor = self._ensure_running()
        done = threading.Event()
        box: list[Any] = []
        running: list[defer.Deferred[Any]] = []

        def run() -> None:
            d = defer.maybeDeferred(function, *args, **kwargs)
            running.append(d)

            def finish(result: Any) -> None:
                box.append(result)
                done.set()

            d.addBoth(finish)

        def cancel() -> None:
            if running:
                running[0].cancel()

        reactor.callFromThread(run)
        if not done.wait(timeout):
            reactor.callFromThread(cancel)
            raise TimeoutError(f"no result within {timeout} s")
        result = box[0]
        if isinstance(result, Failure):
            result.raiseException()
        return result


#: The process-wide reactor thread.
reactor_thread = ReactorThread()
