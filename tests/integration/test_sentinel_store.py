"""
The Redis store through Redis Sentinel: the store contract, and the store
following a failover to the new primary without a restart.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.backends.contract import BackendContract, ClaimStoreContract, ScheduleStoreContract
from tests.integration import sentinel_set
from twistedq.backends.base import IResultBackend, OutcomeRecord
from twistedq.backends.redis import RedisBackend
from twistedq.backends.redis_sentinel import NotReplicated
from twistedq.message import new_task_id
from twistedq.outcome import success_document


class SentinelContractTests(BackendContract, ScheduleStoreContract, ClaimStoreContract, TestCase):
    def make_backend(self, ttl: int) -> IResultBackend:
        return RedisBackend.from_url(sentinel_set.sentinel_url(), reactor, ttl=ttl)

    async def backend(self, ttl: int = 3600) -> IResultBackend:
        # txredisapi parses a long reply (a sentinel's SENTINEL MASTERS) a
        # piece per reactor turn, and goes on after its connection closed:
        # let it finish (this cleanup runs after the store's close) before
        # trial looks for calls left in the reactor.
        self.addCleanup(deferLater, reactor, 0.2, lambda: None)
        return await super().backend(ttl)


async def poll_until(condition: Any, timeout: float = 60.0) -> None:
    """
    Await ``condition()`` (a coroutine function) until it answers true;
    failures count as no.  Every 0.1 s.
    """
    deadline = reactor.seconds() + timeout  # type: ignore[attr-defined]
    while reactor.seconds() < deadline:  # type: ignore[attr-defined]
        try:
            if await condition():
                return
        except Exception:
            pass
        await deferLater(reactor, 0.1, lambda: None)
    raise AssertionError(f"not within {timeout} s")


class SentinelFailoverTests(TestCase):
    timeout = 180

    async def store(self, backend: RedisBackend, task_id: str) -> bool:
        document = success_document(task_id, "t", 1)
        await backend.store_results([OutcomeRecord(task_id, document)])
        return True

    async def test_follows_failover(self) -> None:
        """
        After a failover (the old primary demoted to a replica), the same
        store writes to and reads from the new primary, notifications
        included; what it wrote before the failover began is there.

        Writes in between may reach the old primary after the promotion
        and be lost with its demotion: the test waits for one that lands
        on the new primary.
        """
        await deferToThread(sentinel_set.wait_healthy)
        backend = RedisBackend.from_url(sentinel_set.sentinel_url(), reactor)
        await backend.connect()
        self.addCleanup(backend.close)
        before = new_task_id()
        await self.store(backend, before)
        new = await deferToThread(sentinel_set.failover)

        async def on_new_primary(task_id: str) -> bool:
            key = backend.prefix + task_id
            return await deferToThread(sentinel_set.command, new, "EXISTS", key) == 1

        async def lands() -> bool:
            task_id = new_task_id()
            await self.store(backend, task_id)
            return await on_new_primary(task_id) and await backend.get_result(task_id) is not None

        await poll_until(lands)
        self.assertTrue(await on_new_primary(before))
        self.assertIsNotNone(await backend.get_result(before))
        after = new_task_id()
        notified = backend.waiter(after)

        async def notified_yet() -> bool:
            if not notified.called:
                await self.store(backend, after)  # a notification may be missed while subscribing
            return notified.called

        await poll_until(notified_yet)
        await deferToThread(sentinel_set.wait_healthy)

    async def test_replicas(self) -> None:
        """
        With ``?replicas=1`` an outcome is written once the replica has it;
        asking for two replicas of a set that has one fails the write with
        NotReplicated (the primary has it, a failover could lose it).
        """
        await deferToThread(sentinel_set.wait_healthy)
        url = sentinel_set.sentinel_url()
        one = RedisBackend.from_url(url + "?replicas=1", reactor)
        two = RedisBackend.from_url(url + "?replicas=2", reactor)
        two.replica_wait = 0.2
        for backend in (one, two):
            await backend.connect()
            self.addCleanup(backend.close)
        task_id = new_task_id()
        await self.store(one, task_id)
        replica = await deferToThread(sentinel_set.replica)
        stored = await deferToThread(sentinel_set.command, replica, "EXISTS", one.prefix + task_id)
        self.assertEqual(stored, 1)
        with self.assertRaises(NotReplicated):
            await self.store(two, new_task_id())
