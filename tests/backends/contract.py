"""
The contract every :py:class:`~twistedq.backends.base.IResultBackend`
keeps.  A test case mixes :py:class:`BackendContract` in and builds its
backend in ``make_backend(ttl)``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from zope.interface.verify import verifyObject

from twistedq.backends.base import (
    ClaimState,
    IClaimStore,
    IFencedLeases,
    IResultBackend,
    IScheduleStore,
    OutcomeRecord,
    ParkedTask,
    PeriodicState,
    SlotClaim,
    StoreRefused,
)
from twistedq.message import new_task_id
from twistedq.outcome import (
    Outcome,
    failure_document,
    pending_document,
    retry_document,
    revoked_document,
    success_document,
)

#: Text a store must keep: a NUL, lone surrogates (high and low), a
#: character outside the Basic Multilingual Plane (four bytes in UTF-8),
#: one of two bytes and a control character.
ODD_TEXT = "nul\x00 high\ud800 low\udfff astral\U0001f600 \xe9 bell\x07"

#: A taskset id no column or key takes as it is: odd text, and long.
ODD_TASKSET = "taskset " + ODD_TEXT + " " + "s" * 300


def odd_documents(ok: str, bad: str, name: str = "task " + ODD_TEXT + "n" * 300) -> list[bytes]:
    """
    A success and a failure of a task named ``name`` (odd, and longer
    than any name column) holding :py:data:`ODD_TEXT` in the value, the
    exception's message and the traceback.
    """
    return [
        success_document(ok, name, {ODD_TEXT: [ODD_TEXT]}),
        failure_document(
            bad, name, ValueError(ODD_TEXT), traceback=f"Traceback\nValueError: {ODD_TEXT}"
        ),
    ]


class BackendContract:
    """
    The shared tests.  ``self`` is a trial ``TestCase``.
    """

    #: Whether the store keeps items larger than 1 MiB (memcached does not).
    large_items = True
    #: Seconds after the TTL by which an item is surely gone.
    expiry_slack = 1.5

    def make_backend(self, ttl: int) -> IResultBackend:
        raise NotImplementedError

    async def pass_time(self, seconds: float) -> None:
        """
        Let ``seconds`` pass for the store (on the reactor's clock, unless
        the store's clock is one the test drives).
        """
        await deferLater(reactor, seconds, lambda: None)

    async def backend(self: Any, ttl: int = 3600) -> IResultBackend:
        backend = self.make_backend(ttl)
        await backend.connect()
        self.addCleanup(backend.close)
        return backend

    async def test_provides_interface(self: Any) -> None:
        """
        The backend provides IResultBackend.
        """
        self.assertTrue(verifyObject(IResultBackend, await self.backend()))

    async def test_store_and_read(self: Any) -> None:
        """
        Stored outcomes, a success and a failure, are read back byte for
        byte, in the order asked, with None for an unknown id.
        """
        backend = await self.backend()
        ok, bad, unknown = new_task_id(), new_task_id(), new_task_id()
        ok_doc = success_document(ok, "t", {"n": [1, 2, "é"]})
        bad_doc = failure_document(bad, "t", ValueError("bad"), traceback="Traceback...")
        await backend.store_results([OutcomeRecord(ok, ok_doc), OutcomeRecord(bad, bad_doc)])
        self.assertEqual(await backend.get_results([bad, unknown, ok]), [bad_doc, None, ok_doc])
        self.assertEqual(await backend.get_result(ok), ok_doc)
        self.assertIsNone(await backend.get_result(unknown))
        self.assertEqual(await backend.get_results([]), [])

    async def test_store_replaces(self: Any) -> None:
        """
        Storing an outcome again for the same id replaces it.
        """
        backend = await self.backend()
        task_id = new_task_id()
        await backend.store_results([OutcomeRecord(task_id, success_document(task_id, "t", 1))])
        second = success_document(task_id, "t", 2)
        await backend.store_results([OutcomeRecord(task_id, second)])
        self.assertEqual(await backend.get_result(task_id), second)

    async def test_pending_record_never_overwrites(self: Any) -> None:
        """
        A pending record is written only where nothing is stored, and an
        outcome replaces it.
        """
        backend = await self.backend()
        done, waiting = new_task_id(), new_task_id()
        done_doc = success_document(done, "t", 1)
        await backend.store_results([OutcomeRecord(done, done_doc)])
        await backend.mark_sent(
            [(done, pending_document(done, "t")), (waiting, pending_document(waiting, "t"))]
        )
        self.assertEqual(await backend.get_result(done), done_doc)
        self.assertTrue(Outcome.from_bytes(waiting, await backend.get_result(waiting)).known)
        final = success_document(waiting, "t", 2)
        await backend.store_results([OutcomeRecord(waiting, final)])
        self.assertEqual(await backend.get_result(waiting), final)

    async def test_chord_publisher_elected_once(self: Any) -> None:
        """
        Members of a complete chord asking together elect one publisher of
        its callback (:py:func:`~twistedq.backends.chords.elect_publisher`);
        it is elected again when it asks again (after a crash), the others
        never; once the callback has an outcome nobody is.
        """
        from twistedq.backends.chords import elect_publisher

        backend = await self.backend()
        callback, members = new_task_id(), [new_task_id() for _ in range(8)]
        answers = await defer.gatherResults(
            [defer.ensureDeferred(elect_publisher(backend, callback, "t", m)) for m in members]
        )
        self.assertEqual(answers.count(True), 1)
        elected = members[answers.index(True)]
        others = [m for m in members if m != elected]
        self.assertTrue(await elect_publisher(backend, callback, "t", elected))
        self.assertFalse(await elect_publisher(backend, callback, "t", others[0]))
        self.assertFalse(Outcome.from_bytes(callback, await backend.get_result(callback)).ready)
        await backend.store_results([OutcomeRecord(callback, success_document(callback, "t", 1))])
        self.assertFalse(await elect_publisher(backend, callback, "t", elected))

    async def test_forget(self: Any) -> None:
        """
        A forgotten outcome reads as None; forgetting an unknown id is fine.
        """
        backend = await self.backend()
        task_id = new_task_id()
        await backend.store_results([OutcomeRecord(task_id, success_document(task_id, "t", 1))])
        await backend.forget([task_id, new_task_id()])
        self.assertIsNone(await backend.get_result(task_id))

    async def test_taskset_counts(self: Any) -> None:
        """
        A taskset counts each finished subtask once, failures apart, even
        when an outcome is stored twice; an unknown taskset is None.
        """
        backend = await self.backend()
        taskset = new_task_id()
        await backend.create_taskset(taskset, 3)
        state = await backend.get_taskset(taskset)
        self.assertEqual((state.total, state.completed, state.failed), (3, 0, 0))
        a, b = new_task_id(), new_task_id()
        await backend.store_results(
            [
                OutcomeRecord(a, success_document(a, "t", 1), taskset),
                OutcomeRecord(b, failure_document(b, "t", KeyError("k"), ""), taskset, True),
            ]
        )
        await backend.store_results([OutcomeRecord(a, success_document(a, "t", 1), taskset)])
        state = await backend.get_taskset(taskset)
        self.assertEqual((state.total, state.completed, state.failed), (3, 2, 1))
        self.assertFalse(state.ready)
        self.assertIsNone(await backend.get_taskset(new_task_id()))

    async def test_revoked_member_counted_later(self: Any) -> None:
        """
        A member revoked by a client (its REVOKED outcome stored without
        its taskset) is counted, as failed, when a daemon stores it again
        with the taskset, and once however often that happens.
        """
        backend = await self.backend()
        taskset, member = new_task_id(), new_task_id()
        await backend.create_taskset(taskset, 2)
        document = revoked_document(member, "t", "revoked")
        await backend.store_results([OutcomeRecord(member, document)])
        state = await backend.get_taskset(taskset)
        self.assertEqual((state.completed, state.failed), (0, 0))
        for _ in range(2):
            await backend.store_results([OutcomeRecord(member, document, taskset, True)])
        state = await backend.get_taskset(taskset)
        self.assertEqual((state.total, state.completed, state.failed), (2, 1, 1))
        self.assertEqual(await backend.get_result(member), document)

    async def test_concurrent_writers(self: Any) -> None:
        """
        Many batches written at once all land.
        """
        backend = await self.backend()
        batches = [
            [
                (task_id := new_task_id(), success_document(task_id, "t", i * 10 + j))
                for j in range(10)
            ]
            for i in range(20)
        ]
        await defer.gatherResults(
            [backend.store_results([OutcomeRecord(t, d) for t, d in batch]) for batch in batches]
        )
        ids = [t for batch in batches for t, _ in batch]
        found = await backend.get_results(ids)
        self.assertEqual([json.loads(doc)["result"] for doc in found], list(range(200)))

    async def test_large_outcome(self: Any) -> None:
        """
        A 2 MiB outcome is stored whole where the store allows it, and is
        otherwise refused for good (StoreRefused), never a crash nor an
        outage.
        """
        backend = await self.backend()
        task_id = new_task_id()
        document = success_document(task_id, "t", "x" * (2 * 1024 * 1024))
        if self.large_items:
            await backend.store_results([OutcomeRecord(task_id, document)])
            stored = Outcome.from_bytes(task_id, await backend.get_result(task_id))
            self.assertEqual(len(stored.result), 2 * 1024 * 1024)
        else:
            refused = backend.store_results([OutcomeRecord(task_id, document)])
            self.assertEqual((await self.assertFailure(refused, StoreRefused)).task_id, task_id)
            self.assertIsNone(await backend.get_result(task_id))

    async def test_odd_text_round_trip(self: Any) -> None:
        """
        Outcomes holding a NUL, lone surrogates and four-byte characters in
        the value, the exception, the traceback, a long task name and a
        long taskset id are stored and read back byte for byte, decode to
        the same text and count in their taskset; so does a pending record.
        """
        backend = await self.backend()
        ok, bad, sent = new_task_id(), new_task_id(), new_task_id()
        ok_doc, bad_doc = odd_documents(ok, bad)
        sent_doc = pending_document(sent, "task " + ODD_TEXT)
        taskset = ODD_TASKSET + new_task_id()  # the stores of other runs may keep the last
        await backend.create_taskset(taskset, 3)
        await backend.store_results(
            [OutcomeRecord(ok, ok_doc, taskset), OutcomeRecord(bad, bad_doc, taskset, True)]
        )
        await backend.mark_sent([(sent, sent_doc)])
        self.assertEqual(await backend.get_results([ok, bad, sent]), [ok_doc, bad_doc, sent_doc])
        self.assertEqual(
            Outcome.from_bytes(ok, await backend.get_result(ok)).result, {ODD_TEXT: [ODD_TEXT]}
        )
        failure = Outcome.from_bytes(bad, await backend.get_result(bad))
        self.assertEqual(failure.exc["message"], ODD_TEXT)
        self.assertTrue(failure.traceback.endswith(ODD_TEXT))
        self.assertEqual(tuple(await backend.get_taskset(taskset)), (3, 2, 1))
        self.assertIsNone(await backend.get_taskset(taskset[:-1]))

    async def test_documents_as_bytes(self: Any) -> None:
        """
        A document in raw UTF-8 (not escaped to ASCII, as twistedq's
        encoder does) is kept byte for byte; one that is not UTF-8 JSON is
        kept whole or refused for good (StoreRefused naming the task), never
        failed as an outage, and the store goes on serving.
        """
        backend = await self.backend()
        raw, bad = new_task_id(), new_task_id()
        raw_doc = json.dumps(
            {"id": raw, "task": "t", "status": "SUCCESS", "result": "astral \U0001f600 \xe9"},
            ensure_ascii=False,
        ).encode("utf-8")
        await backend.store_results([OutcomeRecord(raw, raw_doc)])
        self.assertEqual(await backend.get_result(raw), raw_doc)
        for junk in (b"\xff\xfe not UTF-8", b"not JSON"):
            try:
                await backend.store_results([OutcomeRecord(bad, junk)])
            except StoreRefused as refused:
                self.assertEqual(refused.task_id, bad)
                self.assertIsNone(await backend.get_result(bad))
            else:
                self.assertEqual(await backend.get_result(bad), junk)
        self.assertEqual(await backend.get_result(raw), raw_doc)

    async def limited(self: Any, most: int) -> Any:
        """
        A backend that takes documents of at most ``most`` bytes.
        """
        backend = await self.backend()
        backend.max_document_size = most
        return backend

    async def test_too_large_refused(self: Any) -> None:
        """
        An outcome larger than the store takes is refused for good, before
        it is sent: StoreRefused names the task, its size and the limit,
        nothing of its batch is written nor counted, and the requests in
        flight beside it, and those after it, are answered.
        """
        backend = await self.limited(64 * 1024)
        small, big, after, taskset = (new_task_id() for _ in range(4))
        small_doc = success_document(small, "t", "s")
        big_doc = success_document(big, "t", "x" * (64 * 1024))
        after_doc = success_document(after, "t", "a")
        await backend.create_taskset(taskset, 2)
        before = backend.get_taskset(taskset)
        refused = backend.store_results(
            [OutcomeRecord(small, small_doc, taskset), OutcomeRecord(big, big_doc, taskset)]
        )
        beside = backend.store_results([OutcomeRecord(after, after_doc)])
        error = await self.assertFailure(refused, StoreRefused)
        self.assertEqual(error.task_id, big)
        for part in (big, str(len(big_doc)), str(64 * 1024)):
            self.assertIn(part, str(error))
        self.assertEqual(tuple(await before), (2, 0, 0))
        await beside
        self.assertEqual(await backend.get_results([small, big, after]), [None, None, after_doc])
        self.assertEqual(tuple(await backend.get_taskset(taskset)), (2, 0, 0))
        await self.assertFailure(backend.mark_sent([(big, big_doc)]), StoreRefused)
        await backend.store_results([OutcomeRecord(big, small_doc, taskset, True)])
        self.assertEqual(await backend.get_result(big), small_doc)
        self.assertEqual(tuple(await backend.get_taskset(taskset)), (2, 1, 1))

    async def test_hundred_thousand_expire(self: Any) -> None:
        """
        100,000 outcomes stored with a two-second TTL are all gone once it
        has passed.  (Two: memcached counts expiry in whole seconds, so an
        item with one second may be gone before it is read back.)
        """
        backend = await self.backend(ttl=2)
        ids = [new_task_id() for _ in range(100_000)]
        document = success_document(ids[0], "t", None)
        for start in range(0, len(ids), 10_000):
            last_batch = time.monotonic()
            await backend.store_results(
                [OutcomeRecord(task_id, document) for task_id in ids[start : start + 10_000]]
            )
        found = await backend.get_result(ids[-1])
        # On a loaded machine the last batch may take longer than the TTL
        # to store (3.5 s for 10,000 rows was seen): it is then rightly gone.
        if time.monotonic() - last_batch < 1.5:
            self.assertIsNotNone(found)
        await self.pass_time(2 + self.expiry_slack)
        for start in range(0, len(ids), 10_000):
            found = await backend.get_results(ids[start : start + 10_000])
            self.assertEqual(found.count(None), len(found))
        if hasattr(backend, "delete_expired"):
            self.assertGreaterEqual(await backend.delete_expired(), 100_000)

    async def test_expiry(self: Any) -> None:
        """
        Outcomes, pending records and tasksets are gone once their TTL has
        passed.
        """
        backend = await self.backend(ttl=1)
        task_id, sent, taskset = new_task_id(), new_task_id(), new_task_id()
        await backend.store_results([OutcomeRecord(task_id, success_document(task_id, "t", 1))])
        await backend.mark_sent([(sent, pending_document(sent, "t"))])
        await backend.create_taskset(taskset, 1)
        self.assertIsNotNone(await backend.get_result(task_id))
        await self.pass_time(1 + self.expiry_slack)
        self.assertEqual(await backend.get_results([task_id, sent]), [None, None])
        self.assertIsNone(await backend.get_taskset(taskset))


class ScheduleStoreContract:
    """
    The shared tests of :py:class:`~twistedq.backends.base.IScheduleStore`,
    for a test case that also mixes :py:class:`BackendContract` in.
    """

    async def test_provides_schedule_interface(self: Any) -> None:
        """
        The backend provides IScheduleStore.
        """
        self.assertTrue(verifyObject(IScheduleStore, await self.backend()))

    async def test_one_claim_wins(self: Any) -> None:
        """
        Of twenty owners claiming one slot at once, through four
        connections, one wins and the others find it held; once committed,
        everyone finds it done.
        """
        backends = [await self.backend() for _ in range(4)]
        key = new_task_id()
        claims = await defer.gatherResults(
            [backends[number % 4].claim_slot(key, f"owner-{number}", 30) for number in range(20)]
        )
        self.assertEqual(claims.count(SlotClaim.WON), 1)
        self.assertEqual(claims.count(SlotClaim.HELD), 19)
        await backends[0].commit_slot(key, "periodic." + key, 1000.0, 1060.0, 3600)
        self.assertEqual(await backends[1].claim_slot(key, "late", 30), SlotClaim.DONE)

    async def test_release(self: Any) -> None:
        """
        Releasing a claim frees the slot, but only its owner can release it.
        """
        backend = await self.backend()
        key = new_task_id()
        self.assertEqual(await backend.claim_slot(key, "a", 30), SlotClaim.WON)
        await backend.release_slot(key, "b")
        self.assertEqual(await backend.claim_slot(key, "b", 30), SlotClaim.HELD)
        await backend.release_slot(key, "a")
        self.assertEqual(await backend.claim_slot(key, "b", 30), SlotClaim.WON)

    async def test_lease_expires(self: Any) -> None:
        """
        A claim that is neither committed nor released lapses after its
        lease, so another daemon can take the slot.
        """
        backend = await self.backend()
        key = new_task_id()
        self.assertEqual(await backend.claim_slot(key, "crashed", 1), SlotClaim.WON)
        await self.pass_time(1 + self.expiry_slack)
        self.assertEqual(await backend.claim_slot(key, "next", 30), SlotClaim.WON)

    async def test_periodic_state(self: Any) -> None:
        """
        A noted schedule creates an enabled state that never ran; each
        commit counts a run, moves ``last_run_at`` forward only, and
        records the next run; pausing and resuming keep the counts.
        """
        backend = await self.backend()
        name = "periodic." + new_task_id()
        self.assertEqual(await backend.get_periodic_states([name]), {})
        await backend.note_schedule(name, 1000.0)
        self.assertEqual(
            await backend.get_periodic_states([name]),
            {name: PeriodicState(name, True, None, 0, 1000.0)},
        )
        await backend.commit_slot(new_task_id(), name, 1000.0, 1010.0, 3600)
        await backend.commit_slot(new_task_id(), name, 1010.0, 1020.0, 3600)
        await backend.commit_slot(new_task_id(), name, 990.0, 1020.0, 3600)
        await backend.set_periodic_enabled(name, False)
        await backend.note_schedule(name, 1030.0)
        self.assertEqual(
            await backend.get_periodic_states([name, "periodic.unknown"]),
            {name: PeriodicState(name, False, 1010.0, 3, 1030.0)},
        )
        await backend.set_periodic_enabled(name, True)
        (state,) = (await backend.get_periodic_states([name])).values()
        self.assertTrue(state.enabled)
        self.assertEqual(state.total_run_count, 3)

    async def test_pause_before_first_run(self: Any) -> None:
        """
        A task can be paused before it ever ran or was noted.
        """
        backend = await self.backend()
        name = "periodic." + new_task_id()
        await backend.set_periodic_enabled(name, False)
        self.assertEqual(
            await backend.get_periodic_states([name]), {name: PeriodicState(name, False)}
        )


class ClaimStoreContract:
    """
    The shared tests of :py:class:`~twistedq.backends.base.IClaimStore`,
    for a test case that also mixes :py:class:`BackendContract` in.
    """

    async def test_provides_claim_interface(self: Any) -> None:
        """
        The backend provides IClaimStore.
        """
        self.assertTrue(verifyObject(IClaimStore, await self.backend()))
        self.assertTrue(verifyObject(IFencedLeases, await self.backend()))

    async def test_one_claim_at_a_time(self: Any) -> None:
        """
        Of twenty attempts claiming one task at once through four
        connections, one gets it; a batch claim answers per task.
        """
        backends = [await self.backend() for _ in range(4)]
        task = new_task_id()
        claims = await defer.gatherResults(
            [backends[number % 4].claim_tasks([task], 30) for number in range(20)]
        )
        states = [claim.state for (claim,) in claims]
        self.assertEqual(states.count(ClaimState.CLAIMED), 1)
        self.assertEqual(states.count(ClaimState.HELD), 19)
        other = new_task_id()
        both = await backends[0].claim_tasks([task, other], 30)
        self.assertEqual([claim.state for claim in both], [ClaimState.HELD, ClaimState.CLAIMED])

    async def test_commit_with_latest_token(self: Any) -> None:
        """
        An outcome commits with the claim's token, is readable, ends the
        claim, and makes later claims find the task done; it counts in its
        taskset.
        """
        backend = await self.backend()
        task, taskset = new_task_id(), new_task_id()
        await backend.create_taskset(taskset, 1)
        (claim,) = await backend.claim_tasks([task], 30)
        self.assertEqual(claim.state, ClaimState.CLAIMED)
        document = success_document(task, "t", 1)
        committed = await backend.commit_outcomes(
            [OutcomeRecord(task, document, taskset)], [claim.token]
        )
        self.assertEqual(committed, [True])
        self.assertEqual(await backend.get_result(task), document)
        self.assertEqual((await backend.get_taskset(taskset)).completed, 1)
        (again,) = await backend.claim_tasks([task], 30)
        self.assertEqual(again.state, ClaimState.DONE)

    async def test_fenced_off_after_lease(self: Any) -> None:
        """
        An attempt whose lease lapsed and whose task was claimed again
        cannot commit, renew or release: the newer token wins, and its
        outcome is the one stored.
        """
        backend = await self.backend()
        task = new_task_id()
        (first,) = await backend.claim_tasks([task], 1)
        await self.pass_time(1 + self.expiry_slack)
        (second,) = await backend.claim_tasks([task], 30)
        self.assertEqual(second.state, ClaimState.CLAIMED)
        self.assertGreater(second.token, first.token)
        self.assertEqual(await backend.renew_claims([(task, first.token)], 30), [False])
        await backend.release_claims([(task, first.token)])
        (held,) = await backend.claim_tasks([task], 30)
        self.assertEqual(held.state, ClaimState.HELD)
        late = success_document(task, "t", "late")
        fresh = success_document(task, "t", "fresh")
        self.assertEqual(
            await backend.commit_outcomes([OutcomeRecord(task, late)], [first.token]), [False]
        )
        self.assertIsNone(await backend.get_result(task))
        self.assertEqual(
            await backend.commit_outcomes([OutcomeRecord(task, fresh)], [second.token]), [True]
        )
        self.assertEqual(await backend.get_result(task), fresh)

    async def test_renew_keeps_lease(self: Any) -> None:
        """
        A renewed claim outlives its first lease; a released one can be
        claimed at once; a pending record and a dead-lettered failure do
        not make a task done.
        """
        backend = await self.backend()
        task, pending, dead = new_task_id(), new_task_id(), new_task_id()
        (claim,) = await backend.claim_tasks([task], 1)
        self.assertEqual(await backend.renew_claims([(task, claim.token)], 30), [True])
        await self.pass_time(1 + self.expiry_slack)
        (held,) = await backend.claim_tasks([task], 30)
        self.assertEqual(held.state, ClaimState.HELD)
        await backend.release_claims([(task, claim.token)])
        (taken,) = await backend.claim_tasks([task], 30)
        self.assertEqual(taken.state, ClaimState.CLAIMED)
        await backend.mark_sent([(pending, pending_document(pending, "t"))])
        failed = failure_document(dead, "t", ValueError("x"), traceback="", dead_letter="x")
        await backend.store_results([OutcomeRecord(dead, failed, None, True)])
        states = [c.state for c in await backend.claim_tasks([pending, dead], 30)]
        self.assertEqual(states, [ClaimState.CLAIMED, ClaimState.CLAIMED])

    async def test_parked_orphans(self: Any) -> None:
        """
        A parked message is kept only with the latest token; it is an
        orphan once its claim lapses without an outcome, not while the
        claim lives, and it goes away when its outcome is committed or when
        it is dropped.
        """
        backend = await self.backend()
        running, dead, stale, done = (new_task_id() for _ in range(4))
        claims = await backend.claim_tasks([running, dead, stale, done], 30)
        tokens = [claim.token for claim in claims]
        body = b'{"v":1,"id":"x","task":"t","args":[],"kwargs":{}}'
        parked = [
            ParkedTask(running, tokens[0], "q", body),
            ParkedTask(dead, tokens[1], "q", body + b" "),
            ParkedTask(stale, tokens[2] + 1, "q", body),
            ParkedTask(done, tokens[3], "q", body),
        ]
        ours = {running, dead, stale, done}

        async def orphans() -> list[ParkedTask]:
            # Other tests' parked messages may share the store.
            return [task for task in await backend.parked_orphans(1000) if task.task_id in ours]

        self.assertEqual(await backend.park_tasks(parked), [True, True, False, True])
        self.assertEqual(await orphans(), [])
        await backend.release_claims([(dead, tokens[1])])
        committed = await backend.commit_outcomes(
            [OutcomeRecord(done, success_document(done, "t", 1))], [tokens[3]]
        )
        self.assertEqual(committed, [True])
        self.assertEqual(await orphans(), [parked[1]])
        await backend.drop_parked([dead])
        self.assertEqual(await orphans(), [])

    async def test_stale_retry_copy_is_done(self: Any) -> None:
        """
        With a RETRY outcome scheduling attempt 2 stored, a copy of attempt
        1 (delivered again) is done, attempt 2 is claimed, and a claim that
        gives no retries (a revocation) is claimed too.
        """
        backend = await self.backend()
        task, other = new_task_id(), new_task_id()
        retry = retry_document(task, "t", ValueError("again"), retries=2, countdown=1)
        await backend.store_results([OutcomeRecord(task, retry), OutcomeRecord(other, retry)])
        stale, current = await backend.claim_tasks([task, other], 30, [1, 2])
        self.assertEqual((stale.state, current.state), (ClaimState.DONE, ClaimState.CLAIMED))
        (revoking,) = await backend.claim_tasks([task], 30)
        self.assertEqual(revoking.state, ClaimState.CLAIMED)

    async def test_lease_taken_after_a_commit(self: Any) -> None:
        """
        A lease taken once another attempt has committed (as by a claim
        that read the outcome just before the commit) comes with the
        committed outcome and a newer token, so the claim can tell the task
        is done; a live lease is not taken again.
        """
        backend = await self.backend()
        task = new_task_id()
        (first,) = await backend.claim_tasks([task], 30)
        document = success_document(task, "t", 1)
        await backend.commit_outcomes([OutcomeRecord(task, document)], [first.token])
        self.assertEqual(await backend.take_leases([task], 30), [(first.token + 1, document)])
        self.assertEqual(await backend.take_leases([task], 30), [(None, document)])
        (claim,) = await backend.claim_tasks([task], 30)
        self.assertEqual(claim.state, ClaimState.DONE)

    async def test_lease_not_taken_where_the_outcome_says_so(self: Any) -> None:
        """
        No lease is taken where the stored document holds one of the byte
        strings given (the document is answered); one is where it holds
        none (the document may be left out), or where none are given.
        """
        backend = await self.backend()
        done, waiting = new_task_id(), new_task_id()
        document, pending = success_document(done, "t", 1), pending_document(waiting, "t")
        await backend.store_results([OutcomeRecord(done, document)])
        await backend.mark_sent([(waiting, pending)])
        stopped, taken = await backend.take_leases([done, waiting], 30, [b'"SUCCESS"'])
        self.assertEqual(stopped, (None, document))
        self.assertEqual(taken[0], 1)
        self.assertIn(taken[1], (None, pending))
        self.assertEqual(await backend.take_leases([done], 30), [(1, document)])

    async def test_odd_text_committed(self: Any) -> None:
        """
        Outcomes holding odd text, in a taskset of an odd id, commit with
        their tokens and are read back byte for byte and counted.
        """
        backend = await self.backend()
        ok, bad = new_task_id(), new_task_id()
        documents = odd_documents(ok, bad)
        taskset = ODD_TASKSET + new_task_id()
        await backend.create_taskset(taskset, 2)
        claims = await backend.claim_tasks([ok, bad], 30)
        records = [
            OutcomeRecord(ok, documents[0], taskset),
            OutcomeRecord(bad, documents[1], taskset, True),
        ]
        committed = await backend.commit_outcomes(records, [claim.token for claim in claims])
        self.assertEqual(committed, [True, True])
        self.assertEqual(await backend.get_results([ok, bad]), documents)
        self.assertEqual(tuple(await backend.get_taskset(taskset)), (2, 2, 1))

    async def test_too_large_commit_refused(self: Any) -> None:
        """
        A commit of an outcome larger than the store takes is refused for
        good, before it is sent (StoreRefused naming the task); the claim
        stays the task's, so the short failure put in its place commits
        with the same token.
        """
        backend = await self.limited(64 * 1024)
        task, other = new_task_id(), new_task_id()
        claims = await backend.claim_tasks([task, other], 30)
        big = OutcomeRecord(task, success_document(task, "t", "x" * (64 * 1024)))
        fine = OutcomeRecord(other, success_document(other, "t", 1))
        tokens = [claim.token for claim in claims]
        error = await self.assertFailure(backend.commit_outcomes([fine, big], tokens), StoreRefused)
        self.assertEqual(error.task_id, task)
        self.assertEqual(await backend.get_results([task, other]), [None, None])
        (held,) = await backend.claim_tasks([task], 30)
        self.assertEqual(held.state, ClaimState.HELD)
        short = OutcomeRecord(task, failure_document(task, "t", ValueError("too large"), ""))
        self.assertEqual(await backend.commit_outcomes([fine, short], tokens), [True, True])
        self.assertEqual(await backend.get_results([task, other]), [short.document, fine.document])
