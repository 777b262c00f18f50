"""
Tests for :py:class:`twistedq.amqp.events.EventPublisher` with a fake
channel and clock: nothing is observed or sent while nobody listens;
what a listener's patterns match is batched per routing key into one
message, flushed on a timer or when full; documents carry the contract's
fields; an outage drops and counts.  And of
:py:class:`twistedq.amqp.events.EventReceiver` on a fake connection: its
bounded queue, its hellos, its binding again after a reconnect.
"""

import json

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.fakes import NOW, TASKSET, iso, task_id
from twistedq.amqp.events import (
    EARLY_KEPT,
    EARLY_WINDOW,
    HELLO_EVERY,
    LARGEST_EVENT_MESSAGE,
    LISTENER_BYE,
    LISTENER_HELLO,
    MAX_LISTENED_PATTERNS,
    MAX_LISTENERS,
    RECOMPUTE_EVERY,
    REOPEN_PAUSE,
    EventPublisher,
    EventReceiver,
    events_exchange,
    topic_matches,
)
from twistedq.daemon.events import EventKind, Events, daemon_load
from twistedq.daemon.identity import DaemonIdentity
from twistedq.daemon.job import Job
from twistedq.daemon.job import arguments_preview as args_preview
from twistedq.message import TaskMessage
from twistedq.outcome import failure_document, retry_document

IDENTITY = DaemonIdentity(name="w1", host="box", pid=42, started=NOW)


class FakeClient:
    closed = False
    blocked = None


class FakeEventChannel:
    """
    A channel that keeps what is published on it.
    """

    def __init__(self):
        self.client = FakeClient()
        self.closed = False
        self.sent = []

    def publish(self, exchange, routing_key, body, properties, mandatory=False):
        self.sent.append((exchange, routing_key, json.loads(body), properties))
        return defer.succeed(None)

    def keys(self):
        return [key for _, key, _, _ in self.sent]

    def documents(self, key):
        return [doc for _, k, docs, _ in self.sent if k == key for doc in docs]


class FakeDelivery:
    body = b""
    redelivered = False
    headers = None


def job(number=1, **fields):
    message = TaskMessage(id=task_id(number), task="add", **fields)
    return Job(FakeDelivery(), message)


