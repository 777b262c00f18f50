"""
The contract on Redis, memcached, Tokyo Tyrant and SQLite, in this process.
"""

from __future__ import annotations

import tempfile
from urllib.parse import urlsplit

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from tests.backends.contract import (
    BackendContract,
    ClaimStoreContract,
    ScheduleStoreContract,
)
from tests.integration.servers import redis_url, server_url
from twistedq.backends.base import IResultBackend
from twistedq.backends.memcached import MemcachedBackend
from twistedq.backends.redis import RedisBackend
from twistedq.backends.sqlite import SQLiteBackend
from twistedq.backends.tyrant import TyrantBackend


class RedisContractTests(BackendContract, ScheduleStoreContract, ClaimStoreContract, TestCase):
    def make_backend(self, ttl: int) -> IResultBackend:
        return RedisBackend.from_url(redis_url(), reactor, ttl=ttl)


class MemcachedContractTests(BackendContract, ScheduleStoreContract, ClaimStoreContract, TestCase):
    large_items = False

    def make_backend(self, ttl: int) -> IResultBackend:
        parts = urlsplit(server_url("TWISTEDQ_TEST_MEMCACHED_URL"))
        return MemcachedBackend(reactor, parts.hostname, parts.port, ttl=ttl)


class TyrantContractTests(BackendContract, ScheduleStoreContract, ClaimStoreContract, TestCase):
    expiry_slack = 0.2

    def make_backend(self, ttl: int) -> IResultBackend:
        return TyrantBackend.from_url(server_url("TWISTEDQ_TEST_TYRANT_URL"), reactor, ttl=ttl)


class SQLiteContractTests(BackendContract, ScheduleStoreContract, ClaimStoreContract, TestCase):
    expiry_slack = 0.2

    def make_backend(self, ttl: int) -> IResultBackend:
        # One file per test: the backends a test makes share it, as daemons do.
        if not hasattr(self, "path"):
            self.path = f"{tempfile.mkdtemp()}/results.sqlite3"
        return SQLiteBackend(self.path, reactor, ttl=ttl)

    async def test_delete_expired(self) -> None:
        """
        The cleanup removes expired rows and counts them.
        """
        from twisted.internet.task import deferLater

        from twistedq.backends.base import OutcomeRecord
        from twistedq.message import new_task_id
        from twistedq.outcome import success_document

        backend = await self.backend(ttl=1)
        ids = [new_task_id() for _ in range(5)]
        await backend.store_results([OutcomeRecord(i, success_document(i, "t", 1)) for i in ids])
        await deferLater(reactor, 1.2, lambda: None)
        self.assertEqual(await backend.delete_expired(), 5)
        self.assertEqual(await backend.delete_expired(), 0)
