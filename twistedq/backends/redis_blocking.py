"""
The Redis store's blocking reader: the blocking client reads outcomes and
taskset progress from ``redis://`` in the calling thread, over a plain
socket speaking RESP, without a hop to its reactor thread (the reactor
path costs about 0.2 ms more per read, and more on a busy machine).

It reads the keys the Twisted store
(:py:class:`twistedq.backends.redis.RedisBackend`) writes: the outcome of
a task at ``<prefix><task id>``, a taskset's total at
``<prefix>taskset:<id>`` and its finished and failed members in the sets
``...:done`` and ``...:failed``.  Waiting stays with the reactor thread,
which holds the subscription to the store's notifications: a ``get()``
reads here first and waits there only when the outcome is not ready.

Each thread has its own connection, made at its first read (and again in
a process forked after it).  A request that finds the server down or
silent raises :py:class:`OSError` (:py:class:`ConnectionRefusedError`,
:py:class:`TimeoutError` after the timeout); an error answer raises
:py:class:`RedisReplyError`.  A connection the server closed while idle
is replaced once, at the next read.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Sequence
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

from twistedq.backends.base import BackendURLError, TasksetState

__all__ = ["RESULT_PREFIX", "RedisBlockingReader", "RedisReplyError"]

#: The key prefix of :py:class:`~twistedq.backends.redis.RedisBackend`.
RESULT_PREFIX = "twistedq:result:"


class RedisReplyError(Exception):
    """
    Redis answered a request with an error (``-ERR ...``).
    """


class _Connection:
    """
    One socket to Redis and its buffered reader.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader: BinaryIO = sock.makefile("rb")
        self.pid = os.getpid()
        self.used = False

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def _command(*args: bytes) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


def _reply(reader: BinaryIO) -> Any:
    """
    Read one RESP reply: bytes, int, None, or a list of them.

    :raises RedisReplyError: the reply is an error.
    :raises ConnectionError: the connection closed or sent no RESP.
    """
    line = reader.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("Redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = reader.read(size + 2)
        if len(data) != size + 2:
            raise ConnectionError("Redis closed the connection")
        return data[:-2]
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [_reply(reader) for _ in range(count)]
    if kind == b":":
        return int(rest)
    if kind == b"+":
        return rest
    if kind == b"-":
        raise RedisReplyError(rest.decode("utf-8", "replace"))
    raise ConnectionError(f"not a Redis reply: {line[:50]!r}")


class RedisBlockingReader:
    """
    Outcomes in Redis, read in the calling thread.

    :ivar url: ``redis://host:port/db``, password removed.
    :ivar notifies: the store announces new outcomes: a wait is better
        done on the reactor thread's subscription than by reading again.
    """

    notifies = True

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 6379,
        db: int = 0,
        password: str | None = None,
        prefix: str = RESULT_PREFIX,
        timeout: float = 10.0,
    ) -> None:
        self.url = f"redis://{host}:{port}/{db}"
        self.server = (host, port)
        self.db = db
        self.timeout = timeout
        self.prefix = prefix
        self._password = password
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[_Connection] = []

    @classmethod
    def from_url(cls, url: str, timeout: float = 10.0) -> RedisBlockingReader:
        """
        Build from ``redis://[:password@]host[:port][/db]``.

        :raises BackendURLError: the port or the db is not a number.
        """
        parts = urlsplit(url)
        try:
            db = int(parts.path[1:] or 0)
            port = parts.port or 6379
        except ValueError:
            raise BackendURLError(f"bad redis URL {url!r}") from None
        password = unquote(parts.password) if parts.password else None
        return cls(parts.hostname or "127.0.0.1", port, db, password, timeout=timeout)

    # reads

    def get_results(
        self, task_ids: Sequence[str], timeout: float | None = None
    ) -> list[bytes | None]:
        """
        The stored documents of these tasks, in order, :py:obj:`None`
        where there is none: one ``MGET``.

        :param timeout: wait for the server at most this long, if less
            than the reader's own timeout.
        """
        if not task_ids:
            return []
        keys = [(self.prefix + task_id).encode("utf-8") for task_id in task_ids]
        (found,) = self._request([[b"MGET", *keys]], timeout)
        return list(found)

    def get_taskset(self, taskset_id: str) -> TasksetState | None:
        """
        A taskset's progress in one round trip (three pipelined
        requests), or :py:obj:`None` if unknown.
        """
        key = f"{self.prefix}taskset:{taskset_id}".encode("utf-8", "surrogatepass")
        total, completed, failed = self._request(
            [[b"GET", key], [b"SCARD", key + b":done"], [b"SCARD", key + b":failed"]]
        )
        if total is None:
            return None
        return TasksetState(int(total), int(completed), int(failed))

    # connections

    def _request(self, commands: list[list[bytes]], timeout: float | None = None) -> list[Any]:
        """
        Send pipelined commands and read their replies, on this thread's
        connection, waiting at most ``timeout`` (by default, and at most,
        the reader's); a connection that had served before and fails is
        replaced once (reads can be repeated), unless it timed out.
        """
        payload = b"".join(_command(*command) for command in commands)
        wait = self.timeout if timeout is None else max(0.001, min(timeout, self.timeout))
        for attempt in (1, 2):
            connection = self._connection(wait)
            try:
                connection.sock.settimeout(wait)
                connection.sock.sendall(payload)
                replies = [_reply(connection.reader) for _ in commands]
            except RedisReplyError:
                raise
            except TimeoutError:
                self._drop(connection)  # a late answer would be read as the next one's
                raise
            except (OSError, ValueError):
                self._drop(connection)
                if attempt == 2 or not connection.used:
                    raise
                continue
            connection.used = True
            return replies
        raise AssertionError("unreachable")  # pragma: no cover

    def _connection(self, timeout: float) -> _Connection:
        connection: _Connection | None = getattr(self._local, "connection", None)
        if connection is not None and connection.pid == os.getpid():
            return connection
        sock = socket.create_connection(self.server, timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = _Connection(sock)
        try:
            if self._password is not None:
                sock.sendall(_command(b"AUTH", self._password.encode("utf-8")))
                _reply(connection.reader)
            if self.db:
                sock.sendall(_command(b"SELECT", str(self.db).encode("ascii")))
                _reply(connection.reader)
        except BaseException:
            connection.close()
            raise
        self._local.connection = connection
        with self._lock:
            self._connections.append(connection)
        return connection

    def _drop(self, connection: _Connection) -> None:
        if getattr(self._local, "connection", None) is connection:
            self._local.connection = None
        with self._lock:
            if connection in self._connections:
                self._connections.remove(connection)
        connection.close()

    def close(self) -> None:
        """
        Close every thread's connection; the next read opens a new one.
        """
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            if connection.pid == os.getpid():
                connection.close()
        self._local = threading.local()
