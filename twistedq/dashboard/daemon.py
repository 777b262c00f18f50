"""
The dashboard as ``twistd twistedq`` serves it: one function that wires the
watch, the reads and the actions to the daemon's own broker connection,
result store and scheduler, so that :py:mod:`twistedq.tap` adds only a
few lines.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from twistedq.amqp.broker import BrokerConnection, Topology
from twistedq.backends.base import IResultBackend, IScheduleStore
from twistedq.conf import Settings
from twistedq.dashboard.actions import (
    ActionRefused,
    OperatorActions,
    dead_letter_reader,
    dead_letter_republisher,
)
from twistedq.dashboard.resources import DashboardResource
from twistedq.dashboard.state import FINAL_TASK_EVENTS
from twistedq.dashboard.watch import ClusterWatch, periodic_reader, queue_depth_reader
from twistedq.scheduler import Scheduler

__all__ = [
    "control_client",
    "daemon_dashboard",
    "lazy_async_client",
    "operator_actions",
    "running_from_replies",
]

log = Logger()

#: What the dashboard subscribes to: the task events that start (with the
#: argument preview) or end a run, and the daemons'.  The daemons publish
#: only what some listener binds, so the others (received, claimed,
#: parked, delayed...) cost nothing while only dashboards listen.
PATTERNS = (
    "task.started",
    *(f"task.{kind}" for kind in sorted(FINAL_TASK_EVENTS)),
    "daemon.#",
)


def running_from_replies(replies: list[dict[str, Any]], wall: float) -> list[dict[str, Any]]:
    """
    ``task.started`` documents made from the replies to
    ``inspect.active``, so that tasks started before the page opened show.
    """
    documents = []
    for reply in replies:
        if not reply.get("ok") or not isinstance(reply.get("reply"), list):
            continue
        for task in reply["reply"]:
            if not isinstance(task, dict):
                continue
            started = task.get("started")
            if not isinstance(started, (int, float)):
                runtime = task.get("runtime")
                started = wall - runtime if isinstance(runtime, (int, float)) else wall
            documents.append(
                {
                    "type": "task.started",
                    "time": started,
                    "id": task.get("id"),
                    "name": task.get("name"),
                    "args": task.get("args"),
                    "child": task.get("child"),
                    "daemon": reply.get("daemon"),
                    "host": reply.get("host"),
                    "pid": reply.get("pid"),
                }
            )
    return documents


def control_client(settings: Settings, reactor: Any, connection: BrokerConnection) -> Any | None:
    try:
        from twistedq.control import ControlClient
    except ImportError:  # remote control not there: no terminate
        return None
    return ControlClient(connection, settings.exchange, reactor, signing=settings.signing())


def lazy_async_client(settings: Settings, reactor: Any) -> Callable[[], Any]:
    """
    An :py:class:`~twistedq.client.AsyncClient` made on first use (its own
    broker connection): a revocation goes through the client's own code.
    """
    clients: list[Any] = []

    def client() -> Any:
        if not clients:
            from twistedq.client import AsyncClient

            clients.append(AsyncClient(settings, reactor))
        return clients[0]

    return client


def operator_actions(
    token: str,
    client: Callable[[], Any],
    connection: BrokerConnection,
    topology: Topology,
    control: Any | None,
    set_enabled: Callable[[str, bool], defer.Deferred[None]] | None,
) -> OperatorActions:
    """
    The actions over ``client()`` (an AsyncClient, for revocations), the
    broker connection (dead letters) and ``control`` (a ControlClient, for
    terminate; ``None`` offers no terminate).
    """

    async def revoke_ids(ids: list[str], terminate: bool) -> dict[str, Any]:
        """
        Revoke in the store (a task still in the broker never runs), then
        ask the daemons to drop the copies they hold and, with
        ``terminate``, to kill the children running them.
        """
        what = "terminated" if terminate else "revoked"
        revoked = await client().revoke(ids, reason=f"{what} from the dashboard")
        if control is None:
            return {"revoked": revoked}
        replies = await control.broadcast(
            "revoke", {"ids": ids, "terminate": terminate}, timeout=2.0
        )
        answers: dict[str, set[str]] = {
            "revoked": set(revoked),
            "terminated": set(),
            "running": set(),
        }
        for reply in replies:
            if reply.get("ok") and isinstance(reply.get("reply"), dict):
                for key, found in answers.items():
                    found.update(reply["reply"].get(key, []))
        answers["running"] -= answers["terminated"]
        return {key: sorted(found) for key, found in answers.items()}

    def revoke(ids: list[str]) -> defer.Deferred[Any]:
        return defer.Deferred.fromCoroutine(revoke_ids(ids, terminate=False))

    def terminate(ids: list[str]) -> defer.Deferred[Any]:
        return defer.Deferred.fromCoroutine(revoke_ids(ids, terminate=True))

    return OperatorActions(
        token,
        revoke=revoke,
        terminate=terminate if control is not None else None,
        set_enabled=set_enabled,
        republish=dead_letter_republisher(connection, topology),
        dead_letters=dead_letter_reader(connection, topology),
    )


def _known_periodic(scheduler: Scheduler) -> Callable[[str, bool], defer.Deferred[None]]:
    """
    The scheduler's pause and resume, for the periodic tasks it publishes
    only: an unknown name (a typing error, or one made up to fill the
    store) and the daemon's own jobs (the recovery of parked messages, the
    clean-up) are refused.
    """

    def set_enabled(name: str, enabled: bool) -> defer.Deferred[None]:
        if name not in _periodic_names(scheduler)():
            raise ActionRefused(f"name: no periodic task {name[:100]!r} is scheduled here")
        return scheduler.set_enabled(name, enabled)

    return set_enabled


def _periodic_names(scheduler: Scheduler) -> Callable[[], list[str]]:
    """
    The periodic tasks the scheduler publishes (not the jobs it runs
    itself, as the clean-up of expired results).
    """
    return lambda: [name for name, entry in scheduler.entries.items() if entry.job is None]


def daemon_dashboard(
    settings: Settings,
    reactor: Any,
    connection: BrokerConnection,
    topology: Topology,
    backend: IResultBackend,
    scheduler: Scheduler | None = None,
    operator_token: str | None = None,
    tracebacks: bool = False,
) -> DashboardResource:
    """
    The ``/dashboard/`` of a daemon.

    :param scheduler: the daemon's scheduler, whose periodic tasks are
        shown and paused or resumed (none with ``--no-scheduler``).
    :param operator_token: allows the actions; ``None`` or empty keeps the
        dashboard read-only.
    :param tracebacks: show failures' tracebacks without the token.
    """
    from twistedq.amqp.events import EventReceiver

    control = control_client(settings, reactor, connection)

    def receiver(on_events: Callable[[list[dict[str, Any]]], None]) -> EventReceiver:
        return EventReceiver(connection, settings.exchange, on_events, PATTERNS)

    seed_running = None
    if control is not None:

        def seed_running() -> defer.Deferred[list[dict[str, Any]]]:
            d = control.broadcast("inspect.active", timeout=1.0)
            return d.addCallback(running_from_replies, time.time())

    periodic = None
    set_enabled = None
    if scheduler is not None:
        set_enabled = _known_periodic(scheduler)
        if IScheduleStore.providedBy(backend):
            periodic = periodic_reader(IScheduleStore(backend), _periodic_names(scheduler))
    watch = ClusterWatch(
        reactor,
        time.time,
        receiver,
        backend=backend,
        queue_depths=queue_depth_reader(connection, topology),
        periodic=periodic,
        seed_running=seed_running,
    )
    actions = None
    if operator_token:
        client = lazy_async_client(settings, reactor)
        actions = operator_actions(
            operator_token, client, connection, topology, control, set_enabled
        )
    return DashboardResource(watch, backend, reactor, actions, tracebacks)
