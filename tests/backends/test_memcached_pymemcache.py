"""
The memcached store's blocking side (pymemcache) keeps the result store
contract, alone and mixed with the Twisted side: what one writes the
other reads, byte for byte, tasksets counted alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from tests.backends.contract import BackendContract
from tests.integration.servers import server_url
from twistedq.backends.base import (
    BackendURLError,
    IResultBackend,
    OutcomeRecord,
    TasksetState,
)
from twistedq.backends.memcached import MemcachedBackend
from twistedq.backends.memcached_blocking import PymemcacheStore


def _server() -> tuple[str, int]:
    parts = urlsplit(server_url("TWISTEDQ_TEST_MEMCACHED_URL"))
    return parts.hostname or "127.0.0.1", parts.port or 11211


@implementer(IResultBackend)
class _Mixed:
    """
    A result backend whose writes go through ``writer`` and reads through
    ``reader``, either a Twisted store or a :py:class:`PymemcacheStore`
    (its blocking calls made in a thread).
    """

    def __init__(self, writer: Any, reader: Any) -> None:
        self.writer = writer
        self.reader = reader
        self.url = writer.url

    def _call(self, store: Any, name: str, *args: Any) -> defer.Deferred[Any]:
        if isinstance(store, PymemcacheStore):
            return deferToThread(getattr(store, name), *args)
        return getattr(store, name)(*args)  # type: ignore[no-any-return]

    @property
    def max_document_size(self) -> int:
        return self.writer.max_document_size  # type: ignore[no-any-return]

    @max_document_size.setter
    def max_document_size(self, most: int) -> None:
        self.writer.max_document_size = most

    def connect(self) -> defer.Deferred[None]:
        connecting = [s.connect() for s in {self.writer, self.reader} if hasattr(s, "connect")]
        return defer.gatherResults(connecting).addCallback(lambda _: None)

    def store_results(self, records: Sequence[OutcomeRecord]) -> defer.Deferred[None]:
        return self._call(self.writer, "store_results", list(records))

    def mark_sent(self, records: Sequence[tuple[str, bytes]]) -> defer.Deferred[None]:
        return self._call(self.writer, "mark_sent", list(records))

    def forget(self, task_ids: Sequence[str]) -> defer.Deferred[None]:
        return self._call(self.writer, "forget", list(task_ids))

    def create_taskset(self, taskset_id: str, total: int) -> defer.Deferred[None]:
        return self._call(self.writer, "create_taskset", taskset_id, total)

    def get_taskset(self, taskset_id: str) -> defer.Deferred[TasksetState | None]:
        return self._call(self.reader, "get_taskset", taskset_id)

    def get_result(self, task_id: str) -> defer.Deferred[bytes | None]:
        return self._call(self.reader, "get_result", task_id)

    def get_results(self, task_ids: Sequence[str]) -> defer.Deferred[list[bytes | None]]:
        return self._call(self.reader, "get_results", list(task_ids))

    def close(self) -> defer.Deferred[None]:
        return defer.gatherResults(
            [self._call(store, "close") for store in {self.writer, self.reader}]
        ).addCallback(lambda _: None)


class PymemcacheContractTests(BackendContract, TestCase):
    """
    The blocking store alone.
    """

    large_items = False

    def make_backend(self, ttl: int) -> IResultBackend:
        store = PymemcacheStore(*_server(), ttl=ttl)
        return _Mixed(store, store)


class TwistedWritesPymemcacheReadsTests(BackendContract, TestCase):
    """
    What the daemon's Twisted store writes, the blocking store reads.
    """

    large_items = False

    def make_backend(self, ttl: int) -> IResultBackend:
        return _Mixed(
            MemcachedBackend(reactor, *_server(), ttl=ttl), PymemcacheStore(*_server(), ttl=ttl)
        )


class PymemcacheWritesTwistedReadsTests(BackendContract, TestCase):
    """
    What the blocking store writes, the Twisted store reads.
    """

    large_items = False

    def make_backend(self, ttl: int) -> IResultBackend:
        return _Mixed(
            PymemcacheStore(*_server(), ttl=ttl), MemcachedBackend(reactor, *_server(), ttl=ttl)
        )


class PymemcacheStoreTests(SynchronousTestCase):
    def test_from_url(self) -> None:
        """
        ``memcached://host:port`` names the server; the port defaults to
        11211; a port that is not a number is refused.
        """
        store = PymemcacheStore.from_url("memcached://cache.local:11300", ttl=60, timeout=2.0)
        self.assertEqual(
            (store.server, store.ttl, store.timeout, store.url),
            (("cache.local", 11300), 60, 2.0, "memcached://cache.local:11300"),
        )
        self.assertEqual(PymemcacheStore.from_url("memcached://cache.local").server[1], 11211)
        self.assertRaises(BackendURLError, PymemcacheStore.from_url, "memcached://h:port")

    def test_limit_read_from_the_server(self) -> None:
        """
        The largest document is the server's ``item_size_max`` less room
        for the key, as on the Twisted side.
        """
        store = PymemcacheStore(*_server())
        self.addCleanup(store.close)
        settings = store._client().stats("settings")
        self.assertEqual(store.max_document_size, int(settings[b"item_size_max"]) - 512)

    def test_new_pool_after_fork(self) -> None:
        """
        A process forked after the pool was made makes its own instead of
        sharing the parent's connections.
        """
        import os

        store = PymemcacheStore(*_server())
        self.addCleanup(store.close)
        pool = store._client()
        self.assertIs(store._client(), pool)
        self.patch(os, "getpid", lambda: -1)
        self.assertIsNot(store._client(), pool)
