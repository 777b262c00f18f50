"""
Result stores the blocking client reads in the calling thread, without
its reactor thread.  :py:func:`blocking_reader_from_url` is the one place
that decides which stores have such a reader: today memcached, through
pymemcache (:py:mod:`twistedq.backends.memcached_blocking`), and Redis
(:py:mod:`twistedq.backends.redis_blocking`; waiting for a Redis outcome
that is not ready still happens on the reactor thread, woken by the
store's notification).  The others are read on the reactor thread,
through their Twisted store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol
from urllib.parse import urlsplit

from twistedq.backends.base import TasksetState

__all__ = ["BlockingReader", "blocking_reader_from_url"]


class BlockingReader(Protocol):
    """
    What the blocking client reads from a store, in the calling thread.
    """

    url: str
    #: Whether the store announces new outcomes (a wait for one is then
    #: done on the reactor thread, woken by the announcement).
    notifies: bool

    def get_results(self, task_ids: Sequence[str]) -> list[bytes | None]:
        """
        The stored documents of these tasks, in order, :py:obj:`None`
        where there is none.
        """

    def get_taskset(self, taskset_id: str) -> TasksetState | None:
        """
        A taskset's progress in one read, or :py:obj:`None` if unknown.
        """

    def close(self) -> None:
        """
        Close its connections; the next read opens new ones.
        """


def blocking_reader_from_url(url: str, timeout: float) -> BlockingReader | None:
    """
    The blocking reader of the store ``url`` names, or :py:obj:`None` when
    that store is read on the reactor thread.

    :param timeout: how long one request may wait for the store, in
        seconds.
    :raises twistedq.backends.base.BackendURLError: the URL names a store
        with a blocking reader but cannot be understood.
    """
    scheme = urlsplit(url).scheme
    if scheme == "memcached":
        from twistedq.backends.memcached_blocking import PymemcacheStore

        return PymemcacheStore.from_url(url, timeout=timeout)
    if scheme == "redis":
        from twistedq.backends.redis_blocking import RedisBlockingReader

        return RedisBlockingReader.from_url(url, timeout=timeout)
    return None
