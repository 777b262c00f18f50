"""
``twistedq-deadletter`` (or ``python -m twistedq.deadletter``): list, show,
republish and purge the messages in a task queue's dead-letter queue.

Reading never loses a message: each is taken with ``basic.get`` and left
unacknowledged, and every one not explicitly removed goes back to the
queue, in its place, when the command is done.  A republished message is
removed from the dead-letter queue only after the broker confirmed it back
in the task queue.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from twisted.internet import defer
from twisted.internet.task import react

from twistedq.amqp.broker import BrokerAddress, BrokerConnection, Topology
from twistedq.amqp.deadletters import DeadLetter, DeadLetterQueue, json_document
from twistedq.conf import Settings

__all__ = ["main", "parser", "run"]

#: The most body bytes ``show`` prints of a body that is not JSON.
SHOW_BYTES = 64 * 1024


class CommandError(Exception):
    """
    The command cannot do what was asked; its text is for the user.
    """


def parser() -> argparse.ArgumentParser:
    """
    The command line of ``twistedq-deadletter``.
    """
    top = argparse.ArgumentParser(
        prog="twistedq-deadletter",
        description="List, show, republish or purge the dead letters of a twistedq queue.",
    )
    top.add_argument(
        "--broker",
        help="AMQP broker URL [default: $TWISTEDQ_BROKER_URL or amqp://guest:guest@127.0.0.1:5672/]",
    )
    top.add_argument(
        "--queue",
        help="the task queue whose dead letters (QUEUE.dead) to read "
        "[default: $TWISTEDQ_QUEUE or twistedq]",
    )
    top.add_argument(
        "--exchange",
        help="the exchange republished tasks go through [default: $TWISTEDQ_EXCHANGE or twistedq]",
    )
    top.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the broker [default: 30]",
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "list",
        help="one line per dead letter: position, task id, task, reason, detail, time",
    )
    show = commands.add_parser("show", help="the headers and body of one dead letter")
    show.add_argument("letter", metavar="N|TASK_ID", help="position (from 1) or task id")
    republish = commands.add_parser(
        "republish", help="send dead letters back to the task queue, without their reason"
    )
    which = republish.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every dead letter")
    which.add_argument("letters", nargs="*", default=[], metavar="TASK_ID", help="task ids")
    commands.add_parser("purge", help="delete every dead letter")
    return top


def _field(value: str | None) -> str:
    if not value:
        return "-"
    return " ".join(value.split())


def list_line(letter: DeadLetter) -> str:
    """
    One tab-separated line: position, task id, task name, reason, detail,
    time (``-`` where unknown).
    """
    return "\t".join(
        [
            str(letter.position),
            _field(letter.task_id),
            _field(letter.task),
            _field(letter.reason),
            _field(letter.detail),
            _field(letter.time),
        ]
    )


def _matches(letter: DeadLetter, wanted: str) -> bool:
    if wanted.isdigit():
        return letter.position == int(wanted)
    return letter.task_id == wanted


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return repr(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def show_text(letter: DeadLetter) -> str:
    """
    The properties, headers and body of a dead letter, pretty-printed.
    """
    properties = {k: v for k, v in letter.properties.items() if k != "headers"}
    lines = [
        f"position: {letter.position}",
        f"task id: {letter.task_id or '-'}",
        f"task: {letter.task or '-'}",
        f"reason: {letter.reason}",
        f"detail: {letter.detail or '-'}",
        f"time: {letter.time or '-'}",
        "properties: " + json.dumps(_jsonable(properties), indent=2, sort_keys=True),
        "headers: " + json.dumps(_jsonable(letter.headers), indent=2, sort_keys=True),
    ]
    document = json_document(letter.body)
    pretty = None
    if document is not None:
        try:
            pretty = json.dumps(document, indent=2, ensure_ascii=False)
        except RecursionError:  # decoded, but too deep to print indented
            pretty = None
    if pretty is None:
        shown = letter.body[:SHOW_BYTES]
        more = len(letter.body) - len(shown)
        text = repr(shown) + (f" ... and {more} bytes more" if more else "")
        kind = "JSON nested too deeply to print" if document is not None else "not UTF-8 JSON"
        lines.append(f"body ({len(letter.body)} bytes, {kind}):")
        lines.append(text)
    else:
        lines.append(f"body ({len(letter.body)} bytes, JSON):")
        lines.append(pretty)
    return "\n".join(lines)


async def run(arguments: argparse.Namespace, reactor: Any, out: TextIO, err: TextIO) -> int:
    """
    Run one parsed command against the broker; return the exit status.
    """
    settings = Settings.from_environment(
        broker_url=arguments.broker, queue=arguments.queue, exchange=arguments.exchange
    )
    topology = Topology(exchange=settings.exchange, queue=settings.queue)
    connection = BrokerConnection(BrokerAddress.from_url(settings.broker_url), reactor)
    connection.startService()
    try:
        connected = connection.when_connected()
        connected.addTimeout(arguments.timeout, reactor)
        try:
            protocol = await connected
        except defer.TimeoutError:
            raise CommandError(
                f"could not reach the broker at {connection.address} within {arguments.timeout} s"
            ) from None
        queue = DeadLetterQueue(protocol, topology, confirm_timeout=arguments.timeout)
        return await _command(arguments, queue, topology, out, err)
    finally:
        await connection.stopService()


async def _command(
    arguments: argparse.Namespace,
    queue: DeadLetterQueue,
    topology: Topology,
    out: TextIO,
    err: TextIO,
) -> int:
    name = topology.dead_letter_queue
    if arguments.command == "list":
        count = await queue.read(lambda letter: print(list_line(letter), file=out))
        print(f"{count} dead letters in {name}", file=err)
        return 0
    if arguments.command == "show":
        found: list[str] = []

        def show(letter: DeadLetter) -> None:
            if not found and _matches(letter, arguments.letter):
                found.append(show_text(letter))

        await queue.read(show)
        if not found:
            raise CommandError(f"no dead letter {arguments.letter} in {name}")
        print(found[0], file=out)
        return 0
    if arguments.command == "republish":
        wanted = set(arguments.letters)

        def select(letter: DeadLetter) -> bool:
            return arguments.all or any(_matches(letter, w) for w in wanted)

        sent = await queue.republish(select)
        for letter in sent:
            print(f"republished\t{_field(letter.task_id)}\t{_field(letter.task)}", file=out)
        print(f"{len(sent)} dead letters republished to {topology.queue}", file=err)
        missing = {w for w in wanted if not any(_matches(letter, w) for letter in sent)}
        if missing:
            raise CommandError(f"not found in {name}: {', '.join(sorted(missing))}")
        return 0
    if arguments.command == "purge":
        count = await queue.purge()
        print(f"{count} dead letters purged from {name}", file=err)
        return 0
    raise CommandError(f"unknown command {arguments.command}")  # pragma: no cover


def main(argv: Sequence[str] | None = None) -> None:
    """
    The console entry point: parse ``argv`` (by default the command line),
    run the command and exit with its status.
    """
    arguments = parser().parse_args(argv)

    async def command(reactor: Any) -> None:
        try:
            status = await run(arguments, reactor, sys.stdout, sys.stderr)
        except CommandError as e:
            print(f"twistedq-deadletter: {e}", file=sys.stderr)
            raise SystemExit(1) from None
        if status:
            raise SystemExit(status)

    react(lambda reactor: defer.Deferred.fromCoroutine(command(reactor)))


if __name__ == "__main__":
    main()
