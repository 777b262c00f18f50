"""
What the dashboard knows of the cluster, made from the event documents of
the events exchange (see the operations contract): the daemons and their
load, the tasks running now, success and failure counts per 10 seconds,
the latest failures and the tasksets seen in progress.

Memory is bounded whatever the event rate: each collection has a cap and
drops its oldest entry past it.  Nothing here does I/O; what comes from
the broker or the store (queue depths, periodic tasks, taskset progress)
is set by :py:class:`twistedq.dashboard.watch.ClusterWatch`.
"""

from __future__ import annotations

import heapq
import json
import math
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["BUCKET_SECONDS", "FINAL_TASK_EVENTS", "ClusterState"]

#: Width of one bar of the rate chart, in seconds.
BUCKET_SECONDS = 10
#: Bars of the chart: 10 minutes.
BUCKETS = 60
#: A daemon is shown as gone after this many missed heartbeats ...
MISSED_HEARTBEATS = 3
#: ... and dropped after this many.
DROPPED_AFTER_HEARTBEATS = 30
#: The heartbeat interval assumed until a daemon says its own.
DEFAULT_INTERVAL = 2.0
#: A ready taskset stays shown this many seconds after its last event ...
TASKSET_READY_SHOWN = 60.0
#: ... and one never seen ready is forgotten after this many.
TASKSET_FORGOTTEN = 600.0
#: Task events after which a task no longer runs.
FINAL_TASK_EVENTS = frozenset(
    {
        "succeeded",
        "failed",
        "retried",
        "revoked",
        "rejected",
        "dead-lettered",
        "fenced-off",
        "duplicate",
        "store-refused",
    }
)
_DAEMON_FIELDS = (
    "concurrency",
    "children",
    "busy",
    "held",
    "processed",
    "rss_kib",
    "children_rss_kib",
    "uptime",
    "interval",
    "version",
)


def _bounded_put(table: OrderedDict[str, Any], key: str, value: Any, cap: int) -> None:
    table[key] = value
    table.move_to_end(key)
    while len(table) > cap:
        table.popitem(last=False)


