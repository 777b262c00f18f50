"""
The stores' limits as their servers set them: each test runs a private
server, on a port of its own, configured with a small limit, so a value
over it costs little.  The store reads the limit when connecting and
refuses a larger document before sending it; where the server refuses one
itself (its limit lowered after the store connected), that refusal is a
StoreRefused too, and the store goes on serving.
"""

from __future__ import annotations

import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, TestCase

from tests.integration.servers import free_port
from twistedq.backends.base import ClaimState, OutcomeRecord, StoreRefused
from twistedq.backends.memcached import MemcachedBackend
from twistedq.backends.redis import RedisBackend
from twistedq.backends.sqlite import SQLiteBackend
from twistedq.message import new_task_id
from twistedq.outcome import success_document

MiB = 1024 * 1024


def document_of(size: int) -> tuple[str, bytes]:
    """
    A task id and a success document of about ``size`` bytes.
    """
    task_id = new_task_id()
    return task_id, success_document(task_id, "t", "x" * size)


class PrivateServer:
    """
    ``command(port)`` is the server's command line.
    """

    timeout = 60

    def command(self, port: int) -> list[str]:
        raise NotImplementedError

    async def start(self: Any) -> int:
        command = self.command(free_port())
        if shutil.which(command[0]) is None:
            raise SkipTest(f"{command[0]} is not installed")
        port = int(command[command.index("--port" if "--port" in command else "-p") + 1])
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL)

        def stop() -> None:
            server.kill()
            server.wait()

        self.addCleanup(stop)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return port
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await deferLater(reactor, 0.05, lambda: None)


class RedisLimitTests(PrivateServer, TestCase):
    def command(self, port: int) -> list[str]:
        return [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            tempfile.mkdtemp(),
            "--proto-max-bulk-len",
            "1mb",
        ]

    async def backend(self, port: int, **options: Any) -> RedisBackend:
        backend = RedisBackend("127.0.0.1", port, timeout=5, **options)
        await backend.connect()
        self.addCleanup(backend.close)
        return backend

    async def test_limit_read_from_the_server(self) -> None:
        """
        The store takes Redis's proto-max-bulk-len as its limit, and
        refuses a larger outcome, stored or committed, before sending it:
        the reads in flight beside it are answered right.
        """
        backend = await self.backend(await self.start())
        self.assertEqual(backend.max_document_size, MiB)
        small, small_doc = document_of(10)
        await backend.store_results([OutcomeRecord(small, small_doc)])
        big, big_doc = document_of(MiB)
        before = backend.get_result(small)
        refused = backend.store_results([OutcomeRecord(big, big_doc)])
        after = backend.get_result(small)
        self.assertEqual((await self.assertFailure(refused, StoreRefused)).task_id, big)
        self.assertEqual([await before, await after], [small_doc, small_doc])
        (claim,) = await backend.claim_tasks([big], 30)
        committed = backend.commit_outcomes([OutcomeRecord(big, big_doc)], [claim.token])
        self.assertEqual((await self.assertFailure(committed, StoreRefused)).task_id, big)
        self.assertEqual(await backend.get_results([big, small]), [None, small_doc])

    async def test_refused_by_the_server(self) -> None:
        """
        A value over the server's limit that the store sends anyway (its
        own limit set higher) is refused by Redis: a StoreRefused naming
        the task, and the store serves again afterwards.
        """
        backend = await self.backend(await self.start(), max_document_size=4 * MiB)
        big, big_doc = document_of(2 * MiB)
        refused = backend.store_results([OutcomeRecord(big, big_doc)])
        error = await self.assertFailure(refused, StoreRefused)
        self.assertEqual(error.task_id, big)
        self.assertIn("invalid bulk length", str(error))
        small, small_doc = document_of(10)
        deadline = time.monotonic() + 10
        while True:  # the server closed that connection; the pool opens another
            try:
                await backend.store_results([OutcomeRecord(small, small_doc)])
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(await backend.get_results([small, big]), [small_doc, None])

    async def test_limit_lowered_while_connected(self) -> None:
        """
        The server's limit lowered after the store connected: the first
        value over it is refused by Redis, and the store reads the limit
        again, so the next one is refused before it is sent.
        """
        port = await self.start()
        first = await self.backend(port)
        await first._redis.execute_command("CONFIG", "SET", "proto-max-bulk-len", str(4 * MiB))
        backend = await self.backend(port)
        self.assertEqual(backend.max_document_size, 4 * MiB)
        await first._redis.execute_command("CONFIG", "SET", "proto-max-bulk-len", str(MiB))
        big, big_doc = document_of(2 * MiB)
        refused = backend.store_results([OutcomeRecord(big, big_doc)])
        self.assertIn("invalid bulk length", str(await self.assertFailure(refused, StoreRefused)))
        deadline = time.monotonic() + 10
        while backend.max_document_size != MiB:
            self.assertLess(time.monotonic(), deadline, "the limit was not read again")
            await deferLater(reactor, 0.1, lambda: None)
        again = backend.store_results([OutcomeRecord(big, big_doc)])
        self.assertIn(
            "more than the 1048576 bytes", str(await self.assertFailure(again, StoreRefused))
        )


