"""
Tests for :py:mod:`twistedq.metrics`: the daemon's events and figures in
the Prometheus text format, read back with ``prometheus_client``'s own
parser.
"""

from pathlib import Path

from prometheus_client import REGISTRY
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from twisted.web.resource import getChildForRequest
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from tests.unit.fakes import FakePool, delivery, task_id
from twistedq import tap
from twistedq.backends.memory import MemoryBackend
from twistedq.daemon.dispatcher import Dispatcher, DispatchSettings
from twistedq.daemon.events import EventKind, Events
from twistedq.daemon.service import ConsumerService
from twistedq.metrics import DaemonMetrics, MetricsResource
from twistedq.outcome import failure_document, success_document
from twistedq.web import make_site_root


def scrape(metrics):
    """
    The exposition of ``metrics`` as ``/metrics`` answers it, parsed:
    ``{(sample name, frozenset of labels): value}``.
    """
    return parse(render(MetricsResource(metrics)).body)


def parse(text):
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


class Rendered:
    def __init__(self, request):
        self.code = request.responseCode or 200
        self.headers = request.responseHeaders
        self.body = b"".join(request.written).decode("utf-8")


def render(resource, path=b"metrics"):
    """
    GET ``path`` of ``resource`` (a site root, or the metrics resource
    itself); the finished request.
    """
    request = DummyRequest(path.split(b"/"))
    request.method = b"GET"
    if not isinstance(resource, MetricsResource):
        resource = getChildForRequest(resource, request)
    else:
        request.postpath = []
    result = resource.render(request)
    if result is not NOT_DONE_YET:
        request.write(result)
        request.finish()
    return Rendered(request)


def value(found, name, **labels):
    return found.get((name, frozenset(labels.items())))


def bucket(found, name, le, **labels):
    return value(found, name + "_bucket", le=le, **labels)


class TaskCountersTests(SynchronousTestCase):
    """
    Tasks are counted by name as they are received and started, and by
    name and outcome as each attempt ends; rejections and dead letters by
    reason.
    """

    def setUp(self):
        self.clock = Clock()
        self.events = Events()
        self.metrics = DaemonMetrics(self.events, self.clock)

    def test_through_a_dispatcher(self):
        """
        The events a dispatcher reports for tasks that succeed and fail
        are counted by task name and outcome.
        """
        pool = FakePool(idle=1)
        store = MemoryBackend(self.clock)
        dispatcher = Dispatcher(pool, store, self.clock, DispatchSettings(), events=self.events)
        # Known to be quick, so they are batched (a task never run goes alone).
        dispatcher.feeder.run_times.update(add=0.001, mul=0.001)
        dispatcher.deliver(delivery(1, task="add"))
        dispatcher.deliver(delivery(2, task="add"))
        dispatcher.deliver(delivery(3, task="mul"))
        pool.finish(0)
        dispatcher.pump()  # the pool's on_idle
        self.assertEqual(pool.ids(), [[task_id(1)], [task_id(2), task_id(3)]])
        pool.finish(
            1,
            [
                success_document(task_id(2), "add", 2),
                failure_document(task_id(3), "mul", ValueError("no"), traceback=""),
            ],
        )
        found = scrape(self.metrics)
        self.assertEqual(value(found, "twistedq_tasks_received_total", task="add"), 2)
        self.assertEqual(value(found, "twistedq_tasks_received_total", task="mul"), 1)
        self.assertEqual(value(found, "twistedq_tasks_started_total", task="add"), 2)
        self.assertEqual(value(found, "twistedq_tasks_total", task="add", outcome="succeeded"), 2)
        self.assertEqual(value(found, "twistedq_tasks_total", task="mul", outcome="failed"), 1)
        self.assertIsNone(value(found, "twistedq_tasks_total", task="mul", outcome="succeeded"))
        self.assertEqual(value(found, "twistedq_task_runtime_seconds_count", task="add"), 2)
        self.assertEqual(value(found, "twistedq_task_queue_wait_seconds_count", task="mul"), 1)

    def test_retried_and_revoked(self):
        """
        An attempt that asked to retry and a revoked task are outcomes too.
        """
        self.events.report(EventKind.RETRIED, task_id(1), "add")
        self.events.report(EventKind.REVOKED, task_id(2), "add", reason="expired")
        found = scrape(self.metrics)
        self.assertEqual(value(found, "twistedq_tasks_total", task="add", outcome="retried"), 1)
        self.assertEqual(value(found, "twistedq_tasks_total", task="add", outcome="revoked"), 1)

    def test_rejections_and_dead_letters_by_reason(self):
        """
        Messages that could not run are counted by the reason they were
        refused for, and dead letters by the reason in their header.
        """
        self.events.report(EventKind.REJECTED, None, reason="not-json")
        self.events.report(EventKind.DEAD_LETTERED, None, reason="not-json")
        self.events.report(EventKind.REJECTED, task_id(1), reason="bad-signature")
        self.events.report(EventKind.DEAD_LETTERED, task_id(2), "nope", reason="unknown-task")
        found = scrape(self.metrics)
        self.assertEqual(value(found, "twistedq_messages_rejected_total", reason="not-json"), 1)
        self.assertEqual(
            value(found, "twistedq_messages_rejected_total", reason="bad-signature"), 1
        )
        self.assertEqual(value(found, "twistedq_dead_letters_total", reason="not-json"), 1)
        self.assertEqual(value(found, "twistedq_dead_letters_total", reason="unknown-task"), 1)

    def test_task_names_bounded(self):
        """
        Past ``max_task_names`` distinct names, further names are counted
        under the one label ``_other`` (a publisher sending random names
        cannot make the exposition grow without end).
        """
        metrics = DaemonMetrics(self.events, self.clock, max_task_names=2)
        for number, name in enumerate(["a", "b", "c", "d", "a"]):
            self.events.report(EventKind.RECEIVED, task_id(number), name)
        found = scrape(metrics)
        received = {
            dict(labels)["task"]: count
            for (name, labels), count in found.items()
            if name == "twistedq_tasks_received_total"
        }
        self.assertEqual(received, {"a": 2, "b": 1, "_other": 2})

    def test_own_registry(self):
        """
        Each daemon's metrics live in a registry of their own: two in one
        process do not collide, and the global default registry holds none.
        """
        other_events = Events()
        other = DaemonMetrics(other_events, self.clock)
        self.events.report(EventKind.RECEIVED, task_id(1), "add")
        self.assertEqual(
            value(scrape(self.metrics), "twistedq_tasks_received_total", task="add"), 1
        )
        self.assertIsNone(value(scrape(other), "twistedq_tasks_received_total", task="add"))
        self.assertIsNone(REGISTRY.get_sample_value("twistedq_tasks_received_total"))


