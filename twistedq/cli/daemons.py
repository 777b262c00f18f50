"""
The subcommands that ask the running daemons over remote control:
``status``, ``ping``, ``inspect`` and ``revoke``.
"""

from __future__ import annotations

import argparse
from collections.abc import Coroutine, Sequence
from typing import Any, TextIO, TypeVar

from twisted.internet import defer

from twistedq.cli.errors import EXIT_FAILED, EXIT_OK, CommandError, Unreachable
from twistedq.cli.output import clock_time, dumps, duration, flatten, printable, table, text
from twistedq.cli.session import DelayQueue, Session
from twistedq.outcome import Outcome
from twistedq.states import READY_STATES, REVOKED

__all__ = ["INSPECT_TABLES", "inspect", "inspect_lines", "ping", "revoke", "status"]

T = TypeVar("T")

#: What ``inspect`` asks, and the columns of each answer's table:
#: (header, key of each entry).
INSPECT_TABLES: dict[str, list[tuple[str, str]]] = {
    "active": [
        ("ID", "id"),
        ("NAME", "name"),
        ("RUNTIME", "runtime"),
        ("CHILD", "child"),
        ("ARGS", "args"),
    ],
    "reserved": [("ID", "id"), ("NAME", "name"), ("STATE", "state")],
    "scheduled": [("ID", "id"), ("NAME", "name"), ("ETA", "eta")],
}


