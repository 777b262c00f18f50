"""
What the Tyrant store promises beyond the contract: a claim whose reply
was lost still lapses, and the clean-up leaves nothing expired behind.
Runs against the ttserver of ``TWISTEDQ_TEST_TYRANT_URL``.
"""

from __future__ import annotations

import uuid
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.error import ConnectionDone
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.integration.servers import server_url
from twistedq.backends.base import ClaimState, OutcomeRecord, ParkedTask, SlotClaim
from twistedq.backends.tyrant import TyrantBackend
from twistedq.backends.tyrant_protocol import TyrantProtocol
from twistedq.message import new_task_id
from twistedq.outcome import success_document


class TyrantStoreTests(TestCase):
    async def store(self, ttl: int = 3600) -> TyrantBackend:
        """
        A store of its own key prefix, so that the records of other tests
        do not count.
        """
        url = server_url("TWISTEDQ_TEST_TYRANT_URL")
        store = TyrantBackend.from_url(url, reactor, ttl=ttl)
        store.prefix = f"test-{uuid.uuid4().hex}:".encode()
        await store.connect()
        self.addCleanup(store.close)
        return store

    def lose_replies_of(self, store: TyrantBackend, command: str) -> None:
        """
        Make ``command`` run on the server while its reply is lost: the
        connection drops as the reply comes, and the caller sees only
        the loss.
        """
        protocol = store._protocol._protocol  # type: ignore[union-attr]  # under ClientService's proxy
        assert isinstance(protocol, TyrantProtocol)
        sent = getattr(protocol, command)

        def run_then_drop(*args: Any) -> defer.Deferred[Any]:
            lost: defer.Deferred[Any] = defer.Deferred()

            def drop(_: object) -> None:
                protocol._transport().loseConnection()
                lost.errback(ConnectionDone("the reply was lost"))

            sent(*args).addBoth(drop)
            return lost

        setattr(protocol, command, run_then_drop)

    async def test_lost_claim_reply_lapses(self) -> None:
        """
        A task claim whose reply was lost (the lease was written, the
        daemon never learned its token) lapses after its lease: the task
        is claimed again, by a newer token.
        """
        store = await self.store()
        task = new_task_id()
        self.lose_replies_of(store, "putkeep")
        # Two seconds: the store reconnects after up to 1.3 s.
        await self.assertFailure(store.claim_tasks([task], 2), ConnectionDone)
        (held,) = await store.claim_tasks([task], 30)
        self.assertEqual(held.state, ClaimState.HELD)
        await deferLater(reactor, 2.2, lambda: None)
        (claim,) = await store.claim_tasks([task], 30)
        self.assertEqual(claim.state, ClaimState.CLAIMED)
        self.assertEqual(claim.token, 2)

    async def test_lost_slot_reply_lapses(self) -> None:
        """
        A periodic slot claim whose reply was lost lapses after its lease.
        """
        store = await self.store()
        self.lose_replies_of(store, "putkeep")
        await self.assertFailure(store.claim_slot("slot", "lost", 2), ConnectionDone)
        self.assertEqual(await store.claim_slot("slot", "other", 30), SlotClaim.HELD)
        await deferLater(reactor, 2.2, lambda: None)
        self.assertEqual(await store.claim_slot("slot", "other", 30), SlotClaim.WON)

    async def test_cleanup_leaves_nothing_expired(self) -> None:
        """
        Once every record's time has passed, the clean-up removes all of
        them (outcomes, pending records, tasksets, claims, slots, parked
        messages and the deadline index) and counts the outcomes; the
        periodic states, which never expire, stay.
        """
        store = await self.store(ttl=1)
        ids = [new_task_id() for _ in range(3)]
        claims = await store.claim_tasks(ids, 1)
        await store.park_tasks(
            [ParkedTask(ids[0], claims[0].token, "q", b"{}")],
        )
        await store.create_taskset("set", 2)
        await store.commit_outcomes(
            [OutcomeRecord(ids[1], success_document(ids[1], "t", 1), "set")], [claims[1].token]
        )
        await store.mark_sent([(ids[2], b"{}")])
        self.assertEqual(await store.claim_slot("slot", "me", 1), SlotClaim.WON)
        await store.commit_slot("slot", "periodic.p", 1000.0, 1060.0, 1)
        protocol = store._protocol
        assert protocol is not None
        self.assertNotEqual(await protocol.fwmkeys(store.prefix), [])
        await deferLater(reactor, 2.2, lambda: None)  # a slot's lease, and its keep
        self.assertEqual(await store.delete_expired(), 2)
        left = await protocol.fwmkeys(store.prefix)
        self.assertEqual(sorted(key.split(b":")[1] for key in left), [b"periodic"] * 3)
        self.assertEqual(await store.delete_expired(), 0)
