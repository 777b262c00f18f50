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
from collections.abc import Callable, Iterator, Sequence
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
    "OTHER_TASKS",
    "RUNTIME_BUCKETS",
    "WAIT_BUCKETS",
    "DaemonMetrics",
    "MetricsResource",
]

log = Logger()

#: The upper bounds, in seconds, of the runtime histogram's buckets.
RUNTIME_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip
#: The upper bounds, in seconds, of the queue-wait histogram's buckets.
WAIT_BUCKETS: tuple[float, ...] = RUNTIME_BUCKETS
#: The task label of the names past ``max_task_names``.
OTHER_TASKS = "_other"

_OUTCOMES = {
    EventKind.SUCCEEDED: "succeeded",
    EventKind.FAILED: "failed",
    EventKind.RETRIED: "retried",
    EventKind.REVOKED: "revoked",
}
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


class _Histogram:
    """
    Observations by task name in fixed buckets: one increment and one
    addition per observation; the cumulative counts are made at scrape.
    """

    __slots__ = ("bounds", "series")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        # name -> [count in each bucket..., count above the last, sum]
        self.series: dict[str, list[float]] = {}

    def observe(self, name: str, seconds: float) -> None:
        if seconds < 0:
            seconds = 0.0  # the clock stepped back
        counts = self.series.get(name)
        if counts is None:
            counts = self.series[name] = [0.0] * (len(self.bounds) + 2)
        counts[bisect_left(self.bounds, seconds)] += 1
        counts[-1] += seconds

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, documentation, labels=["task"])
        edges = [floatToGoString(bound) for bound in self.bounds] + ["+Inf"]
        for task, counts in self.series.items():
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
    :param max_timed: the most task ids whose receipt and start times are
        kept; past it the oldest are dropped (and counted).

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
        self._names: set[str] = set()
        # (kind, task name) -> count, for the kinds counted by name
        self._by_task: dict[tuple[EventKind, str], int] = {}
        self._rejected: dict[str, int] = {}
        self._dead_letters: dict[str, int] = {}
        # task id -> [received at, started at]: only the tasks in flight
        self._timed: dict[str, list[float | None]] = {}
        self._dropped = 0
        self._runtime = _Histogram(RUNTIME_BUCKETS)
        self._wait = _Histogram(WAIT_BUCKETS)
        self._broker: BrokerConnection | None = None
        self._broker_protocol: BrokerProtocol | None = None
        self._broker_connections = 0
        self._broker_disconnections = 0
        self._on: dict[EventKind, Callable[[Event], None]] = {
            EventKind.RECEIVED: self._received,
            EventKind.STARTED: self._started,
            EventKind.SUCCEEDED: self._ended,
            EventKind.FAILED: self._ended,
            EventKind.RETRIED: self._ended,
            EventKind.REVOKED: self._revoked,
            EventKind.REJECTED: self._rejected_message,
            EventKind.DEAD_LETTERED: self._dead_lettered,
            EventKind.DELAYED: self._left,
            EventKind.DUPLICATE: self._left,
            EventKind.GIVEN_BACK: self._left,
        }
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
        return len(self._timed)

    # events

    def observe(self, event: Event) -> None:
        """
        Take one event (the observer subscribed to the daemon's events).
        """
        on = self._on.get(event.kind)
        if on is not None:
            on(event)

    def _label(self, name: str | None) -> str:
        if name is None:
            return "_unknown"
        if name in self._names:
            return name
        if len(self._names) < self.max_task_names:
            self._names.add(name)
            return name
        return OTHER_TASKS

    def _count(self, event: Event) -> str:
        key = (event.kind, self._label(event.task_name))
        self._by_task[key] = self._by_task.get(key, 0) + 1
        return key[1]

    def _received(self, event: Event) -> None:
        self._count(event)
        task_id = event.task_id
        if task_id is None:
            return
        timed = self._timed
        timed.pop(task_id, None)  # a new delivery of it: timed afresh, last in line
        timed[task_id] = [self.clock.seconds(), None]
        self._bound()

    def _started(self, event: Event) -> None:
        name = self._count(event)
        task_id = event.task_id
        if task_id is None:
            return
        now = self.clock.seconds()
        entry = self._timed.get(task_id)
        if entry is None:  # its receipt was dropped, or came before the metrics
            self._timed[task_id] = [None, now]
            self._bound()
            return
        received, started = entry
        if started is None and received is not None:
            self._wait.observe(name, now - received)
        entry[1] = now  # run again after a child died: timed from its last start

    def _ended(self, event: Event) -> None:
        name = self._count(event)
        task_id = event.task_id
        if task_id is None:
            return
        entry = self._timed.get(task_id)
        if entry is None or entry[1] is None:
            # Not started: what is kept is a later delivery of the same id
            # (the next attempt of a retry, received first); it stays.
            return
        del self._timed[task_id]
        self._runtime.observe(name, self.clock.seconds() - entry[1])

    def _left(self, event: Event) -> None:
        if event.task_id is not None:
            self._timed.pop(event.task_id, None)

    def _revoked(self, event: Event) -> None:
        self._count(event)
        self._left(event)

    def _rejected_message(self, event: Event) -> None:
        reason = str(event.fields.get("reason"))
        self._rejected[reason] = self._rejected.get(reason, 0) + 1
        self._left(event)

    def _dead_lettered(self, event: Event) -> None:
        reason = str(event.fields.get("reason"))
        self._dead_letters[reason] = self._dead_letters.get(reason, 0) + 1
        self._left(event)

    def _bound(self) -> None:
        timed = self._timed
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
        for (kind, name), count in self._by_task.items():
            if kind is EventKind.RECEIVED:
                received.add_metric([name], count)
            elif kind is EventKind.STARTED:
                started.add_metric([name], count)
            else:
                ended.add_metric([name, _OUTCOMES[kind]], count)
        yield received
        yield started
        yield ended
        yield self._runtime.family(
            "twistedq_task_runtime_seconds",
            "Seconds from a task's start to its outcome stored (succeeded, failed or retried).",
        )
        yield self._wait.family(
            "twistedq_task_queue_wait_seconds",
            "Seconds from a task's receipt to its start (an ETA held in memory included).",
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
        "Resident memory of each child, as it reported after its last batch.",
        labels=["child"],
    )
    for child, kib in sorted(pool.get("rss_kib", {}).items()):
        if kib is not None:
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
