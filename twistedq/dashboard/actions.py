"""
The dashboard's actions: revoke, terminate, pause or resume a periodic
task, republish a dead letter.  Each is a function returning a Deferred of
a JSON-ready answer; :py:class:`OperatorActions` holds those the daemon can
do and the operator token that allows them.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer

from twistedq.amqp.broker import BrokerConnection, Topology
from twistedq.amqp.deadletters import DeadLetter, DeadLetterQueue
from twistedq.message import is_task_id

__all__ = [
    "TOKEN_HEADER",
    "ActionRefused",
    "OperatorActions",
    "dead_letter_reader",
    "dead_letter_republisher",
]

#: The request header carrying the operator token (a header, not a cookie,
#: so another site cannot make the browser send it).
TOKEN_HEADER = b"x-twistedq-token"

Answer = defer.Deferred[Any]


class ActionRefused(ValueError):
    """
    The action's arguments cannot be used (answered 400).
    """


def task_ids(arguments: dict[str, Any]) -> list[str]:
    """
    The ``ids`` of an action's arguments, each a task id.

    :raises ActionRefused: there are none, or one is not a task id.
    """
    ids = arguments.get("ids")
    if not isinstance(ids, list) or not ids or len(ids) > 1000:
        raise ActionRefused("ids: a list of 1 to 1000 task ids is needed")
    for task_id in ids:
        if not isinstance(task_id, str) or not is_task_id(task_id):
            raise ActionRefused(f"not a task id: {task_id!r}")
    return ids


@dataclass
class OperatorActions:
    """
    What an operator holding ``token`` may do from the dashboard.  An action
    left ``None`` is not offered.

    :param revoke: ``revoke(ids)`` stores REVOKED for tasks not yet run
        (:py:meth:`twistedq.client.AsyncClient.revoke`) and has the daemons
        drop those they hold; fires with the answer (``revoked``: the ids
        revoked in the store or by a daemon; ``running``: those running,
        which only terminate stops).
    :param terminate: ``terminate(ids)`` revokes and kills the children
        running them (through remote control).
    :param set_enabled: ``set_enabled(name, enabled)`` pauses or resumes a
        periodic task.
    :param republish: ``republish(ids)`` sends the dead letters of these
        tasks back to the task queue; fires with the ids sent.
    :param dead_letters: ``dead_letters(limit)`` lists the first dead
        letters.
    """

    token: str
    revoke: Callable[[list[str]], Answer] | None = None
    terminate: Callable[[list[str]], Answer] | None = None
    set_enabled: Callable[[str, bool], Answer] | None = None
    republish: Callable[[list[str]], Answer] | None = None
    dead_letters: Callable[[int], Answer] | None = None

    def allows(self, offered: bytes | str | None) -> bool:
        """
        Whether ``offered`` is the token, compared in constant time.
        """
        if offered is None or not self.token:
            return False
        if isinstance(offered, str):
            offered = offered.encode("utf-8")
        return hmac.compare_digest(offered, self.token.encode("utf-8"))

    def offered(self) -> list[str]:
        """
        The names of the actions there are.
        """
        names = []
        if self.revoke is not None:
            names.append("revoke")
        if self.terminate is not None:
            names.append("terminate")
        if self.set_enabled is not None:
            names += ["pause", "resume"]
        if self.republish is not None:
            names.append("republish")
        return names

    def run(self, name: str, arguments: dict[str, Any]) -> Answer:
        """
        Run the action ``name``; fires with its answer.

        :raises ActionRefused: no such action, or bad arguments.
        """
        if name not in self.offered():
            raise ActionRefused(f"no action {name!r}")
        if name == "revoke" and self.revoke is not None:
            return self.revoke(task_ids(arguments))
        if name == "terminate" and self.terminate is not None:
            return self.terminate(task_ids(arguments))
        if name in ("pause", "resume") and self.set_enabled is not None:
            task = arguments.get("name")
            if not isinstance(task, str) or not task:
                raise ActionRefused("name: the periodic task's name is needed")
            enabled = name == "resume"
            return self.set_enabled(task, enabled).addCallback(
                lambda _: {"name": task, "enabled": enabled}
            )
        if name == "republish" and self.republish is not None:
            return self.republish(task_ids(arguments)).addCallback(lambda ids: {"republished": ids})
        raise ActionRefused(f"no action {name!r}")


def _letter_row(letter: DeadLetter) -> dict[str, Any]:
    return {
        "position": letter.position,
        "id": letter.task_id,
        "name": letter.task,
        "reason": letter.reason,
        "detail": letter.detail,
        "time": letter.time,
    }


def dead_letter_reader(connection: BrokerConnection, topology: Topology) -> Callable[[int], Answer]:
    """
    ``read(limit)``: the first ``limit`` dead letters (id, name, reason,
    detail, time), left in their queue.  Reading walks the whole queue.
    """

    async def read(limit: int) -> list[dict[str, Any]]:
        protocol = await connection.when_connected(fail_after=1)
        rows: list[dict[str, Any]] = []

        def visit(letter: DeadLetter) -> None:
            if len(rows) < limit:
                rows.append(_letter_row(letter))

        await DeadLetterQueue(protocol, topology).read(visit)
        return rows

    return lambda limit: defer.Deferred.fromCoroutine(read(limit))


def dead_letter_republisher(
    connection: BrokerConnection, topology: Topology
) -> Callable[[Sequence[str]], Answer]:
    """
    ``republish(ids)``: send the dead letters of these tasks back to the
    task queue (:py:meth:`twistedq.amqp.deadletters.DeadLetterQueue.republish`);
    fires with the ids sent.
    """

    async def republish(ids: Sequence[str]) -> list[str]:
        wanted = set(ids)
        protocol = await connection.when_connected(fail_after=1)
        sent = await DeadLetterQueue(protocol, topology).republish(
            lambda letter: letter.task_id in wanted
        )
        return [letter.task_id for letter in sent if letter.task_id is not None]

    return lambda ids: defer.Deferred.fromCoroutine(republish(ids))