class ClusterState:
    """
    The cluster as the events tell it.  Feed it with :py:meth:`on_events`;
    read it with :py:meth:`sections`, a JSON-ready dict of sections.

    :param wall: the wall clock (seconds since the epoch), which decides
        when a daemon is gone and which bar of the chart is current.
    :param max_running: most running tasks kept (the oldest dropped first).
    :param max_running_shown: most running tasks in a snapshot (those
        running longest).
    :param max_failures: latest failures kept.
    :param max_tasksets: tasksets kept.
    :ivar version: grows with every change, so a reader knows when to look
        again.
    """

    def __init__(
        self,
        wall: Callable[[], float],
        max_running: int = 500,
        max_failures: int = 20,
        max_tasksets: int = 20,
        max_daemons: int = 200,
        max_running_shown: int = 100,
    ) -> None:
        self.wall = wall
        self.max_running = max_running
        self.max_running_shown = max_running_shown
        self.max_tasksets = max_tasksets
        self.max_daemons = max_daemons
        self.version = 0
        self.daemons: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.running: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.failures: deque[dict[str, Any]] = deque(maxlen=max_failures)
        self.tasksets: OrderedDict[str, dict[str, Any]] = OrderedDict()
        # bucket number (time // BUCKET_SECONDS) -> [succeeded, failed]
        self.buckets: OrderedDict[int, list[int]] = OrderedDict()
        self.queues: dict[str, Any] = {}
        self.periodic: list[dict[str, Any]] = []
        self.ended: OrderedDict[str, float] = OrderedDict()
        self.events_seen = 0
        self.running_dropped = 0

    # feeding

    def on_events(self, documents: Iterable[dict[str, Any]]) -> None:
        """
        Take a batch of event documents; one that cannot be read is skipped.
        """
        for document in documents:
            if not isinstance(document, dict):
                continue
            kind = document.get("type")
            if not isinstance(kind, str):
                continue
            self.events_seen += 1
            if kind.startswith("task."):
                self._task_event(kind[5:], document)
            elif kind.startswith("daemon."):
                self._daemon_event(kind[7:], document)
        self.version += 1

    def _daemon_event(self, kind: str, document: dict[str, Any]) -> None:
        name = document.get("daemon")
        if not isinstance(name, str):
            return
        if kind == "offline":
            self.daemons.pop(name, None)
            self._forget_tasks_of(name)
            return
        daemon = self.daemons.get(name) or {"name": name}
        daemon["host"] = document.get("host")
        daemon["pid"] = document.get("pid")
        daemon["queue"] = document.get("queue")
        for field in _DAEMON_FIELDS:
            if field in document:
                daemon[field] = document[field]
        daemon["last_heartbeat"] = _number(document.get("time")) or self.wall()
        daemon["gone"] = False
        _bounded_put(self.daemons, name, daemon, self.max_daemons)

    def _task_event(self, kind: str, document: dict[str, Any]) -> None:
        task_id = document.get("id")
        if not isinstance(task_id, str):
            return
        when = _number(document.get("time")) or self.wall()
        taskset = document.get("taskset")
        if isinstance(taskset, str):
            self._touch_taskset(taskset, when)
        if kind == "started":
            self._started(task_id, when, document)
        elif kind in FINAL_TASK_EVENTS:
            self.running.pop(task_id, None)
            # Events of other kinds travel in other messages, so a task's
            # start may come after its end: remembered, it is not shown.
            _bounded_put(self.ended, task_id, when, 10 * self.max_running)
            if kind == "succeeded":
                self._count(when, 0)
            elif kind == "failed":
                self._count(when, 1)
                self.failures.appendleft(
                    {
                        "id": task_id,
                        "name": document.get("name"),
                        "exception": document.get("exception"),
                        "reason": document.get("reason"),
                        "daemon": document.get("daemon"),
                        "time": when,
                        "runtime": document.get("runtime"),
                    }
                )

    def _started(self, task_id: str, when: float, document: dict[str, Any]) -> None:
        ended = self.ended.get(task_id)
        if ended is not None and when <= ended:
            return
        task = {
            "id": task_id,
            "name": document.get("name"),
            "args": document.get("args"),
            "started": when,
            "daemon": document.get("daemon"),
            "child": document.get("child"),
            "taskset": document.get("taskset"),
        }
        if len(self.running) >= self.max_running and task_id not in self.running:
            self.running_dropped += 1
        _bounded_put(self.running, task_id, task, self.max_running)

    def _forget_tasks_of(self, daemon: str) -> None:
        for task_id in [i for i, task in self.running.items() if task["daemon"] == daemon]:
            del self.running[task_id]

    def _count(self, when: float, column: int) -> None:
        bucket = int(when // BUCKET_SECONDS)
        oldest = int(self.wall() // BUCKET_SECONDS) - BUCKETS + 1
        if bucket < oldest:
            return
        counts = self.buckets.get(bucket)
        if counts is None:
            counts = self.buckets[bucket] = [0, 0]
            # Out-of-order arrivals are rare; keep the table sorted anyway.
            if len(self.buckets) > 1 and bucket < next(reversed(self.buckets)):
                self.buckets = OrderedDict(sorted(self.buckets.items()))
        counts[column] += 1
        while self.buckets and next(iter(self.buckets)) < oldest:
            self.buckets.popitem(last=False)

    def _touch_taskset(self, taskset_id: str, when: float) -> None:
        taskset = self.tasksets.get(taskset_id)
        if taskset is None:
            taskset = {"id": taskset_id, "total": None, "completed": None, "failed": None}
            taskset["ready"] = False
        taskset["seen"] = when
        _bounded_put(self.tasksets, taskset_id, taskset, self.max_tasksets)

    # time

    def expire(self) -> None:
        """
        Mark daemons gone after :py:data:`MISSED_HEARTBEATS` missed
        heartbeats, drop them (and their tasks) after
        :py:data:`DROPPED_AFTER_HEARTBEATS`, and drop the chart's bars older
        than 10 minutes.
        """
        now = self.wall()
        changed = False
        for name, daemon in list(self.daemons.items()):
            interval = _number(daemon.get("interval")) or DEFAULT_INTERVAL
            silent = now - daemon["last_heartbeat"]
            if silent > DROPPED_AFTER_HEARTBEATS * interval:
                del self.daemons[name]
                self._forget_tasks_of(name)
                changed = True
                continue
            gone = silent > MISSED_HEARTBEATS * interval
            if daemon.get("gone", False) != gone:
                daemon["gone"] = gone
                changed = True
        oldest = int(now // BUCKET_SECONDS) - BUCKETS + 1
        while self.buckets and next(iter(self.buckets)) < oldest:
            self.buckets.popitem(last=False)
            changed = True
        for taskset_id, taskset in list(self.tasksets.items()):
            quiet = now - taskset["seen"]
            if quiet > TASKSET_FORGOTTEN or (taskset.get("ready") and quiet > TASKSET_READY_SHOWN):
                del self.tasksets[taskset_id]
                changed = True
        if changed:
            self.version += 1

    def set_taskset_progress(self, taskset_id: str, document: dict[str, Any] | None) -> None:
        """
        Record a taskset's progress as read from the store
        (``taskset_status_document``'s inner dict), or that the store does
        not know it (``None``: it is dropped).
        """
        taskset = self.tasksets.get(taskset_id)
        if taskset is None:
            return
        if document is None:
            del self.tasksets[taskset_id]
        else:
            for field in ("total", "completed", "failed", "ready"):
                taskset[field] = document.get(field)
        self.version += 1

    def set_queues(self, queues: dict[str, Any]) -> None:
        """
        Record the queue depths read from the broker.
        """
        if queues != self.queues:
            self.queues = queues
            self.version += 1

    def set_periodic(self, periodic: list[dict[str, Any]]) -> None:
        """
        Record the periodic tasks as read from the schedule store.
        """
        if periodic != self.periodic:
            self.periodic = periodic
            self.version += 1

    # reading

    def rates(self) -> dict[str, Any]:
        """
        The chart: ``start`` (the time of the first bar), ``width`` (seconds
        per bar), and the ``succeeded`` and ``failed`` counts of each bar,
        oldest first.
        """
        last = int(self.wall() // BUCKET_SECONDS)
        first = last - BUCKETS + 1
        succeeded = [0] * BUCKETS
        failed = [0] * BUCKETS
        for bucket, (ok, bad) in self.buckets.items():
            if first <= bucket <= last:
                succeeded[bucket - first] = ok
                failed[bucket - first] = bad
        return {
            "start": first * BUCKET_SECONDS,
            "width": BUCKET_SECONDS,
            "succeeded": succeeded,
            "failed": failed,
        }

    def sections(self) -> dict[str, Any]:
        """
        Everything, by section, ready for ``json.dumps``.  Times are
        seconds since the epoch; a running task's runtime so far is the
        reader's now minus its ``started``.
        """
        held = sum(
            int(_number(daemon.get("held")) or 0)
            for daemon in self.daemons.values()
            if not daemon.get("gone")
        )
        queues = dict(self.queues)
        queues["unacked"] = held
        return {
            "daemons": sorted(self.daemons.values(), key=lambda d: d["name"]),
            # The longest-running first; the count says how many in all.
            "running": heapq.nsmallest(
                self.max_running_shown, self.running.values(), key=lambda t: t["started"]
            ),
            "running_count": len(self.running),
            "running_dropped": self.running_dropped,
            "rates": self.rates(),
            "failures": list(self.failures),
            "tasksets": list(reversed(self.tasksets.values())),
            "queues": queues,
            "periodic": self.periodic,
        }


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value):
        return None
    return float(value)


def section_texts(sections: dict[str, Any]) -> dict[str, str]:
    """
    Each section as compact JSON, to tell which changed.
    """
    return {name: json.dumps(value, separators=(",", ":")) for name, value in sections.items()}
