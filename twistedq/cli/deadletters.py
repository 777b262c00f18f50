"""
``twistedq deadletter list|show|republish|purge`` (also installed as
``twistedq-deadletter``): the messages in a task queue's dead-letter
queue.

Reading never loses a message: each is taken with ``basic.get`` and left
unacknowledged, and every one not explicitly removed goes back to the
queue, in its place, when the command is done.  A republished message is
removed from the dead-letter queue only after the broker confirmed it back
in the task queue.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO

from twistedq.amqp.deadletters import DeadLetter, json_document
from twistedq.cli.errors import EXIT_OK, CommandFailed, UsageError
from twistedq.cli.output import dumps, printable
from twistedq.cli.session import Session

__all__ = ["SHOW_BYTES", "add_commands", "deadletter", "letter_document", "list_line", "show_text"]

#: The most body bytes ``show`` prints of a body that is not JSON.
SHOW_BYTES = 64 * 1024


def add_commands(
    parent: argparse.ArgumentParser,
    dest: str,
    leaf: argparse.ArgumentParser | None = None,
    confirm_purge: bool = False,
) -> None:
    """
    Add ``list``, ``show``, ``republish`` and ``purge`` to ``parent``,
    their name in ``dest``; each also takes the options of ``leaf``.

    :param confirm_purge: ``purge`` refuses to run without ``--yes`` (the
        old ``twistedq-deadletter purge`` does not ask for it).
    """
    parents = [leaf] if leaf is not None else []
    commands = parent.add_subparsers(dest=dest, required=True, metavar="COMMAND")
    commands.add_parser(
        "list",
        parents=parents,
        help="one line per dead letter: position, task id, task, reason, detail, time",
    )
    show = commands.add_parser(
        "show", parents=parents, help="the headers and body of one dead letter"
    )
    show.add_argument("letter", metavar="N|TASK_ID", help="position (from 1) or task id")
    republish = commands.add_parser(
        "republish",
        parents=parents,
        help="send dead letters back to the task queue, without their reason",
    )
    which = republish.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every dead letter")
    which.add_argument("letters", nargs="*", default=[], metavar="TASK_ID", help="task ids")
    purge = commands.add_parser("purge", parents=parents, help="delete every dead letter")
    if confirm_purge:
        purge.add_argument("--yes", action="store_true", help="really delete them")


def _field(value: str | None) -> str:
    if not value:
        return "-"
    return printable(value, fold=True)


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


def letter_document(letter: DeadLetter, body: bool = False) -> dict[str, Any]:
    """
    A dead letter as JSON: position, task id, task, reason, detail, time,
    and with ``body`` its properties, headers and body (text, or the
    ``repr`` of bytes that are not UTF-8).
    """
    document: dict[str, Any] = {
        "position": letter.position,
        "task_id": letter.task_id,
        "task": letter.task,
        "reason": letter.reason,
        "detail": letter.detail,
        "time": letter.time,
    }
    if body:
        properties = {k: v for k, v in letter.properties.items() if k != "headers"}
        document["properties"] = _jsonable(properties)
        document["headers"] = _jsonable(letter.headers)
        document["body"] = _jsonable(letter.body[:SHOW_BYTES])
        document["body_bytes"] = len(letter.body)
    return document


def show_text(letter: DeadLetter) -> str:
    """
    The properties, headers and body of a dead letter, pretty-printed.
    """
    properties = {k: v for k, v in letter.properties.items() if k != "headers"}
    lines = [
        f"position: {letter.position}",
        f"task id: {printable(letter.task_id or '-')}",
        f"task: {printable(letter.task or '-')}",
        f"reason: {printable(letter.reason)}",
        f"detail: {printable(letter.detail or '-')}",
        f"time: {printable(letter.time or '-')}",
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
        lines.extend(printable(line) for line in pretty.split("\n"))
    return "\n".join(lines)


async def deadletter(
    arguments: argparse.Namespace, session: Session, out: TextIO, err: TextIO
) -> int:
    """
    ``twistedq deadletter COMMAND``: list, show, republish or purge the
    dead letters; a summary goes to ``err``.
    """
    topology = session.topology
    name = topology.dead_letter_queue
    command = arguments.letter_command
    if command == "purge" and getattr(arguments, "yes", None) is False:
        raise UsageError(f"purge deletes every dead letter in {name!r}: add --yes to do it")
    queue = await session.dead_letters(confirm_timeout=arguments.timeout)
    emit_json = arguments.json
    if command == "list":
        listed: list[dict[str, Any]] = []

        def line(letter: DeadLetter) -> None:
            if emit_json:
                listed.append(letter_document(letter))
            else:
                print(list_line(letter), file=out)

        count = await queue.read(line)
        if emit_json:
            print(dumps(listed), file=out)
        print(f"{count} dead letters in {name}", file=err)
        return EXIT_OK
    if command == "show":
        found: list[DeadLetter] = []

        def show(letter: DeadLetter) -> None:
            if not found and _matches(letter, arguments.letter):
                found.append(letter)

        await queue.read(show)
        if not found:
            raise CommandFailed(f"no dead letter {arguments.letter} in {name}")
        shown = dumps(letter_document(found[0], body=True)) if emit_json else show_text(found[0])
        print(shown, file=out)
        return EXIT_OK
    if command == "republish":
        return await _republish(arguments, queue, topology.queue, name, out, err)
    count = await queue.purge()
    if emit_json:
        print(dumps({"queue": name, "purged": count}), file=out)
    print(f"{count} dead letters purged from {name}", file=err)
    return EXIT_OK


async def _republish(
    arguments: argparse.Namespace, queue: Any, task_queue: str, name: str, out: TextIO, err: TextIO
) -> int:
    wanted = set(arguments.letters)

    def select(letter: DeadLetter) -> bool:
        return bool(arguments.all) or any(_matches(letter, w) for w in wanted)

    sent = await queue.republish(select)
    if arguments.json:
        print(dumps([letter_document(letter) for letter in sent]), file=out)
    else:
        for letter in sent:
            print(f"republished\t{_field(letter.task_id)}\t{_field(letter.task)}", file=out)
    print(f"{len(sent)} dead letters republished to {task_queue}", file=err)
    missing = {w for w in wanted if not any(_matches(letter, w) for letter in sent)}
    if missing:
        raise CommandFailed(f"not found in {name}: {', '.join(sorted(missing))}")
    return EXIT_OK