class TimingTests(SynchronousTestCase):
    """
    Runtime is the time from a task's start to its outcome; queue wait the
    time from its receipt to its start.  Only the ids in flight are kept.
    """

    def setUp(self):
        self.clock = Clock()
        self.events = Events()
        self.metrics = DaemonMetrics(self.events, self.clock)

    def report(self, kind, number=1, name="add", **fields):
        self.events.report(kind, task_id(number), name, **fields)

    def test_histograms(self):
        """
        A task received, started 2 s later and stored 0.3 s after that
        waited 2 s and ran 0.3 s, in the buckets of those values.
        """
        self.report(EventKind.RECEIVED)
        self.clock.advance(2)
        self.report(EventKind.STARTED)
        self.clock.advance(0.3)
        self.report(EventKind.SUCCEEDED)
        found = scrape(self.metrics)
        wait = "twistedq_task_queue_wait_seconds"
        self.assertEqual(bucket(found, wait, "1.0", task="add"), 0)
        self.assertEqual(bucket(found, wait, "2.5", task="add"), 1)
        self.assertEqual(bucket(found, wait, "+Inf", task="add"), 1)
        self.assertEqual(value(found, wait + "_sum", task="add"), 2.0)
        runtime = "twistedq_task_runtime_seconds"
        self.assertEqual(bucket(found, runtime, "0.25", task="add"), 0)
        self.assertEqual(bucket(found, runtime, "0.5", task="add"), 1)
        self.assertAlmostEqual(value(found, runtime + "_sum", task="add"), 0.3)
        self.assertEqual(value(found, runtime + "_count", task="add"), 1)
        self.assertEqual(self.metrics.timed(), 0)

    def test_failure_timed(self):
        """
        A failed attempt's runtime is observed as a success's is.
        """
        self.report(EventKind.RECEIVED)
        self.report(EventKind.STARTED)
        self.clock.advance(7)
        self.report(EventKind.FAILED)
        found = scrape(self.metrics)
        self.assertEqual(value(found, "twistedq_task_runtime_seconds_sum", task="add"), 7.0)

    def test_forgotten_when_the_task_leaves(self):
        """
        A task that leaves the daemon without an outcome (revoked, sent to
        a delay queue, dead-lettered, a duplicate, given back) is forgotten,
        unobserved; one parked or held elsewhere is still waited for.
        """
        leaving = [
            EventKind.REVOKED,
            EventKind.DELAYED,
            EventKind.DEAD_LETTERED,
            EventKind.DUPLICATE,
            EventKind.GIVEN_BACK,
            EventKind.REJECTED,
        ]
        for number, kind in enumerate(leaving):
            self.report(EventKind.RECEIVED, number)
            self.report(kind, number, reason="expired")
        self.assertEqual(self.metrics.timed(), 0)
        self.report(EventKind.RECEIVED, 100)
        self.report(EventKind.HELD_ELSEWHERE, 100)
        self.report(EventKind.STARTED, 100)
        self.report(EventKind.PARKED, 100)
        self.assertEqual(self.metrics.timed(), 1)
        self.clock.advance(4)
        self.report(EventKind.SUCCEEDED, 100)
        self.assertEqual(self.metrics.timed(), 0)
        found = scrape(self.metrics)
        self.assertEqual(value(found, "twistedq_task_runtime_seconds_sum", task="add"), 4.0)
        self.assertEqual(value(found, "twistedq_task_queue_wait_seconds_count", task="add"), 1)

    def test_bounded(self):
        """
        At most ``max_timed`` receipts and ``max_timed`` starts are kept:
        the oldest are dropped first, and how many were dropped is exposed.
        """
        metrics = DaemonMetrics(self.events, self.clock, max_timed=3)
        for number in range(10):
            self.report(EventKind.RECEIVED, number)
        self.assertEqual(metrics.timed(), 3)
        self.clock.advance(1)
        self.report(EventKind.STARTED, 9)
        # Its receipt was dropped: no wait, but its start is kept.
        self.report(EventKind.STARTED, 0)
        self.assertEqual(metrics.timed(), 4)
        found = scrape(metrics)
        self.assertEqual(value(found, "twistedq_task_queue_wait_seconds_count", task="add"), 1)
        self.assertEqual(value(found, "twistedq_metrics_timings_dropped_total"), 7)
        for number in range(20, 25):
            self.report(EventKind.STARTED, number)
        self.assertEqual(metrics.timed(), 2 + 3)
        found = scrape(metrics)
        self.assertEqual(value(found, "twistedq_metrics_timings_dropped_total"), 7 + 4)

    def test_run_again_after_a_child_died(self):
        """
        A task started again (its child died) waited once, until its first
        start; its runtime counts from its last start.
        """
        self.report(EventKind.RECEIVED)
        self.clock.advance(1)
        self.report(EventKind.STARTED)
        self.clock.advance(5)
        self.report(EventKind.STARTED)
        self.clock.advance(2)
        self.report(EventKind.SUCCEEDED)
        found = scrape(self.metrics)
        self.assertEqual(value(found, "twistedq_task_queue_wait_seconds_sum", task="add"), 1.0)
        self.assertEqual(value(found, "twistedq_task_queue_wait_seconds_count", task="add"), 1)
        self.assertEqual(value(found, "twistedq_task_runtime_seconds_sum", task="add"), 2.0)

    def test_next_attempt_received_before_the_retry_settles(self):
        """
        The next attempt of a retry, received before the retry's own
        report, keeps its receipt: its wait is observed when it starts;
        the attempt that retried is timed all the same.
        """
        self.report(EventKind.RECEIVED)
        self.report(EventKind.STARTED)
        self.clock.advance(1)
        self.report(EventKind.RECEIVED)
        self.report(EventKind.RETRIED)
        self.clock.advance(3)
        self.report(EventKind.STARTED)
        found = scrape(self.metrics)
        self.assertEqual(value(found, "twistedq_task_queue_wait_seconds_count", task="add"), 2)
        self.assertEqual(value(found, "twistedq_task_queue_wait_seconds_sum", task="add"), 3.0)
        self.assertEqual(value(found, "twistedq_task_runtime_seconds_count", task="add"), 1)
        self.assertEqual(value(found, "twistedq_task_runtime_seconds_sum", task="add"), 1.0)

    def test_clock_stepped_back(self):
        """
        A clock that steps back gives a duration of 0, never a negative.
        """
        self.clock.advance(100)
        self.report(EventKind.RECEIVED)
        self.clock.rightNow = 50
        self.report(EventKind.STARTED)
        found = scrape(self.metrics)
        self.assertEqual(value(found, "twistedq_task_queue_wait_seconds_sum", task="add"), 0.0)


