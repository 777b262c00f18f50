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
from types import SimpleNamespace
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.integration.servers import redis_url
from twistedq.backends.base import OutcomeRecord
from twistedq.backends.redis import RedisBackend
from twistedq.backends.redis_blocking import RESULT_PREFIX, RedisBlockingReader, RedisReplyError
from twistedq.client import Client
from twistedq.conf import Settings
from twistedq.message import new_task_id
from twistedq.outcome import Outcome, pending_document, success_document
from twistedq.result import AsyncResult


class HandingThread:
    """
    A reactor thread that runs nothing: it records each call and answers
    a wait with ``outcome`` (its Twisted client is a stand-in).
    """

    def __init__(self, outcome: Outcome | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.outcome = outcome

    @property
    def reactor(self) -> Any:
        raise AssertionError("the reactor thread's reactor was asked for")

    def call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        name = function.__name__
        if name == "_start":  # the Twisted half: a stand-in that waits
            return SimpleNamespace(wait_outcome=self.wait_outcome, shutdown_trigger=None)
        if name == "_close":
            return None
        self.calls.append((name, *args))
        if name != "wait_outcome":
            raise AssertionError(f"{function} was run on the reactor thread")
        return self.outcome

    def wait_outcome(self, task_id: str, timeout: float | None = None) -> Any:
        raise AssertionError("called, not run")


def with_db(url: str, db: int) -> str:
    return url.rsplit("/", 1)[0] + f"/{db}"


class CompatibleTests(TestCase):
    """
    The reader reads what the Twisted store wrote.
    """

    async def test_outcomes_and_tasksets(self) -> None:
        """
        An outcome, a pending record, an unknown id and a taskset's
        progress written by RedisBackend (in a db other than 0) read back.
        """
        url = with_db(redis_url(), 3)
        store = RedisBackend.from_url(url, reactor)
        await store.connect()
        self.addCleanup(store.close)
        reader = RedisBlockingReader.from_url(url)
        self.addCleanup(reader.close)
        ok, sent, unknown, taskset = (new_task_id() for _ in range(4))
        done = success_document(ok, "t", {"n": 1})
        pending = pending_document(sent, "t")
        await store.create_taskset(taskset, 2)
        await store.store_results([OutcomeRecord(ok, done, taskset)])
        await store.mark_sent([(sent, pending)])
        self.assertEqual(reader.get_results([ok, sent, unknown]), [done, pending, None])
        self.assertEqual(reader.get_taskset(taskset), (2, 1, 0))
        self.assertIsNone(reader.get_taskset(new_task_id()))


class ClientTests(SynchronousTestCase):
    """
    ``get()`` on Redis: read in the calling thread, waited for on the
    reactor thread only when not ready.
    """

    def setUp(self) -> None:
        self.url = redis_url()
        self.writer = RedisBlockingReader.from_url(self.url)
        self.addCleanup(self.writer.close)

    def client(self, thread: HandingThread, notify: bool = True) -> Client:
        client = Client(Settings(result_backend=self.url), thread=thread, notify=notify)  # type: ignore[arg-type]
        self.addCleanup(client.close)
        return client

    def put(self, task_id: str, document: bytes) -> None:
        key = (RESULT_PREFIX + task_id).encode()
        self.writer._request([[b"SET", key, document, b"EX", b"60"]])

    def test_ready_without_the_reactor_thread(self) -> None:
        """
        A ready outcome, a pending record and an unknown id are read with
        nothing run on the reactor thread.
        """
        thread = HandingThread()
        client = self.client(thread)
        ok, sent, unknown = new_task_id(), new_task_id(), new_task_id()
        self.put(ok, success_document(ok, "t", {"n": 1}))
        self.put(sent, pending_document(sent, "t"))
        self.assertEqual(AsyncResult(ok, client).get(timeout=5), {"n": 1})
        self.assertTrue(AsyncResult(sent, client).queued())
        self.assertFalse(AsyncResult(unknown, client).known())
        self.assertEqual(thread.calls, [])

    def test_not_ready_waits_on_the_reactor_thread(self) -> None:
        """
        An outcome not ready at the first read is waited for on the
        reactor thread (woken by the store's notification there), with
        what is left of the timeout.
        """
        task_id = new_task_id()
        self.put(task_id, pending_document(task_id, "t"))
        later = Outcome.from_bytes(task_id, success_document(task_id, "t", 7))
        thread = HandingThread(later)
        self.assertEqual(AsyncResult(task_id, self.client(thread)).get(timeout=30), 7)
        ((name, waited_id, left),) = thread.calls
        self.assertEqual((name, waited_id), ("wait_outcome", task_id))
        self.assertTrue(0 < left <= 30, left)

    def test_without_notification_polls_here(self) -> None:
        """
        With ``notify=False`` the wait reads again in the calling thread.
        """
        thread = HandingThread()
        never = new_task_id()
        client = self.client(thread, notify=False)
        self.assertRaises(TimeoutError, AsyncResult(never, client).get, timeout=0.2)
        self.assertEqual(thread.calls, [])


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
