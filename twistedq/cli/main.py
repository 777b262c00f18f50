"""
The command line of ``twistedq``, and how a command runs: on a reactor in
a background thread (:py:mod:`twistedq.reactor_thread`), while the main
thread waits and turns Ctrl-C into the end of the command.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TextIO

from twisted.internet import defer
from twisted.internet.error import ConnectionDone, ConnectionLost

from twistedq import __version__
from twistedq.cli.daemons import inspect, ping, revoke, status
from twistedq.cli.deadletters import add_commands, deadletter
from twistedq.cli.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CommandError,
)
from twistedq.cli.output import printable
from twistedq.cli.session import Session, reason
from twistedq.cli.tail import events
from twistedq.cli.tasks import purge, result
from twistedq.conf import Settings, SettingsError, parse_timeout
from twistedq.message import is_task_id
from twistedq.reactor_thread import ReactorThread, reactor_thread

__all__ = ["COMMANDS", "DEFAULT_TIMEOUT", "common_options", "execute", "main", "parser", "run"]

#: How long to wait for the broker or the store by default, in seconds.
DEFAULT_TIMEOUT = 5.0
#: How long to gather the daemons' replies by default, in seconds.
DEFAULT_REPLY_TIMEOUT = 1.0
#: How long an interrupted command may take to stop cleanly, in seconds.
STOP_GRACE = 2.0

Command = Callable[[argparse.Namespace, Session, TextIO, TextIO], Awaitable[int]]

#: Each subcommand's implementation.
COMMANDS: dict[str, Command] = {
    "status": status,
    "ping": ping,
    "inspect": inspect,
    "events": events,
    "revoke": revoke,
    "result": result,
    "purge": purge,
    "deadletter": deadletter,
}

INSPECT_WHAT = ("active", "reserved", "scheduled", "registered", "stats")


def _seconds(value: str) -> float:
    try:
        return parse_timeout(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _name(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError("an empty name is not a queue or exchange name")
    return value


def _task_id(value: str) -> str:
    if not is_task_id(value):
        raise argparse.ArgumentTypeError(
            f"{printable(value)!r} is not a task id (a lower-case UUID, such as "
            "5f0c6a52-2a8e-4d0e-9a51-0d4c1e7f3b10)"
        )
    return value


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive whole number")
    return int(value)


def common_options(defaults: bool = True) -> argparse.ArgumentParser:
    """
    The options every subcommand takes: where the broker and the store
    are, the timeout, ``--json``.  Without ``defaults`` they keep the value
    given before the subcommand unless given again after it.
    """
    options = argparse.ArgumentParser(add_help=False)

    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    options.add_argument(
        "--broker",
        default=default(None),
        metavar="URL",
        help="AMQP broker URL [default: $TWISTEDQ_BROKER_URL or amqp://guest:guest@127.0.0.1:5672/]",
    )
    options.add_argument(
        "--queue",
        type=_name,
        default=default(None),
        metavar="NAME",
        help="the task queue [default: $TWISTEDQ_QUEUE or twistedq]",
    )
    options.add_argument(
        "--exchange",
        type=_name,
        default=default(None),
        metavar="NAME",
        help="the exchange tasks go through; events and control use EXCHANGE.events "
        "and EXCHANGE.control [default: $TWISTEDQ_EXCHANGE or twistedq]",
    )
    options.add_argument(
        "--result-backend",
        default=default(None),
        metavar="URL",
        help="the result store [default: $TWISTEDQ_RESULT_BACKEND or sqlite://]",
    )
    options.add_argument(
        "--timeout",
        type=_seconds,
        default=default(DEFAULT_TIMEOUT),
        metavar="SECONDS",
        help=f"how long to wait for the broker or the store [default: {DEFAULT_TIMEOUT:g}]",
    )
    options.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print JSON (events: one object per line)",
    )
    return options


def _control_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--destination",
        "-d",
        action="append",
        metavar="NAME",
        help="ask only this daemon (host:pid, or its --name); may be repeated",
    )
    options.add_argument(
        "--reply-timeout",
        type=_seconds,
        default=DEFAULT_REPLY_TIMEOUT,
        metavar="SECONDS",
        help="how long to gather the daemons' replies "
        f"[default: {DEFAULT_REPLY_TIMEOUT:g}; less once every --destination answered]",
    )
    return options


def _event_filters(tail: argparse.ArgumentParser) -> None:
    """
    The options of ``twistedq events``: which events it prints.
    """
    tail.add_argument(
        "--type",
        action="append",
        metavar="GLOB",
        help="only events whose type matches (task.failed, 'task.*', 'daemon.*'); may be "
        "repeated [default: every type but daemon.heartbeat]",
    )
    tail.add_argument("--task", metavar="NAME", help="only the tasks of this name (a glob)")
    tail.add_argument("--id", metavar="ID", help="only this task")
    tail.add_argument("--count", type=_positive, metavar="N", help="stop after N events")


def parser(prog: str = "twistedq") -> argparse.ArgumentParser:
    """
    The command line of ``twistedq``.
    """
    top = argparse.ArgumentParser(
        prog=prog,
        parents=[common_options()],
        description="See and steer a twistedq cluster: its daemons, queue, events, "
        "results and dead letters.",
        epilog="Exit status: 0 done, 1 what was asked about failed or was not found or no "
        "daemon answered, 2 usage error, 3 broker or result store unreachable.",
    )
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    top.set_defaults(prog=prog)
    leaf = common_options(defaults=False)
    control = _control_options()
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str, *more: argparse.ArgumentParser) -> argparse.ArgumentParser:
        return commands.add_parser(
            name, parents=[leaf, *more], help=text, description=text[0].upper() + text[1:] + "."
        )

    command("status", "the daemons that answer, the queue and its dead letters", control)
    command("ping", "which daemons answer, and since when they run", control)
    inspect_parser = command(
        "inspect", "what each daemon runs, holds, schedules, knows, or its figures", control
    )
    inspect_parser.add_argument("what", choices=INSPECT_WHAT)
    _event_filters(command("events", "print the daemons' events as they happen, until Ctrl-C"))
    revoke_parser = command("revoke", "revoke tasks, and with --terminate kill them", control)
    revoke_parser.add_argument("ids", nargs="+", type=_task_id, metavar="ID", help="task ids")
    revoke_parser.add_argument(
        "--terminate",
        action="store_true",
        help="also kill the child running one (without it, the daemons drop only the "
        "tasks they hold but have not started)",
    )
    result_parser = command("result", "a task's status and result, or exception")
    result_parser.add_argument("id", metavar="ID", help="the task id")
    result_parser.add_argument(
        "--wait", type=_seconds, metavar="SECONDS", help="wait until it is ready, this long at most"
    )
    purge_parser = command("purge", "delete the tasks waiting in a queue")
    purge_parser.add_argument(
        "queue_name", nargs="?", type=_name, metavar="QUEUE", help="the queue [default: --queue]"
    )
    purge_parser.add_argument("--yes", action="store_true", help="really delete them")
    letters = command("deadletter", "list, show, republish or purge the dead letters")
    add_commands(letters, "letter_command", leaf, confirm_purge=True)
    return top


async def execute(arguments: argparse.Namespace, session: Session, out: TextIO, err: TextIO) -> int:
    """
    Run one parsed command; return its exit status.  A
    :py:class:`~twistedq.cli.errors.CommandError` is one line on ``err``.
    """
    prog = getattr(arguments, "prog", "twistedq")
    try:
        return await COMMANDS[arguments.command](arguments, session, out, err)
    except CommandError as e:
        print(f"{prog}: {printable(e)}", file=err)
        return e.status
    except BrokenPipeError:  # the reader of the output went away (| head)
        return EXIT_OK
    except (ConnectionDone, ConnectionLost) as e:
        print(f"{prog}: lost the connection to the broker: {printable(reason(e))}", file=err)
        return EXIT_UNREACHABLE
    except Exception as e:
        print(f"{prog}: {printable(reason(e))}", file=err)
        return EXIT_FAILED
    finally:
        await session.close()


def _settings(arguments: argparse.Namespace) -> Settings:
    return Settings.from_environment(
        broker_url=arguments.broker,
        queue=arguments.queue,
        exchange=arguments.exchange,
        result_backend=arguments.result_backend,
    )


def run(
    argv: Sequence[str] | None,
    out: TextIO,
    err: TextIO,
    build: Callable[[], argparse.ArgumentParser] = parser,
    thread: ReactorThread = reactor_thread,
) -> int:
    """
    Parse ``argv`` and run the command on the reactor thread, until it
    ends or Ctrl-C; return the exit status.
    """
    command_line = build()
    try:
        arguments = command_line.parse_args(argv)
    except SystemExit as e:  # argparse printed why
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    try:
        settings = _settings(arguments)
    except SettingsError as e:
        print(f"{command_line.prog}: {e}", file=err)
        return EXIT_USAGE
    reactor = thread.reactor
    sessions: list[Session] = []
    finished: list[int] = []
    done = threading.Event()

    def start() -> None:
        session = Session(settings, reactor, arguments.timeout)
        sessions.append(session)
        running = defer.Deferred.fromCoroutine(execute(arguments, session, out, err))
        running.addErrback(lambda failure: EXIT_FAILED)
        running.addCallback(finished.append).addBoth(lambda _: done.set())

    reactor.callFromThread(start)
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        reactor.callFromThread(lambda: sessions[0].interrupt() if sessions else None)
        if not done.wait(STOP_GRACE):
            print(f"{command_line.prog}: interrupted", file=err)
            return EXIT_INTERRUPTED
    return finished[0] if finished else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> None:
    """
    The console entry point ``twistedq``: run the command line and exit
    with its status.  SIGTERM interrupts the command as Ctrl-C does.
    """
    # SIGTERM ends the command as Ctrl-C does (events: cleanly, status 0).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    status = run(argv, sys.stdout, sys.stderr)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (| head): say nothing more at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    raise SystemExit(status)