class PublisherTestCase(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(NOW)
        self.events = Events()
        self.load = {"concurrency": 2, "children": 2, "busy": 1}
        self.publisher = EventPublisher(
            None,
            "twistedq",
            self.events,
            IDENTITY,
            self.clock,
            "jobs",
            load=lambda: dict(self.load),
        )
        self.channel = FakeEventChannel()
        self.publisher.startService()
        self.publisher.attach(self.channel)
        self.addCleanup(self.stop)
        if self.past_early_window:
            self.clock.advance(EARLY_WINDOW)

    #: Whether the test starts after the early window, in the steady state.
    past_early_window = True

    def stop(self):
        if self.publisher.running:
            self.publisher.stopService()

    def hello(self, *patterns, name="amq.gen-1", ttl=15.0):
        body = {"type": LISTENER_HELLO, "listener": name, "patterns": list(patterns), "ttl": ttl}
        self.publisher.listener_message(LISTENER_HELLO, json.dumps(body).encode())

    def bye(self, name="amq.gen-1"):
        body = {"type": LISTENER_BYE, "listener": name}
        self.publisher.listener_message(LISTENER_BYE, json.dumps(body).encode())

    def task_keys(self):
        return [key for key in self.channel.keys() if key.startswith("task.")]


class NoListenerTests(PublisherTestCase):
    def test_online_whoever_listens(self):
        """
        ``daemon.online`` goes out once attached, whoever listens, with the
        daemon's identity, queue and load.
        """
        self.assertEqual(self.channel.keys(), ["daemon.online"])
        exchange, _, [online], properties = self.channel.sent[0]
        self.assertEqual(exchange, "twistedq.events")
        self.assertEqual(properties, {"content-type": "application/json", "delivery-mode": 1})
        self.assertEqual(
            {k: online[k] for k in ("type", "daemon", "host", "pid", "queue", "time")},
            {
                "type": "daemon.online",
                "daemon": "w1",
                "host": "box",
                "pid": 42,
                "queue": "jobs",
                "time": NOW,
            },
        )
        self.assertEqual((online["concurrency"], online["busy"], online["interval"]), (2, 1, 2.0))

    def test_nothing_observed(self):
        """
        While nobody listens the publisher does not observe the daemon's
        events: reports are counted and nothing is kept or sent, and no
        heartbeat goes out.
        """
        self.assertEqual(self.events._observers, [])
        self.events.report(EventKind.RECEIVED, task_id(1), "add", message=job().message)
        self.clock.advance(10)
        self.assertEqual(self.channel.keys(), ["daemon.online"])
        self.assertEqual(self.publisher.stats(), {"published": 1, "dropped": 0, "listeners": 0})

    def test_daemon_listener_only(self):
        """
        A listener of ``daemon.*`` alone gets heartbeats (one at once) but
        the task events are still not observed.
        """
        self.hello("daemon.*")
        self.assertEqual(self.events._observers, [])
        self.clock.advance(0.1)
        self.assertEqual(self.channel.keys(), ["daemon.online", "daemon.heartbeat"])
        self.clock.advance(2)
        self.assertEqual(self.channel.keys()[-1], "daemon.heartbeat")


class ListenerTests(PublisherTestCase):
    def test_whole_path_batched_per_key(self):
        """
        With a listener of everything, each routing key's reports of one
        flush interval go out as one message, in the order first reported.
        """
        self.hello("#")
        self.clock.advance(0.1)  # the new listener's heartbeat
        before = len(self.channel.sent)
        for number in (1, 2):
            j = job(number, args=(number, 2), kwargs={"z": "x" * 300}, taskset=TASKSET)
            self.events.report(EventKind.RECEIVED, j.task_id, "add", message=j.message)
            self.events.report(EventKind.CLAIMED, j.task_id, "add", job=j)
        self.assertEqual(len(self.channel.sent), before)
        self.clock.advance(0.1)
        self.assertEqual(self.task_keys(), ["task.received", "task.claimed"])
        received = self.channel.documents("task.received")
        self.assertEqual([d["id"] for d in received], [task_id(1), task_id(2)])
        first = received[0]
        self.assertEqual(
            (first["type"], first["name"], first["queue"]), ("task.received", "add", "jobs")
        )
        self.assertEqual(first["taskset"], TASKSET)
        self.assertTrue(first["args"].startswith("(1, 2), {'z': 'xxx"), first["args"])
        self.assertLessEqual(len(first["args"]), 120)
        self.assertNotIn("args", self.channel.documents("task.claimed")[0])
        self.assertEqual(self.publisher.published, 2 + 4)

    def test_full_batch_sent_at_once(self):
        """
        A key's batch goes out as soon as it holds ``max_batch`` reports.
        """
        self.hello("task.claimed")
        j = job()
        for _ in range(1200):
            self.events.report(EventKind.CLAIMED, j.task_id, "add", job=j)
        self.assertEqual(self.task_keys(), ["task.claimed", "task.claimed"])
        self.clock.advance(0.1)
        sizes = [len(docs) for _, key, docs, _ in self.channel.sent if key == "task.claimed"]
        self.assertEqual(sizes, [500, 500, 200])

    def test_patterns_choose_keys(self):
        """
        Only the keys a listener's patterns match are observed and sent.
        """
        self.hello("task.failed", "task.*.nothing")
        self.events.report(EventKind.RECEIVED, task_id(1), "add", message=job().message)
        self.events.report(EventKind.FAILED, task_id(1), "add", error=ValueError("x"))
        self.clock.advance(0.1)
        self.assertEqual(self.task_keys(), ["task.failed"])

    def test_failed_and_succeeded_fields(self):
        """
        Succeeded and failed carry the runtime since the job started and
        its child; failed the exception's type name, from the exception or
        the stored failure.
        """
        self.hello("task.#")
        j = job()
        j.child, j.started_at = "Process-2", self.clock.seconds()
        self.clock.advance(1.5)
        self.events.report(EventKind.SUCCEEDED, j.task_id, "add", job=j)
        stored = failure_document(j.task_id, "add", KeyError("k"), traceback="")
        self.events.report(EventKind.FAILED, j.task_id, "add", job=j, outcome=stored)
        self.events.report(EventKind.FAILED, j.task_id, "add", job=j, error=ZeroDivisionError())
        self.events.report(EventKind.DEAD_LETTERED, j.task_id, "add", reason="unknown-task", job=j)
        self.clock.advance(0.1)
        [succeeded] = self.channel.documents("task.succeeded")
        self.assertEqual((succeeded["runtime"], succeeded["child"]), (1.5, "Process-2"))
        self.assertNotIn("exception", succeeded)
        failed = self.channel.documents("task.failed")
        self.assertEqual([d["exception"] for d in failed], ["KeyError", "ZeroDivisionError"])
        self.assertEqual(failed[0]["runtime"], 1.5)
        [dead] = self.channel.documents("task.dead-lettered")
        self.assertEqual(dead["reason"], "unknown-task")
        self.assertNotIn("runtime", dead)

    def test_retried(self):
        """
        A retry names the exception that made it retry and when the next
        attempt is due.
        """
        self.hello("task.retried")
        attempt = TaskMessage(id=task_id(1), task="add", eta=iso(NOW + 5), retries=1)
        stored = retry_document(task_id(1), "add", ConnectionError("down"), 1, eta=iso(NOW + 5))
        self.events.report(EventKind.RETRIED, task_id(1), "add", message=attempt, outcome=stored)
        self.clock.advance(0.1)
        [retried] = self.channel.documents("task.retried")
        self.assertEqual((retried["exception"], retried["eta"]), ("ConnectionError", iso(NOW + 5)))

    def test_eta_on_received(self):
        """
        A task with an ETA has it on its received event.
        """
        self.hello("task.received")
        j = job(eta=iso(NOW + 30))
        self.events.report(EventKind.RECEIVED, j.task_id, "add", message=j.message)
        self.clock.advance(0.1)
        self.assertEqual(self.channel.documents("task.received")[0]["eta"], iso(NOW + 30))

    def test_listener_expires(self):
        """
        A listener not heard of within its ttl is forgotten within a few
        seconds: the events are no longer observed.
        """
        self.hello("#", ttl=3.0)
        self.assertEqual(self.events._observers, [self.publisher.observe])
        self.clock.advance(2.9)
        self.publisher.expire()
        self.assertEqual(self.publisher.listening(), 1)
        self.clock.advance(HELLO_EVERY - 2.9)
        self.assertEqual(self.publisher.listening(), 0)
        self.assertEqual(self.events._observers, [])

    def test_hello_again_keeps_it(self):
        """
        A listener that says hello again in time stays.
        """
        self.hello("#", ttl=3.0)
        for _ in range(5):
            self.clock.advance(2)
            self.hello("#", ttl=3.0)
        self.assertEqual(self.publisher.listening(), 1)

    def test_bye(self):
        """
        A listener's goodbye stops the events it listened to within
        ``RECOMPUTE_EVERY`` seconds.
        """
        self.hello("#")
        self.hello("task.failed", name="amq.gen-2")
        self.bye()
        self.clock.advance(RECOMPUTE_EVERY)
        self.events.report(EventKind.RECEIVED, task_id(1), "add")
        self.clock.advance(0.1)
        self.assertEqual(self.task_keys(), [])
        self.bye("amq.gen-2")
        self.clock.advance(RECOMPUTE_EVERY)
        self.assertEqual(self.events._observers, [])


class BoundedHelloTests(PublisherTestCase):
    """
    Listener messages cost little whatever a sender makes of them: the
    keys listened to are computed at most once per ``RECOMPUTE_EVERY``
    seconds, a message out of bounds is ignored with a warning and no
    traceback.
    """

    def send(self, body, key=LISTENER_HELLO):
        self.publisher.listener_message(
            key, body if type(body) is bytes else json.dumps(body).encode()
        )

    def test_many_hellos_few_recomputations(self):
        """
        10,000 hellos of distinct listeners in one instant: the first
        ``MAX_LISTENERS`` count, the keys are computed twice (at once, then
        once the interval passed), a heartbeat goes out each time.
        """
        before = self.publisher.recomputed
        for number in range(10_000):
            self.hello(f"task.x{number}", "daemon.*", name=f"amq.gen-{number}")
        self.assertEqual(self.publisher.recomputed - before, 1)
        self.assertEqual(self.publisher.listening(), MAX_LISTENERS)
        self.assertEqual(self.publisher.ignored, 10_000 - MAX_LISTENERS)
        self.clock.advance(RECOMPUTE_EVERY)
        self.assertEqual(self.publisher.recomputed - before, 2)
        self.clock.advance(0.1)
        self.assertEqual(self.channel.keys().count("daemon.heartbeat"), 2)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_huge_hello_ignored_unread(self):
        """
        A hello of 200,000 patterns is ignored before it is parsed: no
        listener, no computation.
        """
        before = self.publisher.recomputed
        patterns = [f"task.p{number}" for number in range(200_000)]
        self.send({"type": LISTENER_HELLO, "listener": "amq.gen-1", "patterns": patterns})
        self.assertEqual((self.publisher.listening(), self.publisher.recomputed), (0, before))
        self.assertEqual(self.publisher.ignored, 1)

    def test_distinct_patterns_bounded(self):
        """
        Hellos that would bring more than ``MAX_LISTENED_PATTERNS`` distinct
        patterns are ignored; the patterns shared with others still count.
        """
        for number in range(MAX_LISTENED_PATTERNS // 16 + 1):
            patterns = [f"task.n{number}w{word}" for word in range(16)]
            self.hello(*patterns, name=f"amq.gen-{number}")
        self.assertEqual(self.publisher.listening(), MAX_LISTENED_PATTERNS // 16)
        self.hello("task.n0w0", name="amq.gen-shared")
        self.assertEqual(self.publisher.listening(), MAX_LISTENED_PATTERNS // 16 + 1)
        self.bye("amq.gen-0")
        self.hello("#", name="amq.gen-new")
        self.assertEqual(self.publisher.listening(), MAX_LISTENED_PATTERNS // 16 + 1)

    def test_malformed_hellos_warn_once(self):
        """
        Malformed hellos are ignored without a traceback, with one warning
        per ten seconds at most.
        """
        warnings = []

        def observer(event):
            if event.get("log_namespace") == "twistedq.amqp.events":
                warnings.append(event)

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        bad = [
            {"listener": "amq.gen-1", "patterns": ["#"], "ttl": "x"},
            {"listener": "amq.gen-1", "patterns": ["#"], "ttl": True},
            {"listener": "amq.gen-1", "patterns": "#"},
            {"listener": "amq.gen-1", "patterns": [["#"]]},
            {"listener": "amq.gen-1", "patterns": ["task.x*"]},
            {"listener": "amq.gen-1", "patterns": ["task." + "a" * 300]},
            {"listener": "amq.gen-1", "patterns": [f"task.{n}" for n in range(17)]},
            {"listener": 7, "patterns": ["#"]},
            [1, 2],
            b"[" * 4000 + b"]" * 4000,
            b"[" * 2000,
            b"not json",
        ]
        for body in bad:
            self.send(body)
        self.assertEqual((self.publisher.listening(), self.publisher.ignored), (0, len(bad)))
        self.assertEqual(len(warnings), 1)
        self.clock.advance(10)
        self.send(bad[0])
        self.assertEqual(len(warnings), 2)
        self.assertIn("ttl is not a number", warnings[-1]["why"])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_numeric_ttl_clamped(self):
        """
        An integer ttl is taken, clamped to at least a second.
        """
        self.hello("#", ttl=0)
        self.clock.advance(0.9)
        self.publisher.expire()
        self.assertEqual(self.publisher.listening(), 1)
        self.clock.advance(0.2)
        self.publisher.expire()
        self.assertEqual(self.publisher.listening(), 0)


class EarlyWindowTests(PublisherTestCase):
    """
    The task events of a daemon's first seconds online are kept, whoever
    listens, and those of the keys listened to by the end of the window are
    published then: a listener that answers the daemon's query sees the
    first tasks.
    """

    past_early_window = False

    def test_kept_for_the_listeners_that_answer(self):
        first = job(1)
        self.events.report(EventKind.RECEIVED, first.task_id, "add", message=first.message)
        self.events.report(EventKind.CLAIMED, first.task_id, "add", job=first)
        self.clock.advance(0.3)
        self.hello("task.received")  # the answer to the query
        second = job(2)
        self.events.report(EventKind.RECEIVED, second.task_id, "add", message=second.message)
        self.clock.advance(0.5)
        self.assertEqual(self.task_keys(), [])
        self.clock.advance(EARLY_WINDOW)
        self.clock.advance(0.1)  # the flush
        received = self.channel.documents("task.received")
        self.assertEqual([d["id"] for d in received], [task_id(1), task_id(2)])
        self.assertEqual(received[0]["time"], NOW)
        self.assertEqual(self.task_keys(), ["task.received"])
        self.events.report(EventKind.CLAIMED, second.task_id, "add", job=second)
        self.events.report(EventKind.RECEIVED, task_id(3), "add", message=job(3).message)
        self.clock.advance(0.1)
        self.assertEqual(self.task_keys(), ["task.received", "task.received"])

    def test_nobody_answers(self):
        """
        Without a listener by the end of the window nothing is sent and the
        events are no longer observed.
        """
        self.events.report(EventKind.RECEIVED, task_id(1), "add", message=job().message)
        self.clock.advance(EARLY_WINDOW + 1)
        self.assertEqual(self.channel.keys(), ["daemon.online"])
        self.assertEqual(self.events._observers, [])

    def test_bounded(self):
        self.hello("#")
        for number in range(EARLY_KEPT + 10):
            self.events.report(EventKind.CLAIMED, task_id(number), "add")
        self.clock.advance(EARLY_WINDOW)
        self.clock.advance(0.1)
        self.assertEqual(len(self.channel.documents("task.claimed")), EARLY_KEPT)

    def test_published_on_stop(self):
        """
        A daemon stopped within the window publishes what was kept and
        listened to before its ``daemon.offline``.
        """
        self.hello("task.received", "daemon.offline")
        self.events.report(EventKind.RECEIVED, task_id(1), "add", message=job().message)
        self.publisher.stopService()
        self.assertEqual(self.channel.keys()[-2:], ["task.received", "daemon.offline"])


class OutageTests(PublisherTestCase):
    def test_closed_channel_drops(self):
        """
        Reports made while the channel is closed are dropped and counted
        when their batch is due: nothing piles up.
        """
        self.hello("task.received")
        self.channel.closed = True
        for number in range(3):
            self.events.report(EventKind.RECEIVED, task_id(number), "add")
        self.clock.advance(0.1)
        self.assertEqual(self.publisher.dropped, 3)
        self.assertEqual(self.publisher._batches, {})
        self.channel.closed = False
        self.events.report(EventKind.RECEIVED, task_id(9), "add")
        self.clock.advance(0.1)
        self.assertEqual([d["id"] for d in self.channel.documents("task.received")], [task_id(9)])

    def test_blocked_broker_drops(self):
        """
        While the broker blocks publishing, events are dropped, not sent
        into a connection that does not move.
        """
        self.hello("#")
        self.clock.advance(0.1)
        self.channel.client.blocked = "low on memory"
        self.events.report(EventKind.RECEIVED, task_id(1), "add")
        self.clock.advance(0.1)
        self.assertEqual(self.task_keys(), [])
        self.assertEqual(self.publisher.dropped, 1)

    def test_offline_on_stop(self):
        """
        Stopping sends what is kept and ``daemon.offline``, at once.
        """
        self.hello("task.received")
        self.events.report(EventKind.RECEIVED, task_id(1), "add")
        self.publisher.stopService()
        self.assertEqual(self.channel.keys()[-2:], ["task.received", "daemon.offline"])
        self.assertEqual(self.events._observers, [])


class DocumentTests(SynchronousTestCase):
    def test_events_exchange(self):
        self.assertEqual(events_exchange("twistedq"), "twistedq.events")

    def test_topic_matches(self):
        """
        ``*`` matches one word, ``#`` zero or more.
        """
        cases = [
            ("#", "task.received", True),
            ("task.*", "task.received", True),
            ("task.*", "task", False),
            ("task.#", "task", True),
            ("*.heartbeat", "daemon.heartbeat", True),
            ("daemon.*", "task.failed", False),
            ("task.failed", "task.failed", True),
            ("#.failed", "task.failed", True),
            ("task.*.x", "task.failed", False),
        ]
        for pattern, key, expected in cases:
            self.assertEqual(topic_matches(pattern, key), expected, (pattern, key))

    def test_preview_bounded(self):
        """
        The preview of huge arguments is at most 120 characters.
        """
        preview = args_preview(["x" * 10_000_000, list(range(100_000))], {"k": {"a": 1}})
        self.assertLessEqual(len(preview), 120)
        self.assertTrue(preview.startswith("['xxxxx"), preview)
        self.assertEqual(args_preview((1, "a"), {"b": 2}), "(1, 'a'), {'b': 2}")


class FakeProtocol:
    """
    A broker connection's protocol whose channels record what is asked.
    """

    def __init__(self):
        self.closed = False
        self.blocked = None
        self.consumers = {}
        self.channels = []

    def open_channel(self):
        channel = FakeReceiverChannel(self)
        self.channels.append(channel)
        return defer.succeed(channel)


class FakeReceiverChannel(FakeEventChannel):
    def __init__(self, client):
        super().__init__()
        self.client = client
        self.calls = []
        self.watchers = []

    def _call(self, name, answer=None, **arguments):
        self.calls.append((name, arguments))
        return defer.succeed(answer)

    def exchange_declare(self, **arguments):
        return self._call("exchange_declare", **arguments)

    def queue_declare(self, **arguments):
        return self._call("queue_declare", QueueDeclared(), **arguments)

    def queue_bind(self, **arguments):
        return self._call("queue_bind", **arguments)

    def basic_consume(self, **arguments):
        return self._call("basic_consume", **arguments)

    def on_close(self, watcher):
        self.watchers.append(watcher)

    def close_by_broker(self, code):
        self.closed = True
        reason = type("Close", (), {"reply_code": code, "reply_text": "gone"})()
        for watcher in self.watchers:
            watcher(reason)

    def channel_close(self, **arguments):
        self.closed = True
        return self._call("channel_close", **arguments)


class QueueDeclared:
    queue = "amq.gen-Q"


class FakeConnection:
    def __init__(self):
        self.reactor = Clock()
        self.hooks = []
        self.protocol = FakeProtocol()

    def add_connect_hook(self, hook):
        self.hooks.append(hook)

    def when_connected(self):
        return defer.succeed(self.protocol)

    def reconnect(self):
        self.protocol = FakeProtocol()
        for hook in self.hooks:
            defer.ensureDeferred(hook(self.protocol))


class FakeMessage:
    def __init__(self, routing_key, body):
        self.routing_key = routing_key
        self.content = type("Content", (), {"body": body})()


class ReceiverTests(SynchronousTestCase):
    def setUp(self):
        self.connection = FakeConnection()
        self.received = []
        self.receiver = EventReceiver(
            self.connection, "twistedq", self.received.append, ("task.*", "daemon.#")
        )
        self.successResultOf(self.receiver.start())

    def deliver(self, key, body):
        protocol = self.connection.protocol
        (consumer,) = protocol.consumers.values()
        consumer.deliver(protocol.channels[-1], FakeMessage(key, json.dumps(body).encode()))

    def test_binds_bounded_queue(self):
        """
        The queue is server-named, exclusive, auto-deleted and bounded,
        bound to the patterns (and to the daemons' query) on the events
        exchange, consumed without acks; a hello names it.
        """
        (channel,) = self.connection.protocol.channels
        declared = dict(channel.calls)
        self.assertEqual(
            declared["exchange_declare"],
            {"exchange": "twistedq.events", "type": "topic", "durable": True, "auto_delete": False},
        )
        self.assertEqual(
            declared["queue_declare"],
            {
                "queue": "",
                "exclusive": True,
                "auto_delete": True,
                "arguments": {"x-max-length": 10000, "x-overflow": "drop-head"},
            },
        )
        binds = [args["routing_key"] for name, args in channel.calls if name == "queue_bind"]
        self.assertEqual(binds, ["task.*", "daemon.#", "listener.query"])
        self.assertTrue(declared["basic_consume"]["no_ack"])
        self.assertEqual(channel.keys(), ["listener.hello"])
        hello = channel.sent[0][2]
        self.assertEqual(
            (hello["listener"], hello["patterns"]), ("amq.gen-Q", ["task.*", "daemon.#"])
        )

    def test_events_and_listener_messages(self):
        """
        Event messages reach the callback as lists; a daemon's query is
        answered with a hello and is no event.
        """
        self.deliver("task.received", [{"type": "task.received", "id": "1"}])
        self.deliver("listener.query", {"type": "listener.query"})
        self.assertEqual(self.received, [[{"type": "task.received", "id": "1"}]])
        self.assertEqual(self.connection.protocol.channels[0].keys(), ["listener.hello"] * 2)

    def test_bad_messages_ignored(self):
        """
        A message over the size limit, one that is not JSON, one nested too
        deep to decode and one that is no document or list of documents
        are ignored and counted, with no traceback logged; documents that
        are not objects are left out of a list.
        """
        protocol = self.connection.protocol
        (consumer,) = protocol.consumers.values()
        for body in (
            b"[" + b" " * LARGEST_EVENT_MESSAGE + b"]",
            b"{oops",
            b"[" * 100_000 + b"]" * 100_000,
            b'"text"',
        ):
            consumer.deliver(protocol.channels[-1], FakeMessage("task.started", body))
        self.deliver("task.started", [1, {"id": "2"}, "x"])
        self.assertEqual(self.receiver.ignored, 4)
        self.assertEqual(self.received, [[{"id": "2"}]])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_hello_repeated(self):
        """
        A hello goes out every few seconds, so daemons keep publishing.
        """
        self.connection.reactor.advance(HELLO_EVERY)
        self.assertEqual(self.connection.protocol.channels[0].keys(), ["listener.hello"] * 2)

    def test_binds_again_after_reconnect(self):
        """
        On a new connection it binds a new queue and consumes it.
        """
        self.connection.reconnect()
        (channel,) = self.connection.protocol.channels
        self.assertEqual(
            [name for name, _ in channel.calls],
            ["exchange_declare", "queue_declare", *["queue_bind"] * 3, "basic_consume"],
        )
        self.deliver("daemon.heartbeat", [{"type": "daemon.heartbeat"}])
        self.assertEqual(self.received, [[{"type": "daemon.heartbeat"}]])

    def test_start_again(self):
        """
        A receiver stopped and started again binds a new queue.
        """
        self.successResultOf(self.receiver.stop())
        self.successResultOf(self.receiver.start())
        channels = self.connection.protocol.channels
        self.assertEqual(len(channels), 2)
        self.assertEqual(channels[1].keys(), ["listener.hello"])
        self.deliver("task.failed", [{"type": "task.failed"}])
        self.assertEqual(self.received, [[{"type": "task.failed"}]])

    def test_channel_closed_by_broker(self):
        """
        When the broker closes its channel alone (the exchange was
        deleted), it binds again on a new channel after a pause.
        """
        protocol = self.connection.protocol
        protocol.channels[0].close_by_broker(404)
        self.connection.reactor.advance(REOPEN_PAUSE)
        self.assertEqual(len(protocol.channels), 2)
        self.assertEqual(protocol.channels[1].keys(), ["listener.hello"])
        self.flushLoggedErrors()

    def test_stop(self):
        """
        Stopping says goodbye and closes the channel; hellos stop.
        """
        channel = self.connection.protocol.channels[0]
        self.successResultOf(self.receiver.stop())
        self.assertEqual(channel.keys(), ["listener.hello", "listener.bye"])
        self.assertTrue(channel.closed)
        self.connection.reactor.advance(HELLO_EVERY * 3)
        self.assertEqual(channel.keys(), ["listener.hello", "listener.bye"])


class PublisherChannelTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.publisher = EventPublisher(None, "twistedq", Events(), IDENTITY, self.clock, "jobs")
        self.publisher.startService()
        self.addCleanup(self.publisher.stopService)
        self.protocol = FakeProtocol()
        self.successResultOf(defer.ensureDeferred(self.publisher._connected(self.protocol)))

    def test_opens_its_channel(self):
        """
        On a connection it opens a channel, declares the events exchange,
        binds a queue of its own to the listeners' messages, asks who
        listens and says it is online.
        """
        (channel,) = self.protocol.channels
        binds = [args for name, args in channel.calls if name == "queue_bind"]
        self.assertEqual(
            binds,
            [{"queue": "amq.gen-Q", "exchange": "twistedq.events", "routing_key": "listener.#"}],
        )
        self.assertEqual(channel.keys(), ["daemon.online", "listener.query"])

    def test_reopens_a_channel_the_broker_closed(self):
        """
        A channel the broker closed alone is opened again after a pause;
        the daemon is not said online twice.
        """
        self.protocol.channels[0].close_by_broker(404)
        self.clock.advance(REOPEN_PAUSE)
        self.assertEqual(len(self.protocol.channels), 2)
        self.assertEqual(self.protocol.channels[1].keys(), ["listener.query"])
        self.flushLoggedErrors()


class DaemonLoadTests(SynchronousTestCase):
    def test_load_fields(self):
        """
        The load of a heartbeat comes from the pool's and dispatcher's
        figures; a task dead-lettered after it failed is processed once.
        """
        events = Events()
        for kind in (EventKind.SUCCEEDED, EventKind.FAILED, EventKind.DEAD_LETTERED):
            events.report(kind, task_id(1), "add")
        events.report(EventKind.REJECTED, None, reason="not-json")

        class Pool:
            size = 3

            def stats(self):
                return {"children": 2, "busy": 1, "rss_kib": {"Process-1": 100, "Process-2": 50}}

        class Dispatcher:
            pass

        dispatcher = Dispatcher()
        dispatcher.events = events
        dispatcher.held = 1  # counted by Dispatcher.held (test_dispatcher)
        load = daemon_load(Pool(), dispatcher)()
        self.assertGreater(load.pop("rss_kib"), 1000)
        self.assertEqual(
            load,
            {
                "concurrency": 3,
                "children": 2,
                "busy": 1,
                "held": 1,
                "processed": 3,
                "children_rss_kib": 150,
            },
        )
