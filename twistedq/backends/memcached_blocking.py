"""
The memcached store's blocking side, on pymemcache's pooled client
(:py:class:`pymemcache.client.base.PooledClient`, as Django's own cache
backend uses it): a Django process reads outcomes and taskset progress
from ``memcached://host:port`` in the calling thread, without the
client's reactor thread.

It reads and writes the items of the Twisted store
(:py:class:`twistedq.backends.memcached.MemcachedBackend`): the same keys
(:py:func:`~twistedq.backends.memcached.memcached_key`), the documents as
bytes with flags 0, and taskset counters as ASCII digits, so each side
reads what the other wrote.  Besides the reads it has the result writes
(outcomes, pending records, tasksets, forgetting) with the Twisted
store's limits; claims, leases and periodic state stay on the Twisted
side, in the daemon.

A request that finds the server down or silent raises what pymemcache
raises: :py:class:`ConnectionRefusedError` (any :py:class:`OSError`),
:py:class:`TimeoutError` after the store's timeout,
:py:class:`pymemcache.exceptions.MemcacheError`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from urllib.parse import urlsplit

from pymemcache.client.base import PooledClient  # type: ignore[import-untyped]
from pymemcache.exceptions import MemcacheServerError  # type: ignore[import-untyped]

from twistedq.backends.base import (
    DEFAULT_RESULT_TTL,
    BackendURLError,
    OutcomeRecord,
    StoreRefused,
    TasksetState,
)
from twistedq.backends.limits import check_sizes
from twistedq.backends.memcached import (
    DEFAULT_MAX_ITEM,
    ITEM_ROOM,
    KEY_PREFIX,
    memcached_key,
    taskset_key_part,
)

__all__ = ["PymemcacheStore"]

#: How many keys one multi-get asks for, as the Twisted store does.
_KEYS_PER_GET = 100


class PymemcacheStore:
    """
    Outcomes in memcached, read and written in the calling thread through
    a pool of connections shared by the process's threads (one made per
    thread that waits for one, none kept after a fork: a process forked
    from one that used the pool makes its own).

    :ivar url: ``memcached://host:port``.
    :ivar max_document_size: the largest document written, in bytes: the
        server's ``item_size_max`` less 512 bytes, read at the first write
        (1 MiB less 512 where the server does not tell it), unless given.
    :ivar notifies: memcached does not announce new outcomes: a wait reads
        again.
    """

    notifies = False

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 11211,
        ttl: int = DEFAULT_RESULT_TTL,
        prefix: str = KEY_PREFIX,
        max_document_size: int | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.url = f"memcached://{host}:{port}"
        self.server = (host, port)
        self.ttl = ttl
        self.prefix = prefix
        self.timeout = timeout
        self._max_given = max_document_size
        self._max_read: int | None = None
        self._lock = threading.Lock()
        self._pool: PooledClient | None = None
        self._pid = 0

    @classmethod
    def from_url(
        cls, url: str, ttl: int = DEFAULT_RESULT_TTL, timeout: float = 10.0
    ) -> PymemcacheStore:
        """
        Build from ``memcached://host:port``.

        :raises BackendURLError: the port is not a number.
        """
        parts = urlsplit(url)
        try:
            port = parts.port or 11211
        except ValueError:
            raise BackendURLError(f"bad memcached URL {url!r}") from None
        return cls(parts.hostname or "127.0.0.1", port, ttl, timeout=timeout)

    @property
    def max_document_size(self) -> int:
        if self._max_given is not None:
            return self._max_given
        if self._max_read is None:
            settings = self._client().stats("settings")
            size = settings.get(b"item_size_max")
            self._max_read = int(size) - ITEM_ROOM if size is not None else DEFAULT_MAX_ITEM
        return self._max_read

    @max_document_size.setter
    def max_document_size(self, most: int) -> None:
        self._max_given = most

    def _client(self) -> PooledClient:
        """
        The pool of this process, made at first use and again after a fork.
        """
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                self._pool = PooledClient(
                    self.server,
                    connect_timeout=self.timeout,
                    timeout=self.timeout,
                    no_delay=True,
                    default_noreply=False,
                )
                self._pid = os.getpid()
            return self._pool

    def _key(self, *parts: str) -> bytes:
        return memcached_key(self.prefix, *parts)

    # reads

    def get_results(self, task_ids: Sequence[str]) -> list[bytes | None]:
        """
        The stored documents of these tasks, in order, :py:obj:`None`
        where there is none.
        """
        keys = [self._key("result", task_id) for task_id in task_ids]
        found: dict[bytes, bytes] = {}
        client = self._client()
        for start in range(0, len(keys), _KEYS_PER_GET):
            found.update(client.get_many(keys[start : start + _KEYS_PER_GET]))
        return [found.get(key) for key in keys]

    def get_result(self, task_id: str) -> bytes | None:
        """
        The stored document of one task, or :py:obj:`None`.
        """
        return self.get_results([task_id])[0]

    def get_taskset(self, taskset_id: str) -> TasksetState | None:
        """
        A taskset's progress, in one multi-get, or :py:obj:`None` when the
        store does not know it.
        """
        taskset = taskset_key_part(taskset_id)
        keys = [self._key("taskset", taskset, name) for name in ("total", "done", "failed")]
        found = self._client().get_many(keys)
        total, done, failed = (found.get(key) for key in keys)
        if total is None:
            return None
        return TasksetState(int(total), int(done or 0), int(failed or 0))

    # writes

    def store_results(self, records: Sequence[OutcomeRecord]) -> None:
        """
        Store outcomes, each counted once in its taskset.

        :raises StoreRefused: a document is larger than the store takes;
            nothing of the batch was written.
        """
        check_sizes(
            ((record.task_id, record.document) for record in records),
            self.max_document_size,
            self.url,
        )
        client = self._client()
        documents = {self._key("result", r.task_id): r.document for r in records}
        try:
            client.set_many(documents, expire=self.ttl)
        except MemcacheServerError as e:
            if "too large" not in str(e):
                raise
            # The server does not say which: the largest, surely.
            largest = max(records, key=lambda record: len(record.document))
            raise StoreRefused(
                f"{self.url} refused the outcome of task {largest.task_id}"
                f" ({len(largest.document)} bytes): {e}",
                largest.task_id,
            ) from None
        for record in records:
            if record.taskset is not None:
                self._count(client, record.taskset, record.task_id, record.failed)

    def _count(self, client: PooledClient, taskset_id: str, task_id: str, failed: bool) -> None:
        """
        Count a finished subtask once: only the first ``add`` of its guard
        key raises the counters.
        """
        taskset = taskset_key_part(taskset_id)
        if not client.add(self._key("member", taskset, task_id), b"1", expire=self.ttl):
            return
        for counter in ["done", "failed"] if failed else ["done"]:
            key = self._key("taskset", taskset, counter)
            if client.incr(key, 1) is None and not client.add(key, b"1", expire=self.ttl):
                client.incr(key, 1)

    def mark_sent(self, records: Sequence[tuple[str, bytes]]) -> None:
        """
        Write pending documents where nothing is stored yet.

        :raises StoreRefused: a document is larger than the store takes.
        """
        check_sizes(records, self.max_document_size, self.url)
        client = self._client()
        for task_id, document in records:
            client.add(self._key("result", task_id), document, expire=self.ttl)

    def forget(self, task_ids: Sequence[str]) -> None:
        """
        Delete the stored outcomes of these tasks.
        """
        if task_ids:
            self._client().delete_many([self._key("result", task_id) for task_id in task_ids])

    def create_taskset(self, taskset_id: str, total: int) -> None:
        """
        Record a taskset of ``total`` subtasks.
        """
        key = self._key("taskset", taskset_key_part(taskset_id), "total")
        self._client().set(key, b"%d" % total, expire=self.ttl)

    def close(self) -> None:
        """
        Close the pool's connections; the next request opens new ones.
        """
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None and self._pid == os.getpid():
            pool.close()
