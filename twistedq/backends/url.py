"""
Choosing a result store from a URL.

This module names every store, so nothing below it imports it: the stores
import :py:mod:`twistedq.backends.base`, and the composition roots (the
daemon's ``makeService``, the client) import this.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from twistedq.backends.base import DEFAULT_RESULT_TTL, BackendURLError, IResultBackend

__all__ = ["backend_from_url"]


def backend_from_url(url: str, reactor: Any, ttl: int = DEFAULT_RESULT_TTL) -> IResultBackend:
    """
    Build the backend a URL names: ``redis://host:port/db``,
    ``redis+sentinel://host:port,host:port,host:port/name/db`` (the primary
    the Redis sentinels name),
    ``sqlite:///path/to/file.sqlite3`` (``sqlite://`` alone means
    ``twistedq-results.sqlite3`` in the working directory),
    ``memcached://host:port``, ``tyrant://host:port`` (Tokyo Tyrant),
    ``django://[alias]`` or ``memory://`` (a
    new store in this process's memory, for tests and demos).

    :raises BackendURLError: the URL names no known backend.
    """
    scheme = urlsplit(url).scheme
    if scheme in ("redis", "redis+sentinel"):
        from twistedq.backends.redis import RedisBackend

        return RedisBackend.from_url(url, reactor, ttl=ttl)
    if scheme == "memcached":
        from twistedq.backends.memcached import MemcachedBackend

        return MemcachedBackend.from_url(url, reactor, ttl=ttl)
    if scheme == "tyrant":
        from twistedq.backends.tyrant import TyrantBackend

        return TyrantBackend.from_url(url, reactor, ttl=ttl)
    if scheme == "django":
        from twistedq.contrib.django.store import DjangoBackend

        return DjangoBackend.from_url(url, reactor, ttl=ttl)
    if scheme == "memory":
        from twistedq.backends.memory import MemoryBackend

        return MemoryBackend.from_url(url, reactor, ttl=ttl)
    if scheme == "sqlite":
        from twistedq.backends.sqlite import SQLiteBackend

        return SQLiteBackend.from_url(url, reactor, ttl=ttl)
    raise BackendURLError(
        f"unknown result backend {url!r}: use redis://host:port/db, "
        "redis+sentinel://host:port,host:port,host:port/name/db, sqlite:///path, "
        "memcached://host:port, tyrant://host:port, django:// (the Django project's database) or memory://"
    )
