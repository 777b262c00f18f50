"""
The daemon's figures in the Prometheus text format, for ``GET /metrics``
on the status site.

:py:class:`DaemonMetrics` observes the daemon's
:py:class:`~twistedq.daemon.events.Events` and keeps, per event, no more
than a few counters and the receipt and start times of the tasks in
flight; everything else (the gauges of the pool, the dispatcher and the
scheduler, the counters the events count already) is read when Prometheus
scrapes.  Its metrics live in a :py:class:`~prometheus_client.CollectorRegistry`
of its own, never the global default one, so that several daemons (or
tests) in one process do not collide.  :py:class:`MetricsResource` serves
them.

The names and what each counts are listed in :doc:`/operations`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.utils import floatToGoString
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web import pages
from twisted.web.resource import Resource
from twisted.web.server import Request

from twistedq.daemon.events import Event, EventKind, Events

if TYPE_CHECKING:
    from twistedq.amqp.broker import BrokerConnection
    from twistedq.amqp.protocol import BrokerProtocol

__all__ = [
    "BUCKETS",
    "OTHER_TASKS",
    "DaemonMetrics",
    "MetricsResource",
]

log = Logger()

#: The upper bounds, in seconds, of the buckets of the runtime and
#: queue-wait histograms.
BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip
#: The task label of the names past ``max_task_names``.
OTHER_TASKS = "_other"

_RECEIVED = EventKind.RECEIVED
_STARTED = EventKind.STARTED
_SUCCEEDED = EventKind.SUCCEEDED
_CLAIMED = EventKind.CLAIMED
_FAILED = EventKind.FAILED
_RETRIED = EventKind.RETRIED
_REVOKED = EventKind.REVOKED
_REJECTED = EventKind.REJECTED
_DEAD_LETTERED = EventKind.DEAD_LETTERED
_DELAYED = EventKind.DELAYED
_DUPLICATE = EventKind.DUPLICATE
_GIVEN_BACK = EventKind.GIVEN_BACK
_CLAIMS = {
    EventKind.CLAIMED: "claimed",
    EventKind.DUPLICATE: "duplicate",
    EventKind.HELD_ELSEWHERE: "held_elsewhere",
    EventKind.FENCED_OFF: "fenced_off",
}
#: Counters that are the events' own counts: name, help, kind.
_COUNTED = [
    (
        "twistedq_store_write_retries",
        "Writes to the result store that failed and are tried again.",
        EventKind.STORE_RETRY,
    ),
    (
        "twistedq_store_outages",
        "Times the daemon found the result store unavailable.",
        EventKind.STORE_DOWN,
    ),
    (
        "twistedq_store_refused",
        "Outcomes the result store refused for good (a FAILURE stored in their place).",
        EventKind.STORE_REFUSED,
    ),
    (
        "twistedq_messages_parked",
        "Messages of long-held tasks parked in the store and acknowledged.",
        EventKind.PARKED,
    ),
    (
        "twistedq_messages_recovered",
        "Parked messages of a daemon that died, published again.",
        EventKind.RECOVERED,
    ),
    (
        "twistedq_messages_given_back",
        "Messages given back to the queue before the broker's consumer timeout.",
        EventKind.GIVEN_BACK,
    ),
    (
        "twistedq_tasks_delayed",
        "Tasks sent to a delay queue of the broker until their ETA.",
        EventKind.DELAYED,
    ),
]


class _TaskFigures:
    """
    The counters and histograms of one task name.  A histogram is a list:
    the count in each bucket of :py:data:`BUCKETS`, the count above the
    last, then the sum; made cumulative at scrape.
    """

    __slots__ = ("outcomes", "received", "runtime", "started", "wait")

    def __init__(self) -> None:
        self.received = 0
        self.started = 0
        self.outcomes: dict[str, int] = {}
        self.runtime = [0.0] * (len(BUCKETS) + 2)
        self.wait = [0.0] * (len(BUCKETS) + 2)


def _observe(histogram: list[float], seconds: float) -> None:
    if seconds < 0:
        seconds = 0.0  # the clock stepped back
    histogram[bisect_left(BUCKETS, seconds)] += 1
    histogram[-1] += seconds


def _histogram_family(
    name: str, documentation: str, histograms: Iterator[tuple[str, list[float]]]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=["task"])
    edges = [floatToGoString(bound) for bound in BUCKETS] + ["+Inf"]
    for task, counts in histograms:
        if not counts[-2] and not any(counts[:-2]):
            continue  # never observed
        total = 0.0
        buckets = []
        for edge, count in zip(edges, counts, strict=False):
            total += count
            buckets.append((edge, total))
        family.add_metric([task], buckets, counts[-1])
    return family


class DaemonMetrics:
    """
    The daemon's metrics, from its events and its stats.

    :param events: the daemon's events, subscribed to at once.
    :param clock: what times the tasks (``seconds()``).
    :param stats: what ``/stats`` answers, read at each scrape for the
        gauges: ``{"pool": ..., "dispatcher": ..., "consuming": ...,
        "scheduler": ...}``, any part missing or ``None``.
    :param max_task_names: the most distinct task names used as labels;
        further names are counted as :py:data:`OTHER_TASKS`.
    :param max_timed: the most task ids whose receipt times are kept, and
        the most whose start times are; past it the oldest are dropped
        (and counted).

    :ivar registry: the :py:class:`~prometheus_client.CollectorRegistry`
        of these metrics (and of the process's own: memory, CPU, files).
    """

    def __init__(
        self,
        events: Events,
        clock: IReactorTime,
        stats: Callable[[], dict[str, Any]] | None = None,
        *,
        max_task_names: int = 1000,
        max_timed: int = 100_000,
    ) -> None:
        self.events = events
        self.clock = clock
        self.stats = stats
        self.max_task_names = max_task_names
        self.max_timed = max_timed
        self._now = clock.seconds
        self._tasks: dict[str, _TaskFigures] = {}
        self._rejected: dict[str, int] = {}
        self._dead_letters: dict[str, int] = {}
        # task id -> when received, until started: only the tasks waiting
        self._waiting: dict[str, float] = {}
        # task id -> when (last) started, until its outcome: the tasks running
        self._running: dict[str, float] = {}
        self._dropped = 0
        self._broker: BrokerConnection | None = None
        self._broker_protocol: BrokerProtocol | None = None
        self._broker_connections = 0
        self._broker_disconnections = 0
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        events.subscribe(self.observe)

    def timed(self) -> int:
        """
        How many task ids are kept for timing now.
        """
        return len(self._waiting) + len(self._running)

    # events

    def observe(self, event: Event) -> None:
        """
        Take one event (the observer subscribed to the daemon's events):
        count it by task name, outcome or reason, and time the task.  The
        kinds counted by the events themselves alone (claims, the store,
        parking) cost a few comparisons.
        """
        # Compared by identity: hashing an enum member costs more than the
        # few comparisons made for the frequent kinds.
        kind = event.kind
        if kind is _RECEIVED:
            figures = self._tasks.get(event.task_name)  # type: ignore[arg-type]
            if figures is None:
                figures = self._task(event.task_name)
            figures.received += 1
            task_id = event.task_id
            if task_id is not None:
                waiting = self._waiting
                waiting[task_id] = self._now()
                if len(waiting) > self.max_timed:
                    self._bound(waiting)
        elif kind is _STARTED:
            figures = self._tasks.get(event.task_name)  # type: ignore[arg-type]
            if figures is None:
                figures = self._task(event.task_name)
            figures.started += 1
            if event.task_id is not None:
                self._started(figures, event.task_id)
        elif kind is _SUCCEEDED:
            self._ended(event, "succeeded")
        elif kind is _CLAIMED:
            return  # counted by the events themselves
        elif kind is _FAILED:
            self._ended(event, "failed")
        elif kind is _RETRIED:
            self._ended(event, "retried")
        elif kind is _REVOKED:
            self._revoked(event)
        elif kind is _REJECTED:
            self._rejected_message(event)
        elif kind is _DEAD_LETTERED:
            self._dead_lettered(event)
        elif kind is _DELAYED or kind is _DUPLICATE or kind is _GIVEN_BACK:
            self._left(event)

    def _task(self, name: str | None) -> _TaskFigures:
        """
        The figures of the task called ``name``: its own while there are
        fewer than ``max_task_names``, else those of :py:data:`OTHER_TASKS`.
        """
        figures = self._tasks.get(name) if name is not None else None
        if figures is None:
            label = "_unknown" if name is None else name
            if label not in self._tasks and len(self._tasks) >= self.max_task_names:
                label = OTHER_TASKS
            figures = self._tasks.get(label)
            if figures is None:
                figures = self._tasks[label] = _TaskFigures()
        return figures

    def _started(self, figures: _TaskFigures, task_id: str) -> None:
        now = self._now()
        received = self._waiting.pop(task_id, None)
        if received is not None:  # else run again after a child died, or received unseen
            _observe(figures.wait, now - received)
        running = self._running
        running[task_id] = now  # timed from its last start
        if len(running) > self.max_timed:
            self._bound(running)

    def _ended(self, event: Event, outcome: str) -> None:
        figures = self._tasks.get(event.task_name)  # type: ignore[arg-type]
        if figures is None:
            figures = self._task(event.task_name)
        figures.outcomes[outcome] = figures.outcomes.get(outcome, 0) + 1
        if event.task_id is not None:
            # A later delivery of the same id (the next attempt of a retry,
            # received first) is kept apart, in the waiting ones.
            started = self._running.pop(event.task_id, None)
            if started is not None:
                _observe(figures.runtime, self._now() - started)

    def _left(self, event: Event) -> None:
        if event.task_id is not None:
            self._waiting.pop(event.task_id, None)
            self._running.pop(event.task_id, None)

    def _revoked(self, event: Event) -> None:
        outcomes = self._task(event.task_name).outcomes
        outcomes["revoked"] = outcomes.get("revoked", 0) + 1
        self._left(event)

    def _rejected_message(self, event: Event) -> None:
        reason = str(event.fields.get("reason"))
        self._rejected[reason] = self._rejected.get(reason, 0) + 1
        self._left(event)

    def _dead_lettered(self, event: Event) -> None:
        reason = str(event.fields.get("reason"))
        self._dead_letters[reason] = self._dead_letters.get(reason, 0) + 1
        self._left(event)

    def _bound(self, timed: dict[str, float]) -> None:
        while len(timed) > self.max_timed:
            del timed[next(iter(timed))]
            self._dropped += 1

    # the broker

    def watch_broker(self, connection: BrokerConnection) -> None:
        """
        Count the connections made to the broker (once logged in and set
        up) and lost, and read its failed attempts at scrape.
        """
        self._broker = connection
        connection.add_connect_hook(self._broker_connected)

    def _broker_connected(self, protocol: BrokerProtocol) -> defer.Deferred[None]:
        self._broker_connections += 1
        self._broker_protocol = protocol

        def lost(_: object) -> None:
            self._broker_disconnections += 1
            if self._broker_protocol is protocol:
                self._broker_protocol = None

        protocol.disconnected.wait().addCallback(lost)
        return defer.succeed(None)

    # scrape

    def collect(self) -> Iterator[Metric]:
        """
        Every metric of the daemon as it stands (the collector the
        registry calls at each scrape).
        """
        yield from self._task_families()
        yield from self._event_families()
        stats = self.stats() if self.stats is not None else {}
        yield from _pool_families(stats.get("pool"))
        yield from _dispatcher_families(stats.get("dispatcher"), stats.get("consuming"))
        yield from _scheduler_families(stats.get("scheduler"))
        yield from self._broker_families()

    def _task_families(self) -> Iterator[Metric]:
        received = CounterMetricFamily(
            "twistedq_tasks_received", "Task messages received and decoded.", labels=["task"]
        )
        started = CounterMetricFamily(
            "twistedq_tasks_started",
            "Tasks handed to a child or the reactor (again after a child died).",
            labels=["task"],
        )
        ended = CounterMetricFamily(
            "twistedq_tasks",
            "Attempts ended, by task and outcome: succeeded, failed, retried, revoked.",
            labels=["task", "outcome"],
        )
        for name, figures in self._tasks.items():
            if figures.received:
                received.add_metric([name], figures.received)
            if figures.started:
                started.add_metric([name], figures.started)
            for outcome, count in figures.outcomes.items():
                ended.add_metric([name, outcome], count)
        yield received
        yield started
        yield ended
        tasks = self._tasks.items()
        yield _histogram_family(
            "twistedq_task_runtime_seconds",
            "Seconds from a task's start to its outcome stored (succeeded, failed or retried).",
            ((name, figures.runtime) for name, figures in tasks),
        )
        yield _histogram_family(
            "twistedq_task_queue_wait_seconds",
            "Seconds from a task's receipt to its start (an ETA held in memory included).",
            ((name, figures.wait) for name, figures in tasks),
        )
        rejected = CounterMetricFamily(
            "twistedq_messages_rejected",
            "Messages that could not run, by reason (they are dead-lettered).",
            labels=["reason"],
        )
        for reason, count in self._rejected.items():
            rejected.add_metric([reason], count)
        yield rejected
        dead = CounterMetricFamily(
            "twistedq_dead_letters",
            "Messages sent to the dead-letter queue, by reason.",
            labels=["reason"],
        )
        for reason, count in self._dead_letters.items():
            dead.add_metric([reason], count)
        yield dead
        yield CounterMetricFamily(
            "twistedq_metrics_timings_dropped",
            "Tasks whose receipt or start was forgotten to keep the timings' memory bounded.",
            value=self._dropped,
        )

    def _event_families(self) -> Iterator[Metric]:
        counts = self.events.counts
        claims = CounterMetricFamily(
            "twistedq_claims",
            "Claims asked of the store, by outcome: claimed, duplicate (done already), "
            "held_elsewhere, fenced_off (a newer claim owned the outcome).",
            labels=["outcome"],
        )
        for kind, outcome in _CLAIMS.items():
            claims.add_metric([outcome], counts[kind])
        yield claims
        for name, documentation, kind in _COUNTED:
            yield CounterMetricFamily(name, documentation, value=counts[kind])

    def _broker_families(self) -> Iterator[Metric]:
        if self._broker is None:
            return
        yield GaugeMetricFamily(
            "twistedq_broker_connected",
            "1 while the daemon holds a connection to the broker, else 0.",
            value=1 if self._broker_protocol is not None else 0,
        )
        yield CounterMetricFamily(
            "twistedq_broker_connections",
            "Connections to the broker made and set up.",
            value=self._broker_connections,
        )
        yield CounterMetricFamily(
            "twistedq_broker_disconnections",
            "Connections to the broker lost or closed.",
            value=self._broker_disconnections,
        )
        yield GaugeMetricFamily(
            "twistedq_broker_connect_failures",
            "Attempts to connect to the broker that failed since it was last connected.",
            value=self._broker.failures,
        )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _pool_families(pool: dict[str, Any] | None) -> Iterator[Metric]:
    if not pool:
        return
    children = GaugeMetricFamily(
        "twistedq_pool_children", "Child processes, by state: idle or busy.", labels=["state"]
    )
    children.add_metric(["idle"], pool["idle"])
    children.add_metric(["busy"], pool["busy"])
    yield children
    yield CounterMetricFamily(
        "twistedq_pool_batches", "Batches of tasks sent to children.", value=pool["batches"]
    )
    yield CounterMetricFamily("twistedq_pool_tasks", "Tasks run by children.", value=pool["tasks"])
    restarts = CounterMetricFamily(
        "twistedq_child_restarts",
        "Replacement children started, by reason: crash, time-limit, max-tasks, max-memory.",
        labels=["reason"],
    )
    for reason, count in sorted(pool.get("restarts", {}).items()):
        restarts.add_metric([reason], count)
    yield restarts
    memory = GaugeMetricFamily(
        "twistedq_child_resident_memory_bytes",
        "Resident memory of each child, as it reported after its last batch (none before).",
        labels=["child"],
    )
    for child, kib in sorted(pool.get("rss_kib", {}).items()):
        if kib:  # 0 until its first batch: not measured yet
            memory.add_metric([child], kib * 1024)
    yield memory


def _dispatcher_families(dispatcher: dict[str, Any] | None, consuming: Any) -> Iterator[Metric]:
    if consuming is not None:
        yield _gauge(
            "twistedq_consuming", "1 while the daemon consumes its queue, else 0.", int(consuming)
        )
    if not dispatcher:
        return
    yield _gauge(
        "twistedq_tasks_pending", "Tasks waiting for an idle child.", dispatcher["pending"]
    )
    yield _gauge(
        "twistedq_tasks_held_for_eta",
        "Tasks held in memory until their ETA.",
        dispatcher["held_for_eta"],
    )
    yield _gauge(
        "twistedq_in_flight",
        "Runs, store writes and reads, and publishes under way (what a drain waits for).",
        dispatcher["in_flight"],
    )
    yield _gauge("twistedq_claims_held", "Claims this daemon holds.", dispatcher["claimed"])
    yield _gauge(
        "twistedq_store_available",
        "1 while the daemon finds the result store available, else 0.",
        int(dispatcher["store_available"]),
    )


def _scheduler_families(scheduler: dict[str, Any] | None) -> Iterator[Metric]:
    if not scheduler:
        return
    yield CounterMetricFamily(
        "twistedq_scheduler_published",
        "Periodic slots this daemon published (or whose job it ran).",
        value=scheduler["published"],
    )
    yield CounterMetricFamily(
        "twistedq_scheduler_failures",
        "Periodic slots whose claim, publish or job failed.",
        value=scheduler["failures"],
    )
    next_run = GaugeMetricFamily(
        "twistedq_scheduler_next_run_timestamp_seconds",
        "When each periodic task's next slot comes due, in seconds since the epoch.",
        labels=["task"],
    )
    for name, entry in sorted(scheduler.get("tasks", {}).items()):
        if isinstance(entry.get("next_run_at"), (int, float)):
            next_run.add_metric([name], entry["next_run_at"])
    yield next_run


class MetricsResource(Resource):
    """
    ``GET /metrics``: the metrics in the Prometheus text format, always
    read from memory (never the store), so 200 during a store outage too;
    500 with what was raised if they cannot be collected.
    """

    isLeaf = True

    def __init__(self, metrics: DaemonMetrics) -> None:
        Resource.__init__(self)
        self.metrics = metrics

    def render_GET(self, request: Request) -> bytes:
        if request.postpath not in ([], [b""]):
            return pages.notFound().render(request)
        request.setHeader(b"cache-control", b"no-store")
        try:
            body = generate_latest(self.metrics.registry)
        except Exception as e:
            log.failure("Could not collect the metrics")
            request.setResponseCode(500)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return f"could not collect the metrics: {type(e).__name__}: {e}\n".encode()
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return body