class DaemonFiguresTests(SynchronousTestCase):
    """
    The claims, the store and the broker, counted from the events; the
    gauges of the pool, the dispatcher and the scheduler read from the
    stats at scrape time only.
    """

    def setUp(self):
        self.clock = Clock()
        self.events = Events()
        self.reads = 0
        self.figures = {
            "pool": {
                "children": 4,
                "idle": 1,
                "busy": 3,
                "batches": 10,
                "tasks": 25,
                "restarts": {"crash": 2, "max-tasks": 1},
                "rss_kib": {"Process-1": 1000, "Process-2": 2000},
            },
            "dispatcher": {
                "pending": 5,
                "held_for_eta": 2,
                "in_flight": 7,
                "claimed": 6,
                "retrying": 1,
                "store_available": True,
            },
            "consuming": True,
            "scheduler": {
                "published": 12,
                "failures": 3,
                "tasks": {"tick": {"enabled": True, "next_run_at": 1800000060.0}},
            },
        }

        def stats():
            self.reads += 1
            return self.figures

        self.metrics = DaemonMetrics(self.events, self.clock, stats)

    def test_claims_and_store(self):
        """
        Claims are counted by outcome; store retries, refusals and outages,
        parked, recovered and given-back messages as reported.
        """
        for kind, times in [
            (EventKind.CLAIMED, 3),
            (EventKind.DUPLICATE, 2),
            (EventKind.HELD_ELSEWHERE, 1),
            (EventKind.FENCED_OFF, 1),
            (EventKind.STORE_RETRY, 4),
            (EventKind.STORE_DOWN, 1),
            (EventKind.STORE_UP, 1),
            (EventKind.STORE_REFUSED, 1),
            (EventKind.PARKED, 2),
            (EventKind.RECOVERED, 1),
            (EventKind.GIVEN_BACK, 1),
            (EventKind.DELAYED, 1),
        ]:
            for number in range(times):
                self.events.report(kind, task_id(number), "add")
        found = scrape(self.metrics)
        claims = "twistedq_claims_total"
        self.assertEqual(value(found, claims, outcome="claimed"), 3)
        self.assertEqual(value(found, claims, outcome="duplicate"), 2)
        self.assertEqual(value(found, claims, outcome="held_elsewhere"), 1)
        self.assertEqual(value(found, claims, outcome="fenced_off"), 1)
        self.assertEqual(value(found, "twistedq_store_write_retries_total"), 4)
        self.assertEqual(value(found, "twistedq_store_outages_total"), 1)
        self.assertEqual(value(found, "twistedq_store_refused_total"), 1)
        self.assertEqual(value(found, "twistedq_messages_parked_total"), 2)
        self.assertEqual(value(found, "twistedq_messages_recovered_total"), 1)
        self.assertEqual(value(found, "twistedq_messages_given_back_total"), 1)
        self.assertEqual(value(found, "twistedq_tasks_delayed_total"), 1)

    def test_gauges_read_at_scrape(self):
        """
        Events never read the stats; each scrape reads them once and shows
        their values of that moment.
        """
        for number in range(5):
            self.events.report(EventKind.RECEIVED, task_id(number), "add")
        self.assertEqual(self.reads, 0)
        found = scrape(self.metrics)
        self.assertEqual(self.reads, 1)
        self.assertEqual(value(found, "twistedq_pool_children", state="busy"), 3)
        self.assertEqual(value(found, "twistedq_pool_children", state="idle"), 1)
        self.assertEqual(value(found, "twistedq_pool_batches_total"), 10)
        self.assertEqual(value(found, "twistedq_pool_tasks_total"), 25)
        self.assertEqual(value(found, "twistedq_child_restarts_total", reason="crash"), 2)
        self.assertEqual(value(found, "twistedq_child_restarts_total", reason="max-tasks"), 1)
        self.assertEqual(
            value(found, "twistedq_child_resident_memory_bytes", child="Process-2"), 2048000
        )
        self.assertEqual(value(found, "twistedq_tasks_pending"), 5)
        self.assertEqual(value(found, "twistedq_tasks_held_for_eta"), 2)
        self.assertEqual(value(found, "twistedq_in_flight"), 7)
        self.assertEqual(value(found, "twistedq_claims_held"), 6)
        self.assertEqual(value(found, "twistedq_store_available"), 1)
        self.assertEqual(value(found, "twistedq_consuming"), 1)
        self.assertEqual(value(found, "twistedq_scheduler_published_total"), 12)
        self.assertEqual(value(found, "twistedq_scheduler_failures_total"), 3)
        self.assertEqual(
            value(found, "twistedq_scheduler_next_run_timestamp_seconds", task="tick"),
            1800000060.0,
        )
        self.figures["pool"]["busy"] = 0
        self.figures["dispatcher"]["store_available"] = False
        self.figures["consuming"] = False
        self.figures["scheduler"] = None
        found = scrape(self.metrics)
        self.assertEqual(self.reads, 2)
        self.assertEqual(value(found, "twistedq_pool_children", state="busy"), 0)
        self.assertEqual(value(found, "twistedq_store_available"), 0)
        self.assertEqual(value(found, "twistedq_consuming"), 0)
        self.assertIsNone(value(found, "twistedq_scheduler_published_total"))

    def test_every_name_documented(self):
        """
        Every ``twistedq_`` metric a daemon exposes, with every part of its
        figures present, is named in the operations page.
        """
        self.metrics.watch_broker(FakeConnection())
        for kind in EventKind:
            self.events.report(kind, task_id(1), "add", reason="expired")
        families = {
            family.name
            for family in text_string_to_metric_families(render(MetricsResource(self.metrics)).body)
            if family.name.startswith("twistedq_")
        }
        page = (Path(__file__).parents[2] / "doc" / "operations.rst").read_text()
        self.assertGreater(len(families), 30)
        for name in sorted(families):
            suffix = "_total" if f"{name}_total" in page else ""
            self.assertIn(f"``{name}{suffix}", page)

    def test_process_metrics(self):
        """
        The daemon process's own figures (memory, CPU, open files) are
        exposed under the usual ``process_`` names (read from ``/proc``).
        """
        if not Path("/proc/self/stat").exists():
            raise SkipTest("no /proc: prometheus_client exposes no process figures here")
        found = scrape(self.metrics)
        self.assertGreater(value(found, "process_resident_memory_bytes"), 0)

    def test_broker_connections(self):
        """
        Watching a broker connection counts the connections made and lost,
        tells whether one is up and how many attempts failed since the
        last one.
        """
        broker = FakeConnection()
        self.metrics.watch_broker(broker)
        found = scrape(self.metrics)
        self.assertEqual(value(found, "twistedq_broker_connected"), 0)
        self.assertEqual(value(found, "twistedq_broker_connections_total"), 0)
        broker.failures = 3
        first = broker.connect()
        found = scrape(self.metrics)
        self.assertEqual(value(found, "twistedq_broker_connected"), 1)
        self.assertEqual(value(found, "twistedq_broker_connections_total"), 1)
        self.assertEqual(value(found, "twistedq_broker_connect_failures"), 3)
        first.disconnected.fire()
        broker.connect()
        found = scrape(self.metrics)
        self.assertEqual(value(found, "twistedq_broker_connections_total"), 2)
        self.assertEqual(value(found, "twistedq_broker_disconnections_total"), 1)
        self.assertEqual(value(found, "twistedq_broker_connected"), 1)


