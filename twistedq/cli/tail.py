"""
``twistedq events``: a live tail of the events the daemons publish.
"""

from __future__ import annotations

import argparse
import fnmatch
import re
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from twisted.internet import defer

from twistedq.cli.errors import EXIT_OK
from twistedq.cli.output import dumps, event_line
from twistedq.cli.session import Session

__all__ = ["DEFAULT_TYPES", "EventFilter", "events", "topic_patterns"]

#: The event types shown when ``--type`` is not given: all but the
#: heartbeats.
DEFAULT_TYPES = ("task.*", "daemon.online", "daemon.offline")

_WORD = re.compile(r"[A-Za-z0-9_-]+\Z")


def topic_patterns(globs: Sequence[str]) -> list[str]:
    """
    The AMQP topic patterns that bind at least the event types matching
    ``globs``: a glob made of literal words and whole-word ``*`` binds as
    itself, any other (``task.fail*``, ``*``) binds every type (``#``).
    """
    patterns: list[str] = []
    for glob in globs:
        words = glob.split(".")
        if all(word == "*" or _WORD.match(word) for word in words) and len(words) == 2:
            pattern = glob
        else:
            return ["#"]
        if pattern not in patterns:
            patterns.append(pattern)
    return patterns


class EventFilter:
    """
    Which events to show: a type matching one of ``types``, and, when
    given, a task name matching ``task`` and the task id ``task_id``
    (globs, as in a shell).
    """

    def __init__(
        self, types: Sequence[str], task: str | None = None, task_id: str | None = None
    ) -> None:
        self.types = list(types)
        self.task = task
        self.task_id = task_id

    def __call__(self, event: dict[str, Any]) -> bool:
        kind = str(event.get("type", ""))
        if not any(fnmatch.fnmatchcase(kind, glob) for glob in self.types):
            return False
        if self.task is not None and not fnmatch.fnmatchcase(
            str(event.get("name") or ""), self.task
        ):
            return False
        return self.task_id is None or event.get("id") == self.task_id


class _Printer:
    """
    Prints the events that pass the filter until ``count`` were printed,
    then fires :py:attr:`done`.
    """

    def __init__(
        self, keep: Callable[[dict[str, Any]], bool], count: int | None, json: bool, out: TextIO
    ) -> None:
        self.keep = keep
        self.left = count
        self.json = json
        self.out = out
        self.done: defer.Deferred[None] = defer.Deferred()

    def __call__(self, batch: list[dict[str, Any]]) -> None:
        for event in batch:
            if self.done.called:
                return
            if not isinstance(event, dict) or not self.keep(event):
                continue
            line = dumps(event, pretty=False) if self.json else event_line(event)
            try:
                print(line, file=self.out, flush=True)
            except (BrokenPipeError, ValueError):  # the reader went away
                self.finish()
                return
            if self.left is not None:
                self.left -= 1
                if self.left <= 0:
                    self.finish()

    def finish(self, _: object = None) -> None:
        if not self.done.called:
            self.done.callback(None)


async def events(arguments: argparse.Namespace, session: Session, out: TextIO, err: TextIO) -> int:
    """
    ``twistedq events``: print each event as it comes, until Ctrl-C or
    ``--count`` events.
    """
    types = arguments.type or list(DEFAULT_TYPES)
    printer = _Printer(
        EventFilter(types, arguments.task, arguments.id), arguments.count, arguments.json, out
    )
    session.interrupted.addCallback(printer.finish)
    await session.receive_events(
        topic_patterns(types), printer, lambda text: print(text, file=err, flush=True)
    )
    exchange = f"{session.settings.exchange}.events"
    print(f"listening for events on {exchange} (Ctrl-C to stop)", file=err, flush=True)
    await printer.done
    return EXIT_OK
