"""
The one store step of a chord beyond the taskset count: electing the
member that publishes the chord's callback, written once over the store's
own primitives so that every store has it.

A chord's members are counted as a taskset's are (in the store, each once
however often its outcome is stored, atomically with the outcome where
the store has claims).  Once the count is complete, several members may
see it so (they finished together; one was delivered again).  Each then
asks :py:func:`elect_publisher`: the first one writes the callback's
pending record naming itself, with the store's set-if-absent write
(``mark_sent``: ``SET NX`` in Redis, ``add`` in memcached, ``putkeep`` in
Tokyo Tyrant, ``INSERT OR IGNORE`` in SQLite, a conflict-ignoring insert
in Django's database, a check in the memory store), and every member
reads the record back: only the one it names publishes.  That member's
message is acknowledged only after the publish, so if its daemon dies
first, its redelivery is elected again (the record names it) and
publishes again; the claim on the callback's id makes that harmless.
"""

from __future__ import annotations

import json

from twisted.internet import defer

from twistedq.backends.base import IResultBackend
from twistedq.outcome import pending_document
from twistedq.states import PENDING

__all__ = ["PUBLISHER_FIELD", "elect_publisher", "publisher_document"]

#: The field of a chord callback's pending record naming the member
#: elected to publish it.
PUBLISHER_FIELD = "chord_publisher"


def publisher_document(callback_id: str, task: str, member_id: str) -> bytes:
    """
    The pending record of a chord's callback naming ``member_id`` as its
    publisher.
    """
    document = json.loads(pending_document(callback_id, task))
    document[PUBLISHER_FIELD] = member_id
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


async def elect_publisher(
    backend: IResultBackend, callback_id: str, task: str, member_id: str
) -> bool:
    """
    Whether the member ``member_id`` of a complete chord publishes its
    callback: it is the first to ask, or the one elected before (asking
    again after a crash).  False when another member was elected, or the
    callback has an outcome already.  A record the store lost (an
    eviction) elects whoever asks: a second publish runs nothing twice.
    """
    await backend.mark_sent([(callback_id, publisher_document(callback_id, task, member_id))])
    found = await defer.maybeDeferred(backend.get_result, callback_id)
    if found is None:
        return True
    try:
        record = json.loads(found)
    except ValueError:
        return False
    if not isinstance(record, dict) or record.get("status") != PENDING:
        return False
    return record.get(PUBLISHER_FIELD) in (member_id, None)
