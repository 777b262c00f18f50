"""
Pending records written and taken back in bulk
(:py:class:`~twistedq.backends.base.IPendingRecords`) on every store that
provides it: memory, SQLite and Redis (one script call per
:py:data:`~twistedq.backends.redis.SCRIPT_BATCH` records).
"""

from __future__ import annotations

import tempfile
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from tests.integration.servers import redis_url
from twistedq.backends.base import IPendingRecords, IResultBackend, OutcomeRecord
from twistedq.backends.memory import MemoryBackend
from twistedq.backends.redis import SCRIPT_BATCH, RedisBackend
from twistedq.backends.sqlite import SQLiteBackend
from twistedq.message import new_task_id
from twistedq.outcome import pending_document, success_document


class PendingRecordsContract:
    """
    The shared tests; ``make_backend()`` builds the store.
    """

    def make_backend(self) -> IResultBackend:
        raise NotImplementedError

    async def backend(self: Any) -> Any:
        backend = self.make_backend()
        await backend.connect()
        self.addCleanup(backend.close)
        return backend

    async def test_provides(self: Any) -> None:
        """
        The store provides IPendingRecords.
        """
        self.assertTrue(verifyObject(IPendingRecords, await self.backend()))

    async def test_many_written_none_overwritten(self: Any) -> None:
        """
        More records than one script call takes are all written, except
        where an outcome is stored already: it is kept.
        """
        backend = await self.backend()
        ids = [new_task_id() for _ in range(SCRIPT_BATCH * 2 + 5)]
        outcome = success_document(ids[SCRIPT_BATCH + 1], "t", 1)
        await backend.store_results([OutcomeRecord(ids[SCRIPT_BATCH + 1], outcome)])
        records = [(task_id, pending_document(task_id, "t")) for task_id in ids]
        await backend.mark_sent(records)
        found = await backend.get_results(ids)
        expected = [document for _, document in records]
        expected[SCRIPT_BATCH + 1] = outcome
        self.assertEqual(found, expected)

    async def test_take_back_exact_pending_only(self: Any) -> None:
        """
        ``unmark_sent`` deletes a record that still holds the pending
        document given, and keeps an outcome, another pending document
        and an unknown id's absence.
        """
        backend = await self.backend()
        mine, done, other, unknown = (new_task_id() for _ in range(4))
        records = [(task_id, pending_document(task_id, "t")) for task_id in (mine, done, other)]
        await backend.mark_sent(records)
        outcome = success_document(done, "t", 1)
        await backend.store_results([OutcomeRecord(done, outcome)])
        later = pending_document(other, "t", "2030-01-01T00:00:00+00:00")
        await backend.forget([other])
        await backend.mark_sent([(other, later)])
        await backend.unmark_sent([*records, (unknown, pending_document(unknown, "t"))])
        self.assertEqual(
            await backend.get_results([mine, done, other, unknown]), [None, outcome, later, None]
        )


class MemoryPendingTests(PendingRecordsContract, TestCase):
    def make_backend(self) -> IResultBackend:
        return MemoryBackend(Clock())


class SQLitePendingTests(PendingRecordsContract, TestCase):
    def make_backend(self) -> IResultBackend:
        return SQLiteBackend(f"{tempfile.mkdtemp()}/results.sqlite3", reactor)


class RedisPendingTests(PendingRecordsContract, TestCase):
    def make_backend(self) -> IResultBackend:
        return RedisBackend.from_url(redis_url(), reactor)
