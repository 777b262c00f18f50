"""
Tests for a daemon consuming several queues: the feeder's lanes, the
dispatcher's delay queues per queue, and ``--queue a,b``.
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.fakes import FakePool, delivery, task_id
from twistedq.backends.memory import MemoryBackend
from twistedq.daemon.dispatcher import Dispatcher, DispatchSettings
from twistedq.daemon.feeder import Lanes
from twistedq.message import TaskMessage
from twistedq.outcome import retry_document
from twistedq.tap import Options


class Named:
    def __init__(self, queue, number):
        self.queue = queue
        self.number = number

    def __repr__(self):
        return f"{self.queue}{self.number}"


class LanesTests(SynchronousTestCase):
    def setUp(self):
        self.lanes = Lanes(lambda job: job.queue)

    def drain(self):
        taken = []
        while self.lanes:
            taken.append(repr(self.lanes.popleft()))
        return taken

    def test_turns(self):
        """
        The lanes are taken from in turn, each in order: a backlog of one
        queue does not hold back the jobs of another.
        """
        for number in range(1, 5):
            self.lanes.append(Named("a", number))
        self.lanes.append(Named("b", 1))
        self.lanes.append(Named("b", 2))
        self.assertEqual(len(self.lanes), 6)
        self.assertEqual(repr(self.lanes[0]), "a1")
        self.assertEqual(self.drain(), ["a1", "b1", "a2", "b2", "a3", "a4"])
        self.assertEqual(len(self.lanes), 0)

    def test_appendleft_goes_first(self):
        """
        A job put back at the head (to run again) is taken next; then
        the turns go on.
        """
        self.lanes.append(Named("a", 1))
        self.lanes.append(Named("b", 1))
        self.lanes.appendleft(Named("b", 0))
        self.assertEqual(self.drain(), ["b0", "a1", "b1"])

    def test_remove_iterate_clear(self):
        """
        A job can be withdrawn; iterating sees every job; clear empties.
        """
        jobs = [Named("a", 1), Named("b", 1), Named("a", 2)]
        for job in jobs:
            self.lanes.append(job)
        self.lanes.remove(jobs[1])
        self.assertEqual(sorted(map(repr, self.lanes)), ["a1", "a2"])
        self.lanes.clear()
        self.assertFalse(self.lanes)
        with self.assertRaises(IndexError):
            self.lanes[0]


def queued(number, queue, task="add"):
    d = delivery(number, task)
    d.queue = queue
    return d


class TwoQueuesTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.pool = FakePool(idle=0)
        self.store = MemoryBackend(self.clock)
        self.sent = {"a": [], "b": []}
        self.dispatcher = Dispatcher(
            self.pool,
            self.store,
            self.clock,
            DispatchSettings(max_batch=1),
            publish_later=self.publisher("a"),
            publish_later_to={"a": self.publisher("a"), "b": self.publisher("b")},
        )

    def publisher(self, queue):
        def publish_later(message, delay):
            self.sent[queue].append(message.id)
            return defer.succeed(None)

        return publish_later

    def test_queues_take_turns(self):
        """
        Ten tasks of queue a wait before one of queue b: the next idle
        child takes b's task second, not eleventh.
        """
        for number in range(1, 11):
            self.dispatcher.deliver(queued(number, "a"))
        self.dispatcher.deliver(queued(11, "b"))
        self.pool.idle = 2
        self.dispatcher.pump()
        started = [TaskMessage.decode(bodies[0]).args[0] for bodies, _ in self.pool.batches]
        self.assertEqual(started, [1, 11])

    def test_retry_to_own_queue(self):
        """
        A task of queue b that retries is published into b's delay queues.
        """
        self.pool.idle = 1
        d = queued(1, "b")
        self.dispatcher.deliver(d)
        message = TaskMessage.decode(d.body)
        retry = retry_document(message.id, message.task, RuntimeError("again"), 0, countdown=120)
        self.pool.finish(0, [retry])
        self.assertEqual((self.sent["a"], self.sent["b"]), ([], [message.id]))
        self.assertEqual(d.settled, ["ack"])


class PriorityKeptTests(SynchronousTestCase):
    """
    A task published again to come back later (a retry here) keeps the
    AMQP priority its message was delivered with, with one queue or
    several.
    """

    def retried_with(self, publish_later_to):
        clock = Clock()
        pool = FakePool(idle=1)
        sent = []

        def publish_later(message, delay, **options):
            sent.append((message.id, options))
            return defer.succeed(None)

        dispatcher = Dispatcher(
            pool,
            MemoryBackend(clock),
            clock,
            DispatchSettings(max_batch=1),
            publish_later=publish_later,
            publish_later_to={queue: publish_later for queue in publish_later_to},
        )
        high, plain = queued(1, "b"), queued(2, "b")
        high.properties = {"priority": 7}
        for d in (high, plain):
            dispatcher.deliver(d)
            message = TaskMessage.decode(d.body)
            retry = retry_document(message.id, message.task, RuntimeError("again"), 0, countdown=9)
            pool.finish(len(pool.batches) - 1, [retry])
        return sent

    def test_one_queue(self):
        self.assertEqual(
            self.retried_with(["b"]), [(task_id(1), {"priority": 7}), (task_id(2), {})]
        )

    def test_several_queues(self):
        self.assertEqual(
            self.retried_with(["a", "b"]), [(task_id(1), {"priority": 7}), (task_id(2), {})]
        )


class QueueOptionTests(SynchronousTestCase):
    def parse(self, *args):
        options = Options()
        options.parseOptions(["--result-backend", "memory://", *args])
        return options

    def test_several(self):
        """
        ``-q a,b`` and ``--queues a,b`` name two queues, each once, in
        order; the first is the queue the daemon's own publishes use.
        """
        for args in (["-q", "a, b"], ["--queues", "a,b"]):
            options = self.parse(*args)
            self.assertEqual(options["queues"], ["a", "b"])
            self.assertEqual(options["settings"].queue, "a")

    def test_default(self):
        """
        Without ``-q`` the daemon consumes the configured queue alone.
        """
        self.assertEqual(self.parse()["queues"], ["twistedq"])

    def test_no_name(self):
        with self.assertRaises(usage.UsageError):
            self.parse("-q", ", ,")

    def test_refused(self):
        """
        A queue named twice, an empty part, and a name the daemon gives to
        a queue of its own (``<queue>.dead``, ``<queue>.delay.<n>``) are
        usage errors that name the culprit.
        """
        for text, culprit in (
            ("zq,zq", "'zq' twice"),
            ("zq,", "empty"),
            (",zq", "empty"),
            ("zq, ,b", "empty"),
            ("zq,zq.dead", "'zq.dead'"),
            ("zq.delay.4", "'zq.delay.4'"),
        ):
            with self.assertRaises(usage.UsageError, msg=text) as caught:
                self.parse("-q", text)
            self.assertIn(culprit, str(caught.exception))
        self.assertEqual(self.parse("-q", "zq.deadline,zq.delayed")["queues"],
                         ["zq.deadline", "zq.delayed"])  # fmt: skip

    def test_rate_limit_twice(self):
        """
        A task named twice in ``--rate-limit``, in one option or two, is a
        usage error (the last one won silently); so is an empty entry.
        """
        for args in (
            ["--rate-limit", "x=10/s,x=1/s"],
            ["--rate-limit", "x=10/s", "--rate-limit", "x=1/s"],
            ["--rate-limit", "x=10/s,"],
        ):
            with self.assertRaises(usage.UsageError, msg=args):
                self.parse(*args)

    def test_rate_limits(self):
        """
        ``--rate-limit`` is repeatable; a bad rate is a usage error.
        """
        options = self.parse("--rate-limit", "add=10/s", "--rate-limit", "mul=60/m")
        self.assertEqual(options["rate-limits"], {"add": 10.0, "mul": 1.0})
        with self.assertRaises(usage.UsageError):
            self.parse("--rate-limit", "add=often")


class FakeConnection:
    def __init__(self):
        self.hooks = []
        self.reactor = Clock()

    def add_connect_hook(self, hook):
        self.hooks.append(hook)


class ConsumerTests(SynchronousTestCase):
    def test_one_consumer_per_queue(self):
        """
        A consumer of two queues holds one queue consumer each, with the
        same prefetch, each consuming on connections of its own hook; it
        consumes when both do, and stopping stops both.
        """
        from twistedq.amqp.broker import Topology
        from twistedq.amqp.consumer import Consumer

        connection = FakeConnection()
        topologies = [Topology(queue="a"), Topology(queue="b")]
        consumer = Consumer(connection, topologies, 16, lambda delivery: None)
        self.assertEqual([q.topology.queue for q in consumer.queues], ["a", "b"])
        self.assertEqual([q.prefetch for q in consumer.queues], [16, 16])
        self.assertEqual(len(connection.hooks), 2)
        self.assertIs(consumer.topology, topologies[0])
        consumer.queues[0].consuming = True
        self.assertFalse(consumer.consuming)
        consumer.queues[1].consuming = True
        self.assertTrue(consumer.consuming)
        self.successResultOf(defer.Deferred.fromCoroutine(consumer.stop()))
        self.assertFalse(consumer.consuming)
        self.assertTrue(all(q._stopped for q in consumer.queues))

    def test_one_topology(self):
        """
        Given one topology, as before, it consumes that queue alone.
        """
        from twistedq.amqp.broker import Topology
        from twistedq.amqp.consumer import Consumer

        consumer = Consumer(FakeConnection(), Topology(queue="a"), 8, lambda delivery: None)
        self.assertEqual([q.topology.queue for q in consumer.queues], ["a"])