def _sorted(replies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(replies, key=lambda reply: str(reply.get("daemon")))


def _missing(replies: list[dict[str, Any]], destination: Sequence[str] | None) -> list[str]:
    answered = {reply.get("daemon") for reply in replies}
    return [name for name in destination or () if name not in answered]


#: Said when no daemon answered and the command signs nothing.
UNSIGNED_HINT = (
    "TWISTEDQ_SIGNING_KEYS is not set: daemons that have signing keys ignore "
    "unsigned requests (give the command the cluster's keys)"
)


def _nobody_answered(arguments: argparse.Namespace, session: Session, err: TextIO) -> None:
    """
    Say that no daemon answered and, when the command has no signing
    key, that daemons with keys ignore its unsigned requests.
    """
    print(f"no daemon answered within {arguments.reply_timeout:g} s", file=err)
    if not session.settings.signing_keys.strip():
        print(UNSIGNED_HINT, file=err)


def _answered(count: int) -> str:
    return f"{count} daemon answered" if count == 1 else f"{count} daemons answered"


def _no_reply(
    arguments: argparse.Namespace, session: Session, err: TextIO, replies: list[dict[str, Any]]
) -> int:
    """
    Say which daemons did not answer; the exit status: 1 when none did,
    or one named did not.
    """
    missing = _missing(replies, arguments.destination)
    for name in missing:
        print(f"no reply from {printable(name)} within {arguments.reply_timeout:g} s", file=err)
    if not replies:
        if not missing:
            _nobody_answered(arguments, session, err)
        return EXIT_FAILED
    return EXIT_FAILED if missing else EXIT_OK


async def ping(arguments: argparse.Namespace, session: Session, out: TextIO, err: TextIO) -> int:
    """
    ``twistedq ping``: one line per daemon that answered.
    """
    replies = await session.broadcast(
        "ping", None, arguments.destination, reply_timeout=arguments.reply_timeout
    )
    if arguments.json:
        print(dumps(replies), file=out)
    elif replies:
        rows = [
            (
                reply.get("daemon"),
                reply.get("host"),
                reply.get("pid"),
                duration((reply.get("reply") or {}).get("uptime")) if reply.get("ok") else "-",
                "pong" if reply.get("ok") else f"error: {text(reply.get('error'))}",
            )
            for reply in _sorted(replies)
        ]
        for line in table(["DAEMON", "HOST", "PID", "UPTIME", "ANSWER"], rows):
            print(line, file=out)
    status = _no_reply(arguments, session, err, replies)
    if replies and not arguments.json:
        print(_answered(len(replies)), file=err)
    if any(not reply.get("ok") for reply in replies):
        status = EXIT_FAILED
    return status


def _cell(key: str, value: Any) -> Any:
    if key == "runtime":
        return duration(value)
    if key == "eta" and isinstance(value, (int, float)):
        return clock_time(value)
    return value


def inspect_lines(what: str, reply: dict[str, Any]) -> list[str]:
    """
    The lines that show one daemon's reply to ``inspect WHAT``: a heading
    naming the daemon, then its table (or list, or statistics), indented.
    """
    daemon, host, pid = (text(reply.get(key)) for key in ("daemon", "host", "pid"))
    name = f"{daemon} (host {host}, pid {pid})"
    if not reply.get("ok"):
        return [f"{name}: error: {text(reply.get('error'))}"]
    answer = reply.get("reply")
    if what in INSPECT_TABLES:
        entries = answer or []
        columns = INSPECT_TABLES[what]
        lines = [f"{name}: {len(entries)} {what}"]
        if entries:
            rows = [[_cell(key, entry.get(key)) for _, key in columns] for entry in entries]
            lines += table([header for header, _ in columns], rows, indent="  ")
        return lines
    if what == "registered":
        names = answer or []
        return [f"{name}: {len(names)} registered", *(f"  {text(task)}" for task in names)]
    pairs = [(text(key), value) for key, value in flatten(answer or {})]
    width = max((len(key) for key, _ in pairs), default=0)
    return [f"{name}:", *(f"  {key.ljust(width)}  {text(value)}" for key, value in pairs)]


async def inspect(arguments: argparse.Namespace, session: Session, out: TextIO, err: TextIO) -> int:
    """
    ``twistedq inspect WHAT``: each daemon's answer, a table per daemon.
    """
    replies = await session.broadcast(
        f"inspect.{arguments.what}",
        None,
        arguments.destination,
        reply_timeout=arguments.reply_timeout,
    )
    if arguments.json:
        print(dumps(replies), file=out)
    else:
        for reply in _sorted(replies):
            for line in inspect_lines(arguments.what, reply):
                print(line, file=out)
    status = _no_reply(arguments, session, err, replies)
    if any(not reply.get("ok") for reply in replies):
        status = EXIT_FAILED
    return status


async def _counts(session: Session, queue: str) -> dict[str, Any]:
    try:
        ready, consumers = await session.queue_counts(queue)
    except CommandError as e:
        if e.status != EXIT_FAILED:
            raise
        return {"name": queue, "declared": False}
    return {"name": queue, "declared": True, "ready": ready, "consumers": consumers}


def _daemon_rows(pongs: list[dict[str, Any]], stats: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_name = {reply.get("daemon"): reply.get("reply") or {} for reply in stats if reply.get("ok")}
    rows = []
    for pong in _sorted(pongs):
        document = by_name.get(pong.get("daemon"), {})
        pool = document.get("pool") or {}
        dispatcher = document.get("dispatcher") or {}
        rows.append(
            {
                "daemon": pong.get("daemon"),
                "host": pong.get("host"),
                "pid": pong.get("pid"),
                "uptime": (pong.get("reply") or {}).get("uptime"),
                "children": pool.get("children"),
                "busy": pool.get("busy"),
                "held": dispatcher.get("held"),
                "completed": dispatcher.get("completed"),
                "failed": dispatcher.get("failed"),
            }
        )
    return rows


async def _both(first: Coroutine[Any, Any, T], second: Coroutine[Any, Any, T]) -> tuple[T, T]:
    """
    Wait for two coroutines that run at the same time; the first error
    is raised.
    """
    both: list[defer.Deferred[T]] = [
        defer.Deferred.fromCoroutine(first),
        defer.Deferred.fromCoroutine(second),
    ]
    try:
        one, two = await defer.gatherResults(both, consumeErrors=True)
    except defer.FirstError as e:
        e.subFailure.raiseException()
    return one, two


async def status(arguments: argparse.Namespace, session: Session, out: TextIO, err: TextIO) -> int:
    """
    ``twistedq status``: the task queue, its delay queues (an overdue one
    is flagged, and makes the status 1), its dead letters and the daemons
    that answer a ping, with their children and load.
    """
    topology = session.topology
    queue = await _counts(session, topology.queue)
    delays = [_delay_document(each) for each in await session.delay_queues(topology)]
    dead = await _counts(session, topology.dead_letter_queue)
    pongs, stats = await _both(
        session.broadcast("ping", reply_timeout=arguments.reply_timeout),
        session.broadcast("inspect.stats", reply_timeout=arguments.reply_timeout),
    )
    daemons = _daemon_rows(pongs, stats)
    if arguments.json:
        document = {
            "broker": str((await session.connection()).address),
            "queue": queue,
            "delay_queues": delays,
            "dead_letters": dead,
            "daemons": daemons,
        }
        print(dumps(document), file=out)
    else:
        _print_status(str((await session.connection()).address), queue, delays, dead, daemons, out)
    if not daemons:
        _nobody_answered(arguments, session, err)
        return EXIT_FAILED
    overdue = [each["name"] for each in delays if each["overdue"]]
    if overdue:
        print(
            f"twistedq: the broker keeps messages past their wait in {', '.join(overdue)} "
            "(see 'Delay queues that stop releasing' in the deployment guide)",
            file=err,
        )
        return EXIT_FAILED
    return EXIT_OK


def _delay_document(queue: DelayQueue) -> dict[str, Any]:
    return {
        "name": queue.name,
        "seconds": queue.seconds,
        "ready": queue.ready,
        "oldest_age": queue.oldest_age,
        "overdue": queue.overdue,
    }


def _delay_text(queue: dict[str, Any]) -> str:
    text = f"{printable(queue['name'])}: {queue['ready']} waiting"
    age = queue["oldest_age"]
    if age is not None:
        text += f", oldest {duration(age)}"
    if queue["overdue"]:
        text += f" OVERDUE (waits {queue['seconds']} s)"
    return text


def _queue_text(counts: dict[str, Any], dead: bool = False) -> str:
    name = printable(counts["name"])
    if not counts["declared"]:
        return f"{name}: not declared"
    if dead:
        return f"{name}: {counts['ready']} dead letters"
    return f"{name}: {counts['ready']} ready, {counts['consumers']} consumers"


def _print_status(
    broker: str,
    queue: dict[str, Any],
    delays: list[dict[str, Any]],
    dead: dict[str, Any],
    daemons: list[dict[str, Any]],
    out: TextIO,
) -> None:
    print(f"broker        {printable(broker)}", file=out)
    print(f"queue         {_queue_text(queue)}", file=out)
    for index, delay in enumerate(delays):
        print(f"{'delay queues' if index == 0 else '':14}{_delay_text(delay)}", file=out)
    print(f"dead letters  {_queue_text(dead, dead=True)}", file=out)
    print(f"daemons       {len(daemons)}", file=out)
    if daemons:
        columns = [
            "daemon", "host", "pid", "uptime", "children", "busy", "held", "completed", "failed",
        ]  # fmt: skip
        rows = [
            [duration(row[key]) if key == "uptime" else row[key] for key in columns]
            for row in daemons
        ]
        for line in table([column.upper() for column in columns], rows, indent="  "):
            print(line, file=out)


def _what_daemons_did(replies: list[dict[str, Any]], terminate: bool) -> dict[str, list[str]]:
    """
    For each task id a daemon named in its answer to ``revoke``: what it
    did (dropped it before it started, terminated it) or why not (it runs
    there).
    """
    said: dict[str, list[str]] = {}
    for reply in _sorted(replies):
        answer = (reply.get("reply") or {}) if reply.get("ok") else {}
        daemon = text(reply.get("daemon"))
        terminated = set(answer.get("terminated") or ())
        for task_id in answer.get("revoked") or ():
            if task_id in terminated:
                said.setdefault(task_id, []).append(f"terminated by {daemon} (its child killed)")
            else:
                said.setdefault(task_id, []).append(f"dropped by daemon {daemon} before it started")
        for task_id in answer.get("running") or ():
            hint = "" if terminate else ": --terminate kills it"
            said.setdefault(task_id, []).append(f"running on daemon {daemon}{hint}")
    return said


def _revoke_results(
    ids: list[str],
    revoked: set[str],
    replies: list[dict[str, Any]],
    outcomes: dict[str, Outcome],
    terminate: bool,
) -> list[dict[str, Any]]:
    """
    For each task: whether it is revoked, its status, and what was done
    (in the store, by which daemon), or why not.
    """
    by_daemon = _what_daemons_did(replies, terminate)
    dropped = {
        task_id
        for reply in replies
        if reply.get("ok")
        for task_id in (reply.get("reply") or {}).get("revoked") or ()
    }
    results = []
    for task_id in ids:
        outcome = outcomes[task_id]
        done = task_id in revoked or task_id in dropped or outcome.status == REVOKED
        what = (["revoked in the store"] if task_id in revoked else []) + by_daemon.get(task_id, [])
        if not what:
            if outcome.status in READY_STATES:
                what = [f"already {outcome.status}"]
            else:
                what = ["not revoked: a daemon has taken it, and none that answered holds it"]
        results.append({"id": task_id, "revoked": done, "status": outcome.status, "what": what})
    return results


async def revoke(arguments: argparse.Namespace, session: Session, out: TextIO, err: TextIO) -> int:
    """
    ``twistedq revoke ID... [--terminate]``: revoke the tasks in the
    store (those no daemon has taken), then ask the daemons to revoke
    them too: a daemon drops one it holds but has not started and, with
    ``--terminate`` only, kills the child that runs one.  When the broker
    cannot be reached for that, what the store did is still printed, and
    the status is 3.
    """
    ids = list(dict.fromkeys(arguments.ids))
    revoked = set(await session.revoke(ids))
    replies: list[dict[str, Any]] = []
    unreachable: Unreachable | None = None
    try:
        replies = await session.broadcast(
            "revoke",
            {"ids": ids, "terminate": bool(arguments.terminate)},
            arguments.destination,
            reply_timeout=arguments.reply_timeout,
        )
    except Unreachable as e:
        unreachable = e
    outcomes = {outcome.task_id: outcome for outcome in await session.outcomes(ids)}
    results = _revoke_results(ids, revoked, replies, outcomes, arguments.terminate)
    if arguments.json:
        print(dumps({"tasks": results, "replies": replies}), file=out)
    else:
        for result in results:
            print(f"{printable(result['id'])}\t{'; '.join(result['what'])}", file=out)
    for reply in replies:
        if not reply.get("ok"):
            print(f"{text(reply.get('daemon'))}: error: {text(reply.get('error'))}", file=err)
    if unreachable is not None:
        raise unreachable
    if not replies and (arguments.terminate or not all(r["revoked"] for r in results)):
        _nobody_answered(arguments, session, err)
    return EXIT_OK if all(result["revoked"] for result in results) else EXIT_FAILED
