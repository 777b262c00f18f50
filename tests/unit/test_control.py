"""
Tests for remote control: the pool's grow, shrink and terminate, the
dispatcher's inspection and revocation, :py:class:`ControlService` and
:py:class:`ControlClient` over fake channels, all on a :py:obj:`Clock`.
"""

import itertools
import json
from types import SimpleNamespace

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.fakes import FakePool, FakeStarter, delivery, iso, task_id
from tests.unit.test_dispatcher import known_quick
from tests.unit.test_tap import TapTestCase
from twistedq import tap
from twistedq.backends.memory import MemoryBackend
from twistedq.control import (
    ControlClient,
    ControlService,
    DaemonControl,
    Request,
    RequestGuard,
    control_exchange,
)
from twistedq.daemon.dispatcher import Dispatcher, DispatchSettings
from twistedq.daemon.events import EventKind
from twistedq.daemon.identity import DaemonIdentity
from twistedq.daemon.job import args_preview
from twistedq.message import TaskMessage
from twistedq.signing import SigningKeys
from twistedq.worker.commands import RunTasks, Shutdown, pack
from twistedq.worker.pool import ChildLost, ProcessPool

NOW = 1_700_000_000.0


class PoolControlTests(SynchronousTestCase):
    """
    :py:meth:`ProcessPool.grow`, :py:meth:`ProcessPool.shrink` and
    :py:meth:`ProcessPool.terminate`.
    """

    def setUp(self):
        self.clock = Clock()
        self.starter = FakeStarter()
        self.pool = ProcessPool(self.starter, 2, self.clock, shutdown_timeout=10.0)
        self.successResultOf(self.pool.startService())

    def answer(self, child, count):
        outcomes = [b"{}"] * count
        child.protocol.answer(RunTasks, {"outcomes": pack(outcomes), "rss": 0})

    def test_grow(self):
        """
        Growing starts that many children at once, idle.
        """
        self.assertEqual(self.pool.grow(2), 4)
        self.assertEqual(len(self.pool.children), 4)
        self.assertEqual(self.pool.idle_count, 4)

    def test_shrink_idle_first(self):
        """
        Shrinking stops idle children first (asked to shut down, killed if
        they do not within the shutdown timeout), never counted as
        restarts, and replaces none.
        """
        self.pool.grow(1)
        self.pool.run_batch([b"x"])
        busy = self.pool.last_child
        self.assertEqual(self.pool.shrink(2), 1)
        self.assertEqual([c.name for c in self.pool.children], [busy])
        stopped = [c for c in self.starter.children if c.name != busy]
        for child in stopped:
            self.assertIn(Shutdown, child.protocol.commands())
        self.clock.advance(10)
        self.assertEqual(sorted(self.starter.kills), sorted(c.name for c in stopped))
        self.assertEqual(self.pool.restarts, 0)
        self.assertEqual(len(self.starter.children), 3)

    def test_shrink_busy_after_batch(self):
        """
        A busy child over the new size stops once its batch is answered,
        and the batch's outcomes are delivered.
        """
        first = self.pool.run_batch([b"a"])
        second = self.pool.run_batch([b"b"])
        self.assertEqual(self.pool.shrink(1), 1)
        self.assertEqual(len(self.pool.children), 2)
        [one, two] = self.starter.children
        self.answer(two, 1)
        self.assertEqual(self.successResultOf(first), [b"{}"])
        self.assertEqual(len(self.pool.children), 1)
        self.assertIn(Shutdown, two.protocol.commands())
        self.answer(one, 1)
        self.assertEqual(self.successResultOf(second), [b"{}"])
        self.assertEqual(self.pool.children, [one])
        self.assertEqual(self.pool.idle_count, 1)

    def test_never_below_one(self):
        """
        Shrinking by more than the pool holds leaves one child.
        """
        self.assertEqual(self.pool.shrink(10), 1)
        self.assertEqual(len(self.pool.children), 1)

    def test_shrink_while_starting(self):
        """
        A child that finishes starting after the pool shrank under it is
        shut down at once.
        """
        self.starter.ready = []
        self.pool.grow(1)
        [(child, ready)] = self.starter.ready
        self.pool.shrink(1)
        ready.callback(child)
        self.assertEqual(len(self.pool.children), 2)
        self.assertIn(Shutdown, child.protocol.commands())

    def test_bad_counts(self):
        self.assertRaises(ValueError, self.pool.grow, 0)
        self.assertRaises(ValueError, self.pool.shrink, -1)

    def test_grow_to_max(self):
        """
        The pool never grows past its maximum (4 x its size by default):
        growing beyond it grows to it, and no further.
        """
        self.assertEqual(self.pool.max_size, 8)
        self.assertEqual(self.pool.grow(10**9), 8)
        self.assertEqual(len(self.starter.children), 8)
        self.assertEqual(self.pool.grow(1), 8)
        self.assertEqual(len(self.starter.children), 8)

    def test_max_size(self):
        """
        ``max_size`` sets the maximum; it cannot be under the size.
        """
        pool = ProcessPool(FakeStarter(), 2, self.clock, max_size=3)
        self.assertEqual(pool.grow(5), 3)
        self.assertRaises(ValueError, ProcessPool, FakeStarter(), 2, self.clock, max_size=1)

    def test_terminate(self):
        """
        Terminating kills the child running that very body: its batch
        fails with ChildLost("revoked"), counted as a ``revoked`` restart,
        and a replacement starts.
        """
        body = b"task"
        d = self.pool.run_batch([b"other", body])
        name = self.pool.last_child
        self.assertIsNone(self.pool.terminate(bytes(bytearray(body))))  # equal, not the same
        self.assertEqual(self.pool.terminate(body), name)
        self.assertEqual(set(self.starter.kills), {name})
        failure = self.failureResultOf(d, ChildLost)
        self.assertEqual(failure.value.reason, "revoked")
        self.clock.advance(0)
        self.assertEqual(self.pool.restarts_by_reason, {"revoked": 1})
        self.assertEqual(len(self.pool.children), 2)

    def test_terminate_idle(self):
        """
        No child runs a body whose batch was answered: nothing is killed.
        """
        body = b"task"
        d = self.pool.run_batch([body])
        self.answer(self.starter.children[-1], 1)
        self.successResultOf(d)
        self.assertIsNone(self.pool.terminate(body))
        self.assertEqual(self.starter.kills, [])


