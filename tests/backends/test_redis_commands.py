"""
The Redis store sends its commands through :py:class:`StoreProtocol`,
whose encoder builds them in one pass (:py:mod:`twistedq.backends.resp`),
and reads its claims and commits back from one reply element.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from tests.integration.servers import redis_url
from twistedq.backends.base import OutcomeRecord
from twistedq.backends.redis import RedisBackend, StoreProtocol
from twistedq.message import new_task_id
from twistedq.outcome import success_document


class StoreCommandsTests(TestCase):
    async def test_connections_and_a_batch(self) -> None:
        """
        Every connection of the store is a :py:class:`StoreProtocol`; a
        batch of 200 claims and commits (non-ASCII documents among them)
        round-trips through it, each answer in its place.
        """
        backend = RedisBackend.from_url(redis_url(), reactor)
        await backend.connect()
        self.addCleanup(backend.close)
        self.assertEqual({type(c) for c in backend._redis._factory.pool}, {StoreProtocol})
        ids = [new_task_id() for _ in range(200)]
        taken = await backend.take_leases(ids, 30)
        self.assertTrue(all(token is not None and document is None for token, document in taken))
        records = [OutcomeRecord(i, success_document(i, "t", f"é{n}")) for n, i in enumerate(ids)]
        tokens = [token for token, _ in taken]
        tokens[7] += 1  # a stale token: fenced off
        committed = await backend.commit_fenced(records, tokens)
        self.assertEqual(committed, [n != 7 for n in range(200)])
        again = await backend.take_leases(ids[:3] + ids[7:8], 30, [b'"SUCCESS"'])
        # Done ones are not leased (their document says SUCCESS); the fenced
        # one is still claimed, with nothing stored.
        self.assertEqual([token for token, _ in again], [None] * 4)
        self.assertEqual(again[0][1], await backend.get_result(ids[0]))
        self.assertIsNone(again[3][1])
