"""
A store that goes away and comes back: the backend fails while it is
gone, within its timeout, and works again once it is back, without being
rebuilt.  Each test runs a private server on a port of its own.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from typing import Any

import txredisapi
from twisted.internet import defer, error, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, TestCase

from tests.integration.servers import free_port
from twistedq.backends.base import IResultBackend, OutcomeRecord
from twistedq.backends.memcached import MemcachedBackend
from twistedq.backends.redis import RedisBackend
from twistedq.message import new_task_id
from twistedq.outcome import success_document


class ReconnectContract:
    """
    ``start_server()`` starts the private server (again) on ``self.port``.
    """

    timeout = 60
    port: int
    #: What a write raises while the server is down.
    down_errors: tuple[type[BaseException], ...] = ()
    server: subprocess.Popen[bytes] | None = None

    def start_server(self) -> None:
        raise NotImplementedError

    def make_backend(self) -> IResultBackend:
        raise NotImplementedError

    def stop_server(self) -> None:
        if self.server is not None:
            self.server.kill()
            self.server.wait()
            self.server = None

    async def wait_port(self: Any) -> None:
        import socket

        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await deferLater(reactor, 0.05, lambda: None)

    async def store_one(self: Any, backend: IResultBackend) -> str:
        task_id = new_task_id()
        await backend.store_results([OutcomeRecord(task_id, success_document(task_id, "t", 1))])
        return task_id

    async def test_server_goes_away_and_comes_back(self: Any) -> None:
        """
        Writes fail (within the timeout, with an error) while the server is
        down, and succeed again once it is back.
        """
        self.port = free_port()
        self.start_server()
        self.addCleanup(self.stop_server)
        await self.wait_port()
        backend = self.make_backend()
        await backend.connect()
        self.addCleanup(backend.close)
        first = await self.store_one(backend)
        self.assertIsNotNone(await backend.get_result(first))

        self.stop_server()
        for _ in range(2):  # the write that sees the loss, and one issued later
            started = time.monotonic()
            with self.assertRaises(self.down_errors):
                await self.store_one(backend)
            self.assertLess(time.monotonic() - started, 6)
            await deferLater(reactor, 0.5, lambda: None)

        self.start_server()
        await self.wait_port()
        deadline = time.monotonic() + 30
        while True:
            try:
                task_id = await self.store_one(backend)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await deferLater(reactor, 0.2, lambda: None)
        self.assertIsNotNone(await backend.get_result(task_id))


class RedisReconnectTests(ReconnectContract, TestCase):
    down_errors = (txredisapi.ConnectionError, defer.TimeoutError)

    def start_server(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SkipTest("redis-server is not installed")
        self.server = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                tempfile.mkdtemp(),
            ],
            stdout=subprocess.DEVNULL,
        )

    def make_backend(self) -> IResultBackend:
        return RedisBackend("127.0.0.1", self.port, timeout=3)


class MemcachedReconnectTests(ReconnectContract, TestCase):
    down_errors = (defer.TimeoutError, error.ConnectionDone, error.ConnectionLost)

    def start_server(self) -> None:
        binary = shutil.which("memcached") or "/usr/bin/memcached"
        self.server = subprocess.Popen(
            [binary, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-u", "nobody"],
            stdout=subprocess.DEVNULL,
        )

    def make_backend(self) -> IResultBackend:
        return MemcachedBackend(reactor, "127.0.0.1", self.port, timeout=3)
