"""
The blocking client reads a memcached store in the calling thread: an
outcome, a wait for one, a taskset's progress and its values, with no
reactor thread (a Redis store: see test_redis_blocking_reads).
"""

from __future__ import annotations

import threading
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.servers import server_url
from twistedq.backends.base import OutcomeRecord
from twistedq.backends.blocking import blocking_reader_from_url
from twistedq.backends.memcached_blocking import PymemcacheStore
from twistedq.backends.redis_blocking import RedisBlockingReader
from twistedq.client import Client
from twistedq.conf import Settings
from twistedq.message import new_task_id
from twistedq.outcome import failure_document, pending_document, success_document
from twistedq.result import AsyncResult, TaskSetResult


class NoReactorThread:
    """
    A reactor thread that fails the test when anything is run on it.
    """

    def __init__(self) -> None:
        self.calls: list[Any] = []

    @property
    def reactor(self) -> Any:
        raise AssertionError("the reactor thread's reactor was asked for")

    def call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(function)
        raise AssertionError(f"{function} was run on the reactor thread")


class BlockingReadsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.url = server_url("TWISTEDQ_TEST_MEMCACHED_URL")
        self.thread = NoReactorThread()
        self.client = Client(
            Settings(result_backend=self.url),
            thread=self.thread,  # type: ignore[arg-type]
        )
        self.addCleanup(self.client.close)
        self.store = PymemcacheStore.from_url(self.url)
        self.addCleanup(self.store.close)

    def test_outcomes(self) -> None:
        """
        A success, a failure, a pending record and an unknown id read
        through AsyncResult, without the reactor thread.
        """
        ok, bad, sent, unknown = (new_task_id() for _ in range(4))
        self.store.store_results(
            [
                OutcomeRecord(ok, success_document(ok, "t", {"n": 1})),
                OutcomeRecord(bad, failure_document(bad, "t", KeyError("k"), "Traceback")),
            ]
        )
        self.store.mark_sent([(sent, pending_document(sent, "t"))])
        self.assertEqual(AsyncResult(ok, self.client).get(timeout=5), {"n": 1})
        self.assertRaises(KeyError, AsyncResult(bad, self.client).get, timeout=5)
        self.assertTrue(AsyncResult(sent, self.client).queued())
        self.assertFalse(AsyncResult(unknown, self.client).known())
        self.assertEqual(self.thread.calls, [])

    def test_wait(self) -> None:
        """
        ``get()`` waits for an outcome stored later by another writer, and
        times out on one that never comes.
        """
        later, never = new_task_id(), new_task_id()
        writer = threading.Timer(
            0.3,
            self.store.store_results,
            [[OutcomeRecord(later, success_document(later, "t", 7))]],
        )
        writer.start()
        self.addCleanup(writer.join)
        self.assertEqual(AsyncResult(later, self.client).get(timeout=30), 7)
        self.assertRaises(TimeoutError, AsyncResult(never, self.client).get, timeout=0.2)
        self.assertEqual(self.thread.calls, [])

    def test_taskset(self) -> None:
        """
        A taskset's progress and its values are read without the reactor
        thread.
        """
        taskset, a, b = new_task_id(), new_task_id(), new_task_id()
        self.store.create_taskset(taskset, 2)
        result = TaskSetResult(taskset, [AsyncResult(a), AsyncResult(b)], self.client)
        self.assertEqual(result.completed_count(), 0)
        self.store.store_results(
            [
                OutcomeRecord(a, success_document(a, "t", 1), taskset),
                OutcomeRecord(b, success_document(b, "t", 2), taskset),
            ]
        )
        self.assertTrue(result.successful())
        self.assertEqual(result.join(timeout=5), [1, 2])
        self.assertEqual(self.thread.calls, [])


class ChoiceTests(SynchronousTestCase):
    def test_which_stores(self) -> None:
        """
        memcached and Redis have a blocking reader; the other stores are
        read on the reactor thread.
        """
        reader = blocking_reader_from_url("memcached://127.0.0.1:11299", timeout=3.0)
        self.assertIsInstance(reader, PymemcacheStore)
        self.assertEqual(reader.timeout, 3.0)  # type: ignore[union-attr]
        redis = blocking_reader_from_url("redis://:pw@127.0.0.1:6399/2", timeout=4.0)
        self.assertIsInstance(redis, RedisBlockingReader)
        self.assertEqual((redis.url, redis.timeout), ("redis://127.0.0.1:6399/2", 4.0))  # type: ignore[union-attr]
        for url in ("sqlite://", "django://", "tyrant://h:1978"):
            self.assertIsNone(blocking_reader_from_url(url, timeout=3.0))
