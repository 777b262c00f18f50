"""
The one seam through which every stage of the daemon reports what happens
to a task and to the daemon.  :py:class:`Events` counts every report (the
counters of ``/stats``) and passes it to the observers that subscribed.
"""

from __future__ import annotations

import enum
import os
import resource
from collections import Counter
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

__all__ = ["SETTLED_KINDS", "Event", "EventKind", "Events", "daemon_load", "own_rss_kib"]

log = Logger()


class EventKind(enum.Enum):
    """
    What happened.  Task events name the task; daemon events do not.
    """

    #: A delivery decoded into a task message.
    RECEIVED = "received"
    #: The daemon took a claim on the task.
    CLAIMED = "claimed"
    #: The task was handed to a child or to the reactor.
    STARTED = "started"
    #: Its outcome (not a failure) was stored and its message acked.
    SUCCEEDED = "succeeded"
    #: Its failure was stored.
    FAILED = "failed"
    #: Its next attempt was published.
    RETRIED = "retried"
    #: It was revoked (it expired, or was revoked by a client).
    REVOKED = "revoked"
    #: Its message could not run (not a task message, a bad signature).
    REJECTED = "rejected"
    #: Its message went to the dead-letter queue.
    DEAD_LETTERED = "dead-lettered"
    #: Its message was parked in the store and acknowledged.
    PARKED = "parked"
    #: A parked message of a daemon that died was published again.
    RECOVERED = "recovered"
    #: Its outcome was already committed: acked without running.
    DUPLICATE = "duplicate"
    #: Another attempt holds its claim: it waits.
    HELD_ELSEWHERE = "held-elsewhere"
    #: A newer claim owns it: its outcome was not committed.
    FENCED_OFF = "fenced-off"
    #: It went to a delay queue of the broker until its ETA.
    DELAYED = "delayed"
    #: Its delivery went back to the queue before the broker's consumer
    #: timeout, since it could not be parked.
    GIVEN_BACK = "given-back"
    #: The result store refused its outcome for good: a FAILURE saying so
    #: is stored in its place.
    STORE_REFUSED = "store-refused"
    #: The result store failed: no new task starts.
    STORE_DOWN = "store-down"
    #: The result store answers again.
    STORE_UP = "store-up"
    #: A write to the store failed and is tried again.
    STORE_RETRY = "store-retry"


class Event:
    """
    One report: its kind, the task it concerns (if any) and details.
    """

    __slots__ = ("fields", "kind", "task_id", "task_name")

    def __init__(
        self,
        kind: EventKind,
        task_id: str | None = None,
        task_name: str | None = None,
        fields: dict[str, Any] | None = None,
    ) -> None:
        self.kind = kind
        self.task_id = task_id
        self.task_name = task_name
        self.fields = fields or {}

    def __repr__(self) -> str:
        return f"<Event {self.kind.value} {self.task_name}[{self.task_id}] {self.fields}>"


class Events:
    """
    Where every stage reports.  Each report is counted by kind; observers
    are called in the order they subscribed, with an :py:class:`Event`
    (made only when someone observes); one that raises is unsubscribed and
    logged, never the stage that reported.

    :ivar counts: how many reports of each kind were made.
    """

    def __init__(self) -> None:
        self.counts: Counter[EventKind] = Counter()
        self._observers: list[Callable[[Event], None]] = []

    def subscribe(self, observer: Callable[[Event], None]) -> None:
        self._observers.append(observer)

    def unsubscribe(self, observer: Callable[[Event], None]) -> None:
        self._observers.remove(observer)

    def report(
        self,
        kind: EventKind,
        task_id: str | None = None,
        task_name: str | None = None,
        **fields: Any,
    ) -> None:
        self.counts[kind] += 1
        if not self._observers:
            return
        event = Event(kind, task_id, task_name, fields)
        for observer in list(self._observers):
            try:
                observer(event)
            except Exception:
                log.failure("An event observer failed; it is unsubscribed")
                self._observers.remove(observer)


#: The kinds that end a delivery, each counted once: a task dead-lettered
#: after it failed is reported failed, and a message dead-lettered as it
#: came in is reported rejected.
SETTLED_KINDS = (
    EventKind.SUCCEEDED,
    EventKind.FAILED,
    EventKind.REVOKED,
    EventKind.RETRIED,
    EventKind.DUPLICATE,
    EventKind.REJECTED,
)


def own_rss_kib() -> int:
    """
    This process's resident memory now, in KiB (its peak where
    ``/proc`` is not there).
    """
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
        return pages * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except (OSError, ValueError, IndexError):
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def daemon_load(pool: Any, dispatcher: Any) -> Callable[[], dict[str, Any]]:
    """
    The load fields of a daemon's heartbeat, read from its pool
    (:py:class:`~twistedq.worker.pool.ProcessPool`) and dispatcher
    (:py:class:`~twistedq.daemon.dispatcher.Dispatcher`): ``concurrency``,
    ``children``, ``busy``, ``held`` (deliveries held unacknowledged),
    ``processed`` (tasks settled since start), ``rss_kib`` (the daemon's)
    and ``children_rss_kib`` (their sum).
    """
    events: Events = dispatcher.events

    def load() -> dict[str, Any]:
        pool_stats = pool.stats()
        counts = events.counts
        return {
            "concurrency": getattr(pool, "size", pool_stats.get("children")),
            "children": pool_stats.get("children"),
            "busy": pool_stats.get("busy"),
            "held": dispatcher.held,
            "processed": sum(counts[kind] for kind in SETTLED_KINDS),
            "rss_kib": own_rss_kib(),
            "children_rss_kib": sum(pool_stats.get("rss_kib", {}).values()),
        }

    return load