class MaxConcurrencyOptionTests(TapTestCase):
    """
    ``twistd twistedq --max-concurrency``.
    """

    def test_default(self):
        self.assertEqual(self.parse("--concurrency", "2")["max-concurrency"], 8)
        self.assertEqual(self.parse()["max-concurrency"], 12)  # cpu_count 3

    def test_given(self):
        self.assertEqual(self.parse("-c", "2", "--max-concurrency", "5")["max-concurrency"], 5)

    def test_under_concurrency(self):
        self.assertRaises(usage.UsageError, self.parse, "-c", "4", "--max-concurrency", "3")

    def test_pool(self):
        """
        The daemon's pool has that maximum.
        """
        options = self.parse("-c", "2", "--max-concurrency", "5")
        pool = tap._pool(options, options["settings"], Clock())
        self.assertEqual(pool.max_size, 5)


class DispatcherControlTests(SynchronousTestCase):
    """
    What the dispatcher tells and does for remote control, on a fake pool
    and the memory store with claims.
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(NOW)
        self.pool = FakePool(idle=0)
        self.pool.task_limits = {"add": (None, None), "mul": (None, None)}
        self.store = MemoryBackend(self.clock)
        self.dispatcher = Dispatcher(
            self.pool,
            self.store,
            self.clock,
            DispatchSettings(max_batch=4, check_duplicates=True),
        )
        known_quick(self.dispatcher, "add", "mul")
        self.events = []
        self.dispatcher.events.subscribe(self.events.append)

    def deliver(self, *deliveries):
        for d in deliveries:
            self.dispatcher.deliver(d)
        self.clock.advance(0)  # the gate's claim turn
        return deliveries

    def status(self, number):
        return json.loads(self.store.results[task_id(number)])["status"]

    def test_started_names_child(self):
        """
        A batch handed to a child sets each job's child and start time and
        reports STARTED with the child's name.
        """
        self.deliver(delivery(1), delivery(2))
        self.pool.idle = 1
        self.dispatcher.pump()
        started = [e for e in self.events if e.kind is EventKind.STARTED]
        self.assertEqual([e.task_id for e in started], [task_id(1), task_id(2)])
        self.assertEqual({e.fields["child"] for e in started}, {"Process-1"})
        [one, _two] = self.dispatcher.active()
        self.assertEqual(
            one,
            {
                "id": task_id(1),
                "name": "add",
                "args": "(1,), {}",
                "runtime": 0.0,
                "child": "Process-1",
                "started": NOW,
            },
        )
        self.clock.advance(2.5)
        self.assertEqual(self.dispatcher.active()[1]["runtime"], 2.5)

    def test_reserved_and_scheduled(self):
        """
        Queued tasks are reserved; a task held for a later ETA is
        scheduled, not reserved; running ones are neither.
        """
        self.deliver(delivery(1), delivery(2), delivery(3, eta=iso(NOW + 30)))
        self.pool.idle = 1
        self.dispatcher.pump()  # 1 and 2 run
        self.deliver(delivery(4))
        self.assertEqual(
            self.dispatcher.reserved(), [{"id": task_id(4), "name": "add", "state": "queued"}]
        )
        self.assertEqual(
            self.dispatcher.scheduled(),
            [{"id": task_id(3), "name": "add", "eta": iso(NOW + 30)}],
        )
        self.assertEqual([a["id"] for a in self.dispatcher.active()], [task_id(1), task_id(2)])

    def test_revoke_queued_and_scheduled(self):
        """
        Revoking a queued and a scheduled task drops both: REVOKED stored,
        acked, never run; an unknown id is not reported.
        """
        queued, scheduled = self.deliver(delivery(1), delivery(2, eta=iso(NOW + 30)))
        answer = self.dispatcher.revoke([task_id(1), task_id(2), task_id(9)])
        self.assertEqual(
            answer, {"revoked": [task_id(1), task_id(2)], "terminated": [], "running": []}
        )
        self.assertEqual((self.status(1), self.status(2)), ("REVOKED", "REVOKED"))
        self.assertEqual((queued.settled, scheduled.settled), (["ack"], ["ack"]))
        self.pool.idle = 1
        self.dispatcher.pump()
        self.clock.advance(60)
        self.assertEqual(self.pool.batches, [])
        self.assertEqual(self.dispatcher.reserved() + self.dispatcher.scheduled(), [])

    def test_revoke_running_without_terminate(self):
        """
        Without terminate a running task is left to run, and said so.
        """
        self.deliver(delivery(1))
        self.pool.idle = 1
        self.dispatcher.pump()
        answer = self.dispatcher.revoke([task_id(1)])
        self.assertEqual(answer, {"revoked": [], "terminated": [], "running": [task_id(1)]})
        self.assertEqual(self.pool.killed, [])

    def test_terminate_mid_batch(self):
        """
        Terminating a task of a running batch kills its child: that task
        ends REVOKED, committed under its claim, and acked; the others of
        the batch run again, not as suspects and with no death counted.
        """
        one, two, three = self.deliver(delivery(1), delivery(2), delivery(3))
        self.pool.idle = 1
        self.dispatcher.pump()
        self.assertEqual(self.pool.ids(), [[task_id(1), task_id(2), task_id(3)]])
        answer = self.dispatcher.revoke([task_id(2)], terminate=True)
        self.assertEqual(
            answer, {"revoked": [task_id(2)], "terminated": [task_id(2)], "running": []}
        )
        self.assertEqual(self.pool.killed, [0])
        self.pool.lose(0, "revoked")
        self.assertEqual(self.status(2), "REVOKED")
        self.assertEqual(two.settled, ["ack"])
        self.assertIn(task_id(2), [w.record.task_id for w in self.store.writes if w.token])
        self.assertEqual(self.pool.ids()[1], [task_id(1), task_id(3)])
        jobs = {job.task_id: job for job in self.dispatcher.jobs()}
        self.assertEqual(
            [(jobs[task_id(n)].deaths, jobs[task_id(n)].suspect) for n in (1, 3)],
            [(0, False), (0, False)],
        )
        self.pool.finish(1)
        self.assertEqual((self.status(1), self.status(3)), ("SUCCESS", "SUCCESS"))
        self.assertEqual((one.settled, three.settled), (["ack"], ["ack"]))
        revoked = [e for e in self.events if e.kind is EventKind.REVOKED]
        self.assertEqual([e.task_id for e in revoked], [task_id(2)])

    def test_slow_task_alone(self):
        """
        A task not known to be quick runs alone in its child: only it is
        reported STARTED and active while the quick tasks after it wait or
        run elsewhere, and terminating it kills only it.
        """
        self.pool.task_limits["slow"] = (None, None)
        self.deliver(delivery(1, task="slow"), delivery(2), delivery(3))
        self.pool.idle = 1
        self.dispatcher.pump()
        self.assertEqual(self.pool.ids(), [[task_id(1)]])
        started = [e.task_id for e in self.events if e.kind is EventKind.STARTED]
        self.assertEqual(started, [task_id(1)])
        self.assertEqual([a["id"] for a in self.dispatcher.active()], [task_id(1)])
        self.dispatcher.revoke([task_id(1)], terminate=True)
        self.pool.lose(0, "revoked")
        self.assertEqual(self.status(1), "REVOKED")
        self.dispatcher.pump()
        self.assertEqual(self.pool.ids()[1], [task_id(2), task_id(3)])
        self.assertEqual(self.dispatcher.feeder.run_times.get("slow"), None)

    def test_terminate_after_batch_ended(self):
        """
        A batch answered before its child was killed settles as it ran.
        """
        (_one,) = self.deliver(delivery(1))
        self.pool.idle = 1
        self.dispatcher.pump()
        self.dispatcher.revoke([task_id(1)], terminate=True)
        self.pool.finish(0)
        self.assertEqual(self.status(1), "SUCCESS")
        self.assertEqual(self.dispatcher.feeder.terminating, set())

    def test_terminate_while_stopping(self):
        """
        A task terminated while the daemon drains ends REVOKED all the
        same; the others of its batch go back to the queue.
        """
        one, two = self.deliver(delivery(1), delivery(2))
        self.pool.idle = 1
        self.dispatcher.pump()
        self.dispatcher.revoke([task_id(1)], terminate=True)
        drained = self.dispatcher.drain()
        self.pool.lose(0, "revoked")
        self.successResultOf(drained)
        self.assertEqual(self.status(1), "REVOKED")
        self.assertEqual((one.settled, two.settled), (["ack"], [("reject", True)]))
        self.assertEqual(len(self.pool.batches), 1)

    def test_registered(self):
        """
        The registered tasks are the children's and the reactor tasks,
        sorted.
        """
        self.assertEqual(self.dispatcher.feeder.registered(), ["add", "mul"])
        reactor_tasks = {"fetch": SimpleNamespace(on_reactor=True), "add": object()}
        self.dispatcher.feeder.runner = SimpleNamespace(
            registry=SimpleNamespace(get_all=lambda: reactor_tasks),
            handles=lambda name: getattr(reactor_tasks.get(name), "on_reactor", False),
        )
        self.assertEqual(self.dispatcher.feeder.registered(), ["add", "fetch", "mul"])


class ArgsPreviewTests(SynchronousTestCase):
    def test_cut(self):
        """
        A preview longer than 120 characters is cut, ending in ``...``.
        """
        message = TaskMessage(id=task_id(1), task="add", args=("x" * 500,))
        text = args_preview(message)
        self.assertEqual(len(text), 120)
        self.assertTrue(text.endswith("..."))


# The AMQP side, over fakes.


class FakeControlChannel:
    def __init__(self, client):
        self.client = client
        self.closed = False
        self.published = []
        self.declared = []
        self.bound = []
        self.consumed = []
        self.close_watchers = []

    def on_close(self, watcher):
        self.close_watchers.append(watcher)

    def close(self, reason):
        self.closed = True
        for watcher in self.close_watchers:
            watcher(reason)

    def exchange_declare(self, **arguments):
        self.declared.append(("exchange", arguments))
        return defer.succeed(None)

    def queue_declare(self, **arguments):
        self.declared.append(("queue", arguments))
        return defer.succeed(SimpleNamespace(queue=f"amq.gen-{len(self.declared)}"))

    def queue_bind(self, **arguments):
        self.bound.append(arguments)
        return defer.succeed(None)

    def basic_consume(self, **arguments):
        self.consumed.append(arguments)
        return defer.succeed(None)

    def basic_cancel(self, **arguments):
        return defer.succeed(None)

    def publish(self, exchange, routing_key, body, properties, mandatory=False):
        self.published.append((exchange, routing_key, body, dict(properties)))
        return defer.succeed(None)


class FakeProtocol:
    def __init__(self):
        self.consumers = {}
        self.closed = False
        self.channels = []

    def open_channel(self):
        channel = FakeControlChannel(self)
        self.channels.append(channel)
        return defer.succeed(channel)


class FakeConnection:
    def __init__(self, reactor):
        self.reactor = reactor
        self.hooks = []
        self.protocol = FakeProtocol()

    def add_connect_hook(self, hook):
        self.hooks.append(hook)

    def when_connected(self, fail_after=None):
        return defer.succeed(self.protocol)

    def connect(self):
        for hook in self.hooks:
            defer.ensureDeferred(hook(self.protocol))


def message(body, **properties):
    return SimpleNamespace(content=SimpleNamespace(body=body, properties=properties))


_ids = itertools.count(1)


def request(command, arguments=None, destination=None, sent=NOW, document=None, **properties):
    """
    A request's body and properties, as the client makes them: with a new
    id and ``expires`` one second after ``sent`` unless ``document``
    says otherwise (a key set to None is left out).
    """
    fields = {
        "command": command,
        "arguments": arguments or {},
        "destination": destination,
        "id": f"request-{next(_ids)}",
        "sent": sent,
        "expires": sent + 1,
        **(document or {}),
    }
    body = json.dumps({k: v for k, v in fields.items() if v is not None}).encode()
    properties.setdefault("reply-to", "amq.gen-reply")
    properties.setdefault("correlation-id", "c1")
    properties.setdefault("expiration", "1000")
    return body, properties


class ControlServiceTests(SynchronousTestCase):
    """
    :py:class:`ControlService` with :py:class:`DaemonControl`'s handlers
    over a fake pool and dispatcher.
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(NOW)
        self.identity = DaemonIdentity(name="h:1", host="h", pid=1, started=NOW - 5)
        self.connection = FakeConnection(self.clock)
        self.pool = FakePool(idle=0)
        self.pool.task_limits = {"add": (None, None)}
        self.pool.size = 2
        self.pool.max_size = 8
        self.pool.grow = lambda n: min(8, 2 + n)
        self.pool.shrink = lambda n: max(1, 2 - n)
        self.store = MemoryBackend(self.clock)
        self.dispatcher = Dispatcher(self.pool, self.store, self.clock)
        self.shutdowns = []
        control = DaemonControl(
            self.identity,
            self.dispatcher,
            self.pool,
            lambda: {"pool": {"children": 2}},
            lambda: self.shutdowns.append(True),
            self.clock,
        )
        self.signing = None
        self.service = self.make_service(control)

    def make_service(self, control, signing=None):
        service = ControlService(
            self.connection, "tq", self.identity, control.handlers(), self.clock, signing
        )
        service.startService()
        self.connection.connect()
        return service

    @property
    def channel(self):
        return self.connection.protocol.channels[-1]

    def ask(self, command, arguments=None, destination=None, **properties):
        return self.send(*request(command, arguments, destination, **properties))

    def send(self, body, properties):
        [consumer] = [c for c in self.connection.protocol.consumers.values() if c is self.service]
        before = len(self.channel.published)
        consumer.deliver(self.channel, message(body, **properties))
        answers = self.channel.published[before:]
        return [json.loads(body) for _, _, body, _ in answers]

    def warnings(self):
        """
        The text of the warnings logged from now on.
        """
        texts = []

        def observe(event):
            if event.get("log_level") == LogLevel.warn:
                texts.append(event["log_format"].format(**event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        return texts

    def test_listens(self):
        """
        On connecting it declares the fanout control exchange, its own
        exclusive auto-delete queue bound to it, and consumes it without
        acks.
        """
        self.assertEqual(
            self.channel.declared,
            [
                (
                    "exchange",
                    {
                        "exchange": "tq.control",
                        "type": "fanout",
                        "durable": True,
                        "auto_delete": False,
                    },
                ),
                ("queue", {"queue": "", "exclusive": True, "auto_delete": True}),
            ],
        )
        self.assertEqual(
            self.channel.bound,
            [{"queue": "amq.gen-2", "exchange": "tq.control", "routing_key": ""}],
        )
        self.assertEqual(self.channel.consumed[0]["no_ack"], True)
        self.assertEqual(self.service.queue, "amq.gen-2")

    def test_channel_closed(self):
        """
        When the broker closes its channel, the connection staying up, it
        listens again on a new channel after a pause.
        """
        first = self.channel
        first.close(SimpleNamespace(reply_code=404, reply_text="NOT_FOUND"))
        self.assertIs(self.channel, first)
        self.clock.advance(ControlService.RELISTEN_PAUSE)
        self.assertIsNot(self.channel, first)
        self.assertEqual(len(self.channel.consumed), 1)
        self.assertEqual(len(self.ask("ping")), 1)

    def test_cancelled(self):
        """
        When the broker cancels its consumer (its queue was deleted), it
        listens again at once on a new queue.
        """
        first = self.channel
        [tag] = list(self.connection.protocol.consumers)
        del self.connection.protocol.consumers[tag]  # as the delegate does
        self.service.cancelled(first, SimpleNamespace(consumer_tag=tag))
        self.assertIsNot(self.channel, first)
        self.assertEqual(len(self.ask("ping")), 1)

    def test_ping(self):
        """
        A ping is answered on the default exchange to its reply queue, with
        its correlation id, the daemon's name, host and pid, and uptime.
        """
        [answer] = self.ask("ping")
        self.assertEqual(
            answer,
            {
                "daemon": "h:1",
                "host": "h",
                "pid": 1,
                "ok": True,
                "reply": {"pong": True, "uptime": answer["reply"]["uptime"]},
            },
        )
        exchange, key, _, properties = self.channel.published[0]
        self.assertEqual((exchange, key), ("", "amq.gen-reply"))
        self.assertEqual(properties["correlation-id"], "c1")
        self.assertEqual(properties["content-type"], "application/json")

    def test_destination(self):
        """
        A request naming other daemons is not answered; one naming this
        daemon is.
        """
        self.assertEqual(self.ask("ping", destination=["other:2"]), [])
        self.assertEqual(len(self.ask("ping", destination=["other:2", "h:1"])), 1)

    def test_stale(self):
        """
        A request past its expires is ignored; the AMQP expiration does not
        count when the body has its own expires.
        """
        self.assertEqual(self.ask("ping", sent=NOW - 2, expiration="5000"), [])
        ok = self.ask("ping", sent=NOW - 2, document={"expires": NOW + 1}, expiration="1000")
        self.assertEqual(len(ok), 1)

    def test_replay(self):
        """
        A request received a second time (the same id) is ignored, until
        and after it expires; another id is answered.
        """
        body, properties = request("ping")
        self.assertEqual(len(self.send(body, properties)), 1)
        self.assertEqual(self.send(body, properties), [])
        self.clock.advance(0.9)
        self.assertEqual(self.send(body, properties), [])
        self.clock.advance(0.2)
        self.assertEqual(self.send(body, properties), [])
        self.assertEqual(len(self.ask("ping", sent=NOW + 1)), 1)

    def test_sent_ahead(self):
        """
        A request sent more than 30 seconds ahead of the daemon's clock is
        ignored (a year ahead was accepted before).
        """
        year = 365 * 86400
        self.assertEqual(self.ask("ping", sent=NOW + year), [])
        self.assertEqual(self.ask("ping", sent=NOW + 31), [])
        self.assertEqual(len(self.ask("ping", sent=NOW + 29)), 1)

    def test_not_finite(self):
        """
        A request whose times are not finite numbers (JSON's NaN and
        Infinity) is ignored.
        """
        for bad in (float("nan"), float("inf")):
            self.assertEqual(self.ask("ping", sent=bad), [])
            self.assertEqual(self.ask("ping", document={"expires": bad}), [])
        self.assertEqual(len(self.ask("ping")), 1)

    def test_reply_queue_server_named(self):
        """
        A request whose reply queue is not a server-named one (a queue of
        tasks, say) is ignored: answers never go into a queue it names.
        """
        for queue in ("twistedq", "twistedq.dead", ""):
            self.assertEqual(self.ask("ping", **{"reply-to": queue}), [])
        self.assertEqual(len(self.ask("ping", **{"reply-to": "amq.gen-abc"})), 1)

    def test_lifetime(self):
        """
        A request that expires more than 5 minutes after it was sent is
        ignored.
        """
        self.assertEqual(self.ask("ping", document={"expires": NOW + 301}), [])
        self.assertEqual(len(self.ask("ping", document={"expires": NOW + 299})), 1)

    def test_old_client(self):
        """
        A request without id and expires (an older client's) is answered
        while its AMQP expiration lasts, once: the same body again is a
        replay.  One without sent is ignored.
        """
        body, properties = request("ping", document={"id": None, "expires": None})
        self.assertEqual(len(self.send(body, properties)), 1)
        self.assertEqual(self.send(body, properties), [])
        stale = request("ping", sent=NOW - 2, document={"id": None, "expires": None})
        self.assertEqual(self.send(*stale), [])
        undated = request("ping", document={"sent": None, "expires": NOW + 1})
        self.assertEqual(self.send(*undated), [])

    def test_too_large(self):
        """
        A request body over 64 KiB is ignored before it is parsed, and
        logged (rate-limited); one of exactly 64 KiB is answered.
        """
        warnings = self.warnings()

        def padded(size):
            body, properties = request("ping", {"pad": ""})
            body = body.replace(b'"pad": ""', b'"pad": "' + b"x" * (size - len(body)) + b'"')
            self.assertEqual(len(body), size)
            return body, properties

        loads = json.loads
        self.patch(json, "loads", lambda *a, **k: self.fail("parsed"))
        self.assertEqual(self.send(*padded(64 * 1024 + 1)), [])
        self.assertEqual(self.send(*padded(50 * 1024 * 1024)), [])
        self.assertEqual(len(warnings), 1)
        self.assertIn("65537 bytes", warnings[0])
        self.patch(json, "loads", loads)
        self.assertEqual(len(self.send(*padded(64 * 1024))), 1)

    def test_ignored_logged_rate_limited(self):
        """
        An ignored request is logged at most once every 10 seconds per
        reason, with how many were left out.
        """
        warnings = self.warnings()
        for _ in range(3):
            self.ask("ping", sent=NOW - 5)
        self.ask("ping", sent=NOW + 60)
        self.assertEqual(len(warnings), 2)
        self.assertIn("expired", warnings[0])
        self.assertIn("ahead", warnings[1])
        self.clock.advance(10)
        self.ask("ping", sent=NOW - 5)
        self.assertEqual(len(warnings), 3)
        self.assertIn("2 more like it", warnings[2])

    def test_inspect(self):
        """
        inspect.* answer from the dispatcher, the pool and the stats.
        """
        self.dispatcher.deliver(delivery(1))
        self.dispatcher.deliver(delivery(2, eta=iso(NOW + 30)))
        self.assertEqual(self.ask("inspect.active")[0]["reply"], [])
        self.assertEqual(
            self.ask("inspect.reserved")[0]["reply"],
            [{"id": task_id(1), "name": "add", "state": "queued"}],
        )
        self.assertEqual(self.ask("inspect.scheduled")[0]["reply"][0]["id"], task_id(2))
        self.assertEqual(self.ask("inspect.registered")[0]["reply"], ["add"])
        self.assertEqual(self.ask("inspect.stats")[0]["reply"], {"pool": {"children": 2}})
        self.pool.idle = 1
        self.dispatcher.pump()
        [active] = self.ask("inspect.active")[0]["reply"]
        self.assertEqual((active["id"], active["child"]), (task_id(1), "Process-1"))

    def test_revoke(self):
        self.dispatcher.deliver(delivery(1))
        [answer] = self.ask("revoke", {"ids": [task_id(1)], "terminate": True})
        self.assertEqual(
            answer["reply"], {"revoked": [task_id(1)], "terminated": [], "running": []}
        )
        [answer] = self.ask("revoke", {"ids": "nope"})
        self.assertEqual((answer["ok"], answer["error"]), (False, "ids must be a list of task ids"))

    def test_pool(self):
        self.assertEqual(self.ask("pool.grow", {"n": 2})[0]["reply"], {"concurrency": 4})
        self.assertEqual(self.ask("pool.shrink", {"n": 5})[0]["reply"], {"concurrency": 1})
        [answer] = self.ask("pool.grow", {"n": 0})
        self.assertFalse(answer["ok"])

    def test_pool_limited(self):
        """
        Growing past the pool's maximum grows to it and says so.
        """
        [answer] = self.ask("pool.grow", {"n": 1000})
        self.assertEqual(answer["reply"], {"concurrency": 8, "limited_to": 8})

    def test_pool_bad_counts(self):
        """
        n must be a whole number from 1 to 1000, for grow and shrink: else
        an error answer, and the pool is not touched.
        """
        self.pool.grow = self.pool.shrink = lambda n: self.fail(f"resized by {n!r}")
        for command in ("pool.grow", "pool.shrink"):
            for n in (10**9, 1001, 0, -1, 2.5, "3", True, None):
                [answer] = self.ask(command, {"n": n})
                self.assertFalse(answer["ok"], (command, n))
                self.assertIn("1 to 1000", answer["error"])

    def test_shutdown(self):
        """
        shutdown answers first, then stops the daemon on the next turn.
        """
        [answer] = self.ask("shutdown")
        self.assertEqual(answer["reply"], {"shutting_down": True})
        self.assertEqual(self.shutdowns, [])
        self.clock.advance(0)
        self.assertEqual(self.shutdowns, [True])

    def test_unknown(self):
        [answer] = self.ask("reboot")
        self.assertEqual((answer["ok"], answer["error"]), (False, "unknown command 'reboot'"))

    def test_not_json(self):
        consumer = self.service
        consumer.deliver(self.channel, message(b"{oops", **{"reply-to": "q"}))
        self.assertEqual(self.channel.published, [])

    def test_signing(self):
        """
        With signing on, a request signed with a known key is answered; an
        unsigned one, or one signed with another key, is ignored.
        """
        keys = SigningKeys.parse("k1:secret-one")
        control = DaemonControl(
            self.identity, self.dispatcher, self.pool, dict, lambda: None, self.clock
        )
        self.service.stopService()
        self.service = self.make_service(control, keys)
        warnings = self.warnings()
        body, properties = request("ping")
        self.assertEqual(self.send(body, properties), [])
        other = SigningKeys.parse("k1:other").sign(body)
        self.assertEqual(self.send(body, {**properties, "headers": other}), [])
        self.assertEqual(len(self.send(body, {**properties, "headers": keys.sign(body)})), 1)
        self.assertEqual(len(warnings), 2)  # unsigned, badly signed: two reasons
        self.assertEqual(len(self.flushLoggedErrors()), 0)


class RequestGuardTests(SynchronousTestCase):
    def test_bounded(self):
        """
        It remembers at most ``max_seen`` ids: past that, new requests are
        refused until some of those remembered expire.
        """
        guard = RequestGuard(max_seen=2)

        def ask(expires, now=NOW):
            body, properties = request("ping", document={"expires": expires})
            return guard.refuse(Request.decode(body, properties), now)

        self.assertIsNone(ask(NOW + 1))
        self.assertIsNone(ask(NOW + 10))
        self.assertEqual(ask(NOW + 10), "too many requests are still valid")
        self.assertIsNone(ask(NOW + 10, now=NOW + 2))
        self.assertEqual(len(guard._seen), 2)


class ControlClientTests(SynchronousTestCase):
    """
    :py:class:`ControlClient` over a fake connection.
    """

    def setUp(self):
        self.clock = Clock()
        self.connection = FakeConnection(self.clock)
        self.client = ControlClient(
            self.connection, "tq", self.clock, SigningKeys.parse("k1:secret")
        )

    def sent(self):
        channel = self.connection.protocol.channels[-1]
        [(exchange, key, body, properties)] = channel.published
        return channel, exchange, key, json.loads(body), properties, body

    def answer(self, channel, correlation_id, document):
        self.client.deliver(
            channel,
            message(json.dumps(document).encode(), **{"correlation-id": correlation_id}),
        )

    def test_broadcast(self):
        """
        A request goes to the control exchange with its reply queue,
        correlation id, expiration and signature; the answers that carry
        its correlation id are gathered until the timeout.
        """
        d = self.client.broadcast("ping", destination=["a"], timeout=2.0)
        channel, exchange, key, document, properties, body = self.sent()
        self.assertEqual((exchange, key), (control_exchange("tq"), ""))
        self.assertEqual(
            (document["command"], document["arguments"], document["destination"]),
            ("ping", {}, ["a"]),
        )
        self.assertEqual(properties["reply-to"], "amq.gen-2")
        self.assertEqual(properties["expiration"], "2000")
        self.assertEqual(document["expires"], document["sent"] + 2.0)
        self.assertEqual(len(document["id"]), 32)
        SigningKeys.parse("k1:secret").verify(body, properties["headers"])
        cid = properties["correlation-id"]
        self.answer(channel, cid, {"daemon": "a", "ok": True, "reply": {"pong": True}})
        self.answer(channel, "other", {"daemon": "b", "ok": True})
        self.assertNoResult(d)
        self.clock.advance(2.0)
        self.assertEqual([a["daemon"] for a in self.successResultOf(d)], ["a"])
        self.answer(channel, cid, {"daemon": "late"})

    def test_limit(self):
        """
        With a limit, the Deferred fires as soon as that many answered.
        """
        d = self.client.broadcast("ping", timeout=5.0, limit=1)
        channel, *_, properties, _ = self.sent()
        self.answer(channel, properties["correlation-id"], {"daemon": "a"})
        self.assertEqual(self.successResultOf(d), [{"daemon": "a"}])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reuses_channel(self):
        """
        The reply queue is made once per connection.
        """
        self.client.broadcast("ping", timeout=1.0)
        self.clock.advance(1)
        self.client.broadcast("ping", timeout=1.0)
        self.assertEqual(len(self.connection.protocol.channels), 1)

    def test_distinct_ids(self):
        """
        Every request has its own id; a long timeout is capped to 5 minutes
        in its expires.
        """
        self.client.broadcast("ping", timeout=1.0)
        self.client.broadcast("ping", timeout=900.0)
        channel = self.connection.protocol.channels[-1]
        first, second = (json.loads(body) for _, _, body, _ in channel.published)
        self.assertNotEqual(first["id"], second["id"])
        self.assertEqual(second["expires"], second["sent"] + 300.0)