class MemcachedLimitTests(PrivateServer, TestCase):
    def command(self, port: int) -> list[str]:
        binary = shutil.which("memcached") or "/usr/bin/memcached"
        return [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-u", "nobody", "-I", "2m"]

    async def backend(self, port: int, **options: Any) -> MemcachedBackend:
        backend = MemcachedBackend(reactor, "127.0.0.1", port, timeout=5, **options)
        await backend.connect()
        self.addCleanup(backend.close)
        return backend

    async def test_limit_read_from_the_server(self) -> None:
        """
        The store takes memcached's item size (``-I``, here 2 MiB), less
        room for the key, as its limit: an outcome under it is stored
        whole, a larger one refused before it is sent.
        """
        backend = await self.backend(await self.start())
        self.assertEqual(backend.max_document_size, 2 * MiB - 512)
        fits, fits_doc = document_of(3 * MiB // 2)
        await backend.store_results([OutcomeRecord(fits, fits_doc)])
        self.assertEqual(await backend.get_result(fits), fits_doc)
        big, big_doc = document_of(2 * MiB)
        refused = backend.store_results([OutcomeRecord(big, big_doc)])
        self.assertEqual((await self.assertFailure(refused, StoreRefused)).task_id, big)

    async def test_refused_by_the_server(self) -> None:
        """
        A value over the server's item size that the store sends anyway
        (its own limit set higher) is refused by memcached: a StoreRefused
        naming the task, nothing stored, and the requests in flight beside
        it are answered on the same connection.
        """
        backend = await self.backend(await self.start(), max_document_size=8 * MiB)
        small, small_doc = document_of(10)
        await backend.store_results([OutcomeRecord(small, small_doc)])
        big, big_doc = document_of(3 * MiB)
        refused = backend.store_results([OutcomeRecord(big, big_doc)])
        beside = backend.get_result(small)
        error = await self.assertFailure(refused, StoreRefused)
        self.assertEqual(error.task_id, big)
        self.assertIn("too large", str(error))
        self.assertEqual(await beside, small_doc)
        self.assertEqual(await defer.gatherResults([backend.get_result(big)]), [None])


class SQLiteLimitTests(TestCase):
    async def backend(self, **options: Any) -> SQLiteBackend:
        backend = SQLiteBackend(f"{tempfile.mkdtemp()}/results.sqlite3", reactor, **options)
        await backend.connect()
        self.addCleanup(backend.close)
        return backend

    async def test_limit_read_from_sqlite(self) -> None:
        """
        The store takes SQLite's length limit, less room for the row, as
        its limit.
        """
        if not hasattr(sqlite3.Connection, "getlimit"):
            raise SkipTest("Python before 3.11 cannot read SQLite's limits")
        backend = await self.backend()
        self.assertEqual(backend.max_document_size, sqlite3.connect(":memory:").getlimit(0) - 512)

    async def test_refused_by_sqlite(self) -> None:
        """
        A value over SQLite's length limit that the store writes anyway
        (the limit lowered after it connected) is refused by SQLite: a
        StoreRefused naming the task, the transaction rolled back (the
        claim stays), and the store goes on serving.
        """
        if not hasattr(sqlite3.Connection, "setlimit"):
            raise SkipTest("Python before 3.11 cannot set SQLite's limits")
        backend = await self.backend()
        pool = backend._require_pool()
        await pool.runInteraction(lambda cursor: cursor.connection.setlimit(0, 100_000))
        big, big_doc = document_of(200_000)
        (claim,) = await backend.claim_tasks([big], 30)
        refused = backend.commit_outcomes([OutcomeRecord(big, big_doc)], [claim.token])
        error = await self.assertFailure(refused, StoreRefused)
        self.assertEqual(error.task_id, big)
        self.assertIn("too big", str(error))
        (held,) = await backend.claim_tasks([big], 30)
        self.assertEqual(held.state, ClaimState.HELD)
        small, small_doc = document_of(10)
        await backend.store_results([OutcomeRecord(small, small_doc)])
        self.assertEqual(await backend.get_results([small, big]), [small_doc, None])
