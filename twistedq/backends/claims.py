"""
Claims on tasks, written once.

:py:class:`~twistedq.backends.base.IClaimStore` is kept by
:py:class:`FencedClaims`, which every store with claims inherits: it
decides what a claim finds (DONE, HELD or CLAIMED) and which step the
store takes for each operation.  The store provides only the steps that
must be atomic on its side, :py:class:`~twistedq.backends.base.IFencedLeases`:
a Lua script on Redis, a transaction or a conditional ``UPDATE`` on SQLite
and the Django database, plain code in the memory store, and best-effort
sequences of ``add``, ``incr`` and compare-and-set on memcached.

Per task a store keeps a *fence*, the latest token it gave (none before
the first claim), and at most one live *lease*, held by the fence's token
and lapsing after its time.  Every step compares a token with the fence,
so an attempt whose token is no longer the fence changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from twisted.internet import defer

from twistedq.backends.base import ClaimState, OutcomeRecord, ParkedTask, TaskClaim

__all__ = [
    "STOPPING",
    "FencedClaims",
    "holds_any",
    "is_final_document",
    "is_superseded",
    "parked_from_value",
    "parked_value",
]


def is_final_document(document: bytes | str | None) -> bool:
    """
    Whether a stored document is a final outcome (SUCCESS, FAILURE or
    REVOKED) that ends the task: not a pending record, and not the failure
    recorded for a message sent to the dead-letter queue, which may be
    republished and run.
    """
    if document is None:
        return False
    try:
        parsed = json.loads(document)
    except ValueError:
        return False
    return (
        isinstance(parsed, dict)
        and parsed.get("status") in ("SUCCESS", "FAILURE", "REVOKED")
        and "dead_letter" not in parsed
    )


def is_superseded(document: bytes | str | None, retries: int | None) -> bool:
    """
    Whether a stored document makes a message with ``retries`` stale: the
    task is final, or a RETRY outcome scheduled a later attempt (the
    message is a copy of an earlier attempt, delivered again).  With
    ``retries`` None only a final outcome counts.
    """
    if is_final_document(document):
        return True
    if document is None or retries is None:
        return False
    raw = document if isinstance(document, bytes) else document.encode()
    if b'"RETRY"' not in raw:
        return False
    try:
        parsed = json.loads(raw)
    except ValueError:
        return False
    later = parsed.get("retries") if isinstance(parsed, dict) else None
    return parsed.get("status") == "RETRY" and isinstance(later, int) and later > retries


#: The statuses a document must name, as JSON strings, to stop a claim
#: (:py:func:`is_superseded`): a store takes no lease where the document
#: holds one of them, and the claim then decides.
STOPPING = (b'"SUCCESS"', b'"FAILURE"', b'"REVOKED"', b'"RETRY"')


def holds_any(document: bytes | None, parts: Sequence[bytes]) -> bool:
    """
    Whether ``document`` holds one of the byte strings ``parts``, for a
    store that checks the ``unless`` of ``take_leases`` itself.
    """
    return document is not None and any(part in document for part in parts)


def parked_value(task: ParkedTask) -> bytes:
    """
    A parked message as one value, ``<token>\\n<queue>\\n<body>``, for a
    store that keeps it as one item.
    """
    return b"%d\n%s\n%s" % (task.token, task.queue.encode(), task.body)


def parked_from_value(task_id: str, value: bytes) -> ParkedTask:
    """
    The parked message of ``task_id`` kept as ``value`` by
    :py:func:`parked_value`.
    """
    token, queue, body = value.split(b"\n", 2)
    return ParkedTask(task_id, int(token), queue.decode(), body)


class FencedClaims:
    """
    :py:class:`~twistedq.backends.base.IClaimStore` over the store's own
    steps (:py:class:`~twistedq.backends.base.IFencedLeases`) and its
    ``get_results``: a store inherits it and implements those.
    """

    def claim_tasks(
        self, task_ids: Sequence[str], lease: float, retries: Sequence[int] | None = None
    ) -> defer.Deferred[list[TaskClaim]]:
        """
        A task whose stored outcome supersedes the message (see
        :py:func:`is_superseded`) is DONE and its lease is left alone; of
        the others, one whose lease another attempt holds is HELD, and the
        rest are CLAIMED with the tokens their leases were taken with.

        One step suffices where the stored document names no status that
        could stop the claim (:py:data:`STOPPING`): the store takes the
        lease unless the document does.  Only a task whose document names
        one but does not supersede the message (an earlier attempt's RETRY,
        a dead-lettered failure) needs a second step, whose answer is read
        again: if a commit came in between, the lease just taken is ended
        and the task is DONE, as if the claim had come after the commit.
        """
        ids = list(task_ids)
        attempts: list[int | None] = list(retries) if retries is not None else [None] * len(ids)
        if not ids:
            return defer.succeed([])

        async def claim() -> list[TaskClaim]:
            found = [TaskClaim(ClaimState.DONE)] * len(ids)
            again = []
            for i, (token, document) in enumerate(await self.take_leases(ids, lease, STOPPING)):
                if token is not None:
                    found[i] = TaskClaim(ClaimState.CLAIMED, token)
                elif not holds_any(document, STOPPING):
                    found[i] = TaskClaim(ClaimState.HELD)
                elif not is_superseded(document, attempts[i]):
                    again.append(i)
            if not again:
                return found
            given_back = []
            taken = await self.take_leases([ids[i] for i in again], lease)
            for i, (token, document) in zip(again, taken, strict=True):
                if is_superseded(document, attempts[i]):
                    if token is not None:
                        given_back.append((ids[i], token))
                elif token is None:
                    found[i] = TaskClaim(ClaimState.HELD)
                else:
                    found[i] = TaskClaim(ClaimState.CLAIMED, token)
            if given_back:
                await self.end_leases(given_back)
            return found

        return defer.Deferred.fromCoroutine(claim())

    def renew_claims(
        self, claims: Sequence[tuple[str, int]], lease: float
    ) -> defer.Deferred[list[bool]]:
        """
        A claim is renewed while its token holds the task's live lease: a
        lapsed one stays lapsed, even when no other attempt took it.
        """
        return self.extend_leases(claims, lease) if claims else defer.succeed([])

    def release_claims(self, claims: Sequence[tuple[str, int]]) -> defer.Deferred[None]:
        return self.end_leases(claims) if claims else defer.succeed(None)

    def commit_outcomes(
        self, records: Sequence[OutcomeRecord], tokens: Sequence[int]
    ) -> defer.Deferred[list[bool]]:
        """
        An outcome commits with the task's latest token, whether or not its
        lease is still live: only a newer claim fences it off.
        """
        return self.commit_fenced(records, tokens) if records else defer.succeed([])

    def park_tasks(self, parked: Sequence[ParkedTask]) -> defer.Deferred[list[bool]]:
        return self.park_leased(parked) if parked else defer.succeed([])

    def parked_orphans(self, limit: int) -> defer.Deferred[list[ParkedTask]]:
        """
        Looks at up to four times ``limit`` parked messages without a live
        lease; those whose task has a final outcome are dropped.
        """

        async def find() -> list[ParkedTask]:
            orphans: list[ParkedTask] = []
            done: list[str] = []
            for task, document in await self.unleased_parked(4 * limit):
                if is_final_document(document):
                    done.append(task.task_id)
                elif len(orphans) < limit:
                    orphans.append(task)
            if done:
                await self.drop_parked(done)
            return orphans

        return defer.Deferred.fromCoroutine(find())

    # What the store provides: IFencedLeases, and IResultBackend's read.

    def get_results(self, task_ids: Sequence[str]) -> defer.Deferred[list[bytes | None]]:
        raise NotImplementedError

    def take_leases(
        self, task_ids: Sequence[str], lease: float, unless: Sequence[bytes] = ()
    ) -> defer.Deferred[list[tuple[int | None, bytes | None]]]:
        raise NotImplementedError

    def extend_leases(
        self, claims: Sequence[tuple[str, int]], lease: float
    ) -> defer.Deferred[list[bool]]:
        raise NotImplementedError

    def end_leases(self, claims: Sequence[tuple[str, int]]) -> defer.Deferred[None]:
        raise NotImplementedError

    def commit_fenced(
        self, records: Sequence[OutcomeRecord], tokens: Sequence[int]
    ) -> defer.Deferred[list[bool]]:
        raise NotImplementedError

    def park_leased(self, parked: Sequence[ParkedTask]) -> defer.Deferred[list[bool]]:
        raise NotImplementedError

    def unleased_parked(self, most: int) -> defer.Deferred[list[tuple[ParkedTask, bytes | None]]]:
        raise NotImplementedError

    def drop_parked(self, task_ids: Sequence[str]) -> defer.Deferred[None]:
        raise NotImplementedError