class FakeSignal:
    def __init__(self):
        self.waiting = []

    def wait(self):
        d = defer.Deferred()
        self.waiting.append(d)
        return d

    def fire(self):
        waiting, self.waiting = self.waiting, []
        for d in waiting:
            d.callback(None)


class FakeProtocol:
    def __init__(self):
        self.disconnected = FakeSignal()


class FakeConnection:
    """
    What :py:meth:`DaemonMetrics.watch_broker` uses of a
    :py:class:`~twistedq.amqp.broker.BrokerConnection`.
    """

    def __init__(self):
        self.hooks = []
        self.failures = 0

    def add_connect_hook(self, hook):
        self.hooks.append(hook)

    def connect(self):
        """
        A new connection: run the hooks, which must be done at once.
        """
        protocol = FakeProtocol()
        for hook in self.hooks:
            done = []
            defer.ensureDeferred(hook(protocol)).addCallback(done.append)
            assert done, "a connect hook did not finish at once"
        return protocol


class MetricsResourceTests(SynchronousTestCase):
    """
    ``GET /metrics`` on the status site.
    """

    def setUp(self):
        self.clock = Clock()
        self.events = Events()
        self.metrics = DaemonMetrics(self.events, self.clock, lambda: {})
        self.store = MemoryBackend(self.clock)

    def test_text_format(self):
        """
        ``/metrics`` answers 200 in the Prometheus text format.
        """
        root = make_site_root(self.store, self.clock, metrics=MetricsResource(self.metrics))
        self.events.report(EventKind.RECEIVED, task_id(1), "add")
        rendered = render(root)
        self.assertEqual(rendered.code, 200)
        self.assertEqual(
            rendered.headers.getRawHeaders(b"content-type"), [CONTENT_TYPE_LATEST.encode()]
        )
        found = parse(rendered.body)
        self.assertEqual(value(found, "twistedq_tasks_received_total", task="add"), 1)

    def test_store_unavailable(self):
        """
        While the store is unavailable ``/`` answers 503 and ``/metrics``
        still 200: it reads no store.
        """
        root = make_site_root(
            self.store,
            self.clock,
            available=lambda: False,
            metrics=MetricsResource(self.metrics),
        )
        self.assertEqual(render(root, b"").code, 503)
        rendered = render(root)
        self.assertEqual(rendered.code, 200)
        self.assertEqual(self.store.calls, [])

    def test_only_its_own_path(self):
        """
        ``/metrics/`` is ``/metrics``; a path below it is not found.
        """
        root = make_site_root(self.store, self.clock, metrics=MetricsResource(self.metrics))
        self.assertEqual(render(root, b"metrics/").code, 200)
        self.assertEqual(render(root, b"metrics/x").code, 404)

    def test_failing_figures(self):
        """
        Figures that cannot be read answer 500 with what was raised, and
        the error is logged.
        """

        def broken():
            raise RuntimeError("pool gone")

        metrics = DaemonMetrics(self.events, self.clock, broken)
        rendered = render(MetricsResource(metrics))
        self.assertEqual(rendered.code, 500)
        self.assertIn("RuntimeError: pool gone", rendered.body)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class WiringTests(SynchronousTestCase):
    """
    ``twistd twistedq`` serves ``/metrics`` on its status site unless
    ``--no-metrics``.
    """

    def make(self, *argv):
        options = tap.Options()
        options.parseOptions(["--log-format", "twisted", "-r", "memory://", *argv])
        return tap.makeService(options)

    def site_and_dispatcher(self, *argv):
        daemon = self.make(*argv)
        served = [c for c in daemon if isinstance(c, StreamServerEndpointService)]
        dispatcher = next(c for c in daemon if isinstance(c, ConsumerService)).dispatcher
        return (served[0].factory.resource if served else None), dispatcher

    def test_served_by_default(self):
        """
        By default ``/metrics`` is a child of the status site, fed by the
        dispatcher's events.
        """
        root, dispatcher = self.site_and_dispatcher()
        resource = root.children[b"metrics"]
        self.assertIsInstance(resource, MetricsResource)
        dispatcher.events.report(EventKind.RECEIVED, task_id(1), "add")
        found = parse(render(resource).body)
        self.assertEqual(value(found, "twistedq_tasks_received_total", task="add"), 1)
        self.assertEqual(value(found, "twistedq_pool_children", state="busy"), 0)

    def test_no_metrics(self):
        """
        ``--no-metrics`` leaves ``/metrics`` out and nothing observes the
        events.
        """
        root, dispatcher = self.site_and_dispatcher("--no-metrics")
        self.assertNotIn(b"metrics", root.children)
        self.assertIn(b"stats", root.children)
        self.assertEqual(dispatcher.events._observers, [])

    def test_no_status_site(self):
        """
        Without a status site nothing observes the events either.
        """
        root, dispatcher = self.site_and_dispatcher("--status", "none")
        self.assertIsNone(root)
        self.assertEqual(dispatcher.events._observers, [])
