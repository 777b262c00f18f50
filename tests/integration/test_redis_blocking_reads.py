"""
The blocking client reads a Redis store in the calling thread
(:py:class:`~twistedq.backends.redis_blocking.RedisBlockingReader`): a
ready outcome and a taskset's progress cost no hop to the reactor thread;
a wait for an outcome not ready yet goes to the reactor thread, woken by
the store's notification (issue #14, get()'s wake-up).
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.servers import redis_url
from twistedq.backends.base import OutcomeRecord
from twistedq.backends.redis import RedisBackend
from twistedq.backends.redis_blocking import RedisBlockingReader, RedisReplyError
from twistedq.client import Client
from twistedq.conf import Settings
from twistedq.message import new_task_id
from twistedq.outcome import pending_document, success_document
from twistedq.reactor_thread import reactor_thread
from twistedq.result import AsyncResult, TaskSetResult


class CountingThread:
    """
    The process's reactor thread, counting what is run on it.
    """

    def __init__(self) -> None:
        self.calls: list[Any] = []

    @property
    def reactor(self) -> Any:
        return reactor_thread.reactor

    def call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(getattr(function, "__name__", function))
        return reactor_thread.call(function, *args, **kwargs)


def with_db(url: str, db: int) -> str:
    return url.rsplit("/", 1)[0] + f"/{db}"


class RedisReadsTests(SynchronousTestCase):
    def setUp(self) -> None:
        # A db of its own: the reader must select it.
        self.url = with_db(redis_url(), 3)
        self.store = RedisBackend.from_url(self.url, reactor_thread.reactor)
        reactor_thread.call(self.store.connect, timeout=10)
        self.addCleanup(reactor_thread.call, self.store.close, timeout=10)
        self.thread = CountingThread()
        self.client = Client(Settings(result_backend=self.url), thread=self.thread)  # type: ignore[arg-type]
        self.addCleanup(self.client.close)

    def write(self, method: str, *args: Any) -> Any:
        return reactor_thread.call(getattr(self.store, method), *args, timeout=10)

    def test_ready_outcomes_without_the_reactor_thread(self) -> None:
        """
        A stored outcome, a pending record and an unknown id are read in
        the calling thread: ``get()`` of a ready outcome runs nothing on
        the reactor thread.
        """
        ok, sent, unknown = new_task_id(), new_task_id(), new_task_id()
        self.write("store_results", [OutcomeRecord(ok, success_document(ok, "t", {"n": 1}))])
        self.write("mark_sent", [(sent, pending_document(sent, "t"))])
        self.assertEqual(AsyncResult(ok, self.client).get(timeout=5), {"n": 1})
        self.assertTrue(AsyncResult(sent, self.client).queued())
        self.assertFalse(AsyncResult(unknown, self.client).known())
        self.assertEqual(self.thread.calls, [])

    def test_taskset_without_the_reactor_thread(self) -> None:
        """
        A taskset's progress is read in the calling thread.
        """
        taskset, a, b = new_task_id(), new_task_id(), new_task_id()
        self.write("create_taskset", taskset, 2)
        self.write("store_results", [OutcomeRecord(a, success_document(a, "t", 1), taskset)])
        result = TaskSetResult(taskset, [AsyncResult(a), AsyncResult(b)], self.client)
        self.assertEqual(result.completed_count(), 1)
        self.assertIsNone(self.client.get_taskset(new_task_id()))
        self.assertEqual(self.thread.calls, [])

    def test_wait_is_woken_on_the_reactor_thread(self) -> None:
        """
        ``get()`` of an outcome not stored yet waits on the reactor thread
        and returns once another writer stores it; it times out on one
        that never comes.
        """
        later, never = new_task_id(), new_task_id()
        writer = threading.Timer(
            0.3,
            self.write,
            ["store_results", [OutcomeRecord(later, success_document(later, "t", 7))]],
        )
        writer.start()
        self.addCleanup(writer.join)
        self.assertEqual(AsyncResult(later, self.client).get(timeout=30), 7)
        self.assertIn("wait_outcome", self.thread.calls)
        self.assertRaises(TimeoutError, AsyncResult(never, self.client).get, timeout=0.2)


class ReaderTests(SynchronousTestCase):
    def reader(self, url: str | None = None, timeout: float = 5.0) -> RedisBlockingReader:
        reader = RedisBlockingReader.from_url(url or redis_url(), timeout=timeout)
        self.addCleanup(reader.close)
        return reader

    def test_threads_have_their_own_connection(self) -> None:
        """
        Threads reading at once each use a connection of their own, and
        each reads right.
        """
        reader = self.reader()
        ids = [new_task_id() for _ in range(8)]
        found: list[Any] = []

        def read() -> None:
            for _ in range(50):
                found.append(reader.get_results(ids))

        threads = [threading.Thread(target=read) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        self.assertEqual(found, [[None] * 8] * 200)
        self.assertEqual(len(reader._connections), 4)

    def test_connection_closed_by_the_server_is_replaced(self) -> None:
        """
        A connection the server closed (killed, or idle past its timeout)
        is replaced at the next read, once.
        """
        reader = self.reader()
        self.assertEqual(reader.get_results([new_task_id()]), [None])
        (connection_id,) = reader._request([[b"CLIENT", b"ID"]])
        killer = self.reader()
        (killed,) = killer._request([[b"CLIENT", b"KILL", b"ID", b"%d" % connection_id]])
        self.assertEqual(killed, 1)
        self.assertEqual(reader.get_results([new_task_id()]), [None])

    def test_error_answer(self) -> None:
        """
        An error answer raises RedisReplyError and the connection goes on.
        """
        reader = self.reader()
        self.assertRaises(RedisReplyError, reader._request, [[b"NOSUCHCOMMAND"]])
        self.assertEqual(reader.get_results([new_task_id()]), [None])

    def test_silent_server_times_out(self) -> None:
        """
        A server that accepts and never answers raises TimeoutError after
        the timeout given to the read, not the reader's own.
        """
        silent = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(silent.close)
        reader = self.reader(f"redis://127.0.0.1:{silent.getsockname()[1]}/0", timeout=30)
        started = time.monotonic()
        self.assertRaises(TimeoutError, reader.get_results, [new_task_id()], timeout=0.3)
        self.assertLess(time.monotonic() - started, 5)

    def test_refused(self) -> None:
        """
        A server that is not there raises ConnectionRefusedError.
        """
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        reader = self.reader(f"redis://127.0.0.1:{port}/0")
        self.assertRaises(ConnectionRefusedError, reader.get_results, [new_task_id()])
