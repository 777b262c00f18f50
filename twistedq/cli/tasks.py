"""
The subcommands about tasks in the store and the queue: ``result`` and
``purge``.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, TextIO

from twistedq.cli.errors import EXIT_FAILED, EXIT_OK, CommandFailed, UsageError
from twistedq.cli.output import dumps, printable, text
from twistedq.cli.session import Session
from twistedq.outcome import Outcome
from twistedq.states import FAILURE, REVOKED, SUCCESS

__all__ = ["outcome_lines", "purge", "result"]


def _value(value: Any) -> str:
    return printable(value if isinstance(value, str) else dumps(value, pretty=False))


def outcome_lines(outcome: Outcome) -> list[str]:
    """
    A task's stored outcome for a person: id, task, status and, by
    status, the result, the exception and its traceback, the reason of a
    revocation or the next attempt of a retry.
    """
    lines = [
        f"id:        {printable(outcome.task_id)}",
        f"task:      {text(outcome.task)}",
        f"status:    {printable(outcome.status)}",
    ]
    if outcome.status == SUCCESS:
        lines.append(f"result:    {_value(outcome.result)}")
    exc = outcome.exc or {}
    if exc:
        kind, message = exc.get("type", "Exception"), exc.get("message", "")
        lines.append(f"exception: {printable(kind)}: {printable(message)}")
    if outcome.reason:
        lines.append(f"reason:    {printable(outcome.reason)}")
    if outcome.eta:
        lines.append(
            f"next run:  {printable(outcome.eta)} (retry {printable(outcome.retries or 0)})"
        )
    if outcome.sent_at:
        lines.append(f"sent:      {printable(outcome.sent_at)}")
    if outcome.date_done:
        lines.append(f"done:      {printable(outcome.date_done)}")
    if outcome.traceback:
        lines.append("traceback:")
        lines.extend("  " + printable(line) for line in str(outcome.traceback).rstrip().split("\n"))
    return lines


async def result(arguments: argparse.Namespace, session: Session, out: TextIO, err: TextIO) -> int:
    """
    ``twistedq result ID [--wait SECONDS]``: the task's status and result
    (or exception and traceback).  The exit status is 1 when the task
    failed or was revoked, when the store knows nothing of it, or when it
    was not ready within ``--wait``.
    """
    outcome = await session.outcome(arguments.id, arguments.wait)
    if not outcome.known:
        raise CommandFailed(f"the result store knows no task {arguments.id}")
    if arguments.json:
        print(dumps(dataclasses.asdict(outcome)), file=out)
    else:
        for line in outcome_lines(outcome):
            print(line, file=out)
    if outcome.status in (FAILURE, REVOKED):
        return EXIT_FAILED
    if arguments.wait and not outcome.ready:
        print(f"{arguments.id} is not ready after {arguments.wait:g} s", file=err)
        return EXIT_FAILED
    return EXIT_OK


async def purge(arguments: argparse.Namespace, session: Session, out: TextIO, err: TextIO) -> int:
    """
    ``twistedq purge [QUEUE] --yes``: delete the tasks waiting in the
    queue (not those a daemon holds), and say how many.
    """
    queue = arguments.queue_name or session.settings.queue
    if not arguments.yes:
        raise UsageError(f"purge deletes every task waiting in {queue!r}: add --yes to do it")
    purged = await session.purge_queue(queue)
    if arguments.json:
        print(dumps({"queue": queue, "purged": purged}), file=out)
    else:
        print(f"{purged} tasks purged from {queue}", file=out)
    return EXIT_OK
