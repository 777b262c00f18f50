"""
The dashboard for a threaded web framework (the Django app's views): the
same :py:class:`~twistedq.dashboard.watch.ClusterWatch`, run on the
blocking client's reactor thread (:py:mod:`twistedq.reactor_thread`) over
the client's own broker connection and result store, and read from
request threads.

A stream holds its request thread for as long as the page stays open:
count one worker thread per open dashboard.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from twisted.internet import defer

from twistedq.amqp.broker import Topology
from twistedq.backends.base import IScheduleStore
from twistedq.dashboard.actions import OperatorActions
from twistedq.dashboard.daemon import PATTERNS, control_client, operator_actions
from twistedq.dashboard.resources import failure_document
from twistedq.dashboard.watch import ClusterWatch, periodic_reader, queue_depth_reader
from twistedq.reactor_thread import ReactorThread, reactor_thread

if TYPE_CHECKING:
    from twistedq.client import AsyncClient, Client

__all__ = ["ThreadedDashboard", "sse_text"]

#: Seconds between keep-alive comments of an idle stream.
KEEP_ALIVE = 15.0
#: Messages a slow reader may fall behind before it is sent a new snapshot.
BACKLOG = 64


def sse_text(document: Any, event: str | None = None) -> bytes:
    """
    One Server-Sent Event carrying ``document`` as JSON.
    """
    head = f"event: {event}\n" if event else ""
    return (head + "data: " + json.dumps(document, separators=(",", ":")) + "\n\n").encode()


class _QueueWatcher:
    """
    A watcher (called on the reactor thread) handing messages to a request
    thread.
    """

    def __init__(self, watch: ClusterWatch) -> None:
        self.watch = watch
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()

    def send(self, message: dict[str, Any]) -> None:
        if self.messages.qsize() >= BACKLOG:
            # Too far behind: start again from a snapshot.
            while not self.messages.empty():
                self.messages.get_nowait()
            message = self.watch.snapshot()
        self.messages.put(message)

    def keep_alive(self) -> None:
        pass  # the request thread sends its own


def _periodic_names() -> list[str]:
    from twistedq.task import tasks

    return sorted(tasks.get_all_periodic())


class ThreadedDashboard:
    """
    The cluster's live state for request threads.

    :param client: the blocking client whose connection, store and reactor
        thread are used.
    """

    def __init__(self, client: Client, thread: ReactorThread = reactor_thread) -> None:
        self.client = client
        self.thread = thread
        self._lock = threading.Lock()
        self._watch: ClusterWatch | None = None
        self._async: AsyncClient | None = None
        self._actions_made: OperatorActions | None = None

    def _started(self) -> tuple[ClusterWatch, AsyncClient]:
        with self._lock:
            if self._watch is None or self._async is None:
                async_client = self.client.async_client
                self._watch = self.thread.call(self._build, async_client, timeout=30)
                self._async = async_client
            return self._watch, self._async

    def _build(self, async_client: AsyncClient) -> ClusterWatch:
        from twistedq.amqp.events import EventReceiver

        settings = async_client.settings
        connection = async_client.connection
        topology = Topology(exchange=settings.exchange, queue=settings.queue)
        backend = async_client.backend
        periodic = None
        if IScheduleStore.providedBy(backend):
            periodic = periodic_reader(IScheduleStore(backend), _periodic_names)
        return ClusterWatch(
            async_client.reactor,
            time.time,
            lambda on_events: EventReceiver(connection, settings.exchange, on_events, PATTERNS),
            backend=backend,
            queue_depths=queue_depth_reader(connection, topology),
            periodic=periodic,
        )

    def actions(self) -> OperatorActions:
        """
        The actions, as the daemon offers them; the Django views decide who
        may run them.
        """
        _, async_client = self._started()
        with self._lock:
            if self._actions_made is None:
                self._actions_made = self.thread.call(self._actions, async_client, timeout=30)
            return self._actions_made

    def _actions(self, async_client: AsyncClient) -> OperatorActions:
        settings = async_client.settings
        connection = async_client.connection
        backend = async_client.backend
        set_enabled = None
        if IScheduleStore.providedBy(backend):
            set_enabled = IScheduleStore(backend).set_periodic_enabled
        return operator_actions(
            "",
            lambda: async_client,
            connection,
            Topology(exchange=settings.exchange, queue=settings.queue),
            control_client(settings, async_client.reactor, connection),
            set_enabled,
        )

    def run(self, function: Any, *args: Any, timeout: float = 30.0) -> Any:
        """
        Call ``function(*args)`` on the reactor thread and wait for it.
        """
        self._started()
        return self.thread.call(function, *args, timeout=timeout)

    def snapshot(self) -> dict[str, Any]:
        """
        The state now, after one read of the queue depths, periodic tasks
        and tasksets.
        """
        watch, _ = self._started()

        def read() -> defer.Deferred[dict[str, Any]]:
            return watch.refresh().addCallback(lambda _: watch.snapshot())

        return self.thread.call(read, timeout=30)

    def failure(self, task_id: str, tracebacks: bool) -> dict[str, Any]:
        """
        A task's status as the dashboard's failure panel shows it.
        """
        return failure_document(self.client.get_outcome(task_id), tracebacks)

    def stream(self) -> Iterator[bytes]:
        """
        The Server-Sent Events of one page: the snapshot, then the changes,
        with a comment every :py:data:`KEEP_ALIVE` seconds; the watcher is
        removed when the response is closed (the client left).
        """
        watch, _ = self._started()
        watcher = _QueueWatcher(watch)
        self.thread.call(watch.watch, watcher, timeout=30)
        try:
            yield b"retry: 2000\n\n"
            while True:
                try:
                    message = watcher.messages.get(timeout=KEEP_ALIVE)
                except queue.Empty:
                    yield b": keep-alive\n\n"
                    continue
                yield sse_text(message, message["kind"])
        finally:
            self.thread.reactor.callFromThread(watch.unwatch, watcher)
