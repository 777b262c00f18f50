"""
The Redis store's notification of new outcomes (``waiter``), which wakes a
waiting ``get()``: an outcome announced before the subscription was in
place is not missed (issue #14, get()'s wake-up; a fresh client's first
wait used to sleep a whole second re-read interval).
"""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from tests.integration.servers import redis_url
from twistedq.backends.base import OutcomeRecord
from twistedq.backends.redis import RedisBackend
from twistedq.message import new_task_id
from twistedq.outcome import success_document


class WakeUpTests(TestCase):
    async def backend(self) -> RedisBackend:
        backend = RedisBackend.from_url(redis_url(), reactor)
        await backend.connect()
        self.addCleanup(backend.close)
        return backend

    async def test_announced_before_subscribed(self) -> None:
        """
        A waiter registered on a store not yet subscribed, whose outcome is
        stored and announced at once (before the subscription is in place),
        fires once the subscription is: its caller reads the store again.
        """
        waiting, writer = await self.backend(), await self.backend()
        task_id = new_task_id()
        woken = waiting.waiter(task_id)
        await writer.store_results([OutcomeRecord(task_id, success_document(task_id, "t", 1))])
        await woken.addTimeout(30, reactor)
        self.assertIsNotNone(await waiting.get_result(task_id))

    async def test_announced_after_subscribed(self) -> None:
        """
        Once subscribed, a waiter fires on its outcome's announcement and
        the others keep waiting.
        """
        waiting, writer = await self.backend(), await self.backend()
        await waiting.waiter(new_task_id()).addTimeout(30, reactor)  # subscribed
        task_id, other = new_task_id(), new_task_id()
        woken, still = waiting.waiter(task_id), waiting.waiter(other)
        await writer.store_results([OutcomeRecord(task_id, success_document(task_id, "t", 1))])
        await woken.addTimeout(30, reactor)
        self.assertFalse(still.called)
        still.addErrback(lambda failure: failure.trap(defer.CancelledError))
        still.cancel()
