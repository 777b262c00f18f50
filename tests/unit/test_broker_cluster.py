"""
Tests for what :py:mod:`twistedq.amqp.broker` offers a RabbitMQ cluster
(issue #19) and priorities (issue #17): queue types and their arguments,
the error that names a queue declared otherwise, several broker addresses
tried in turn, and a message's priority.
"""

from twisted.internet import defer
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.test_tap import TapTestCase
from twistedq.amqp.broker import (
    BrokerAddress,
    BrokerConnection,
    BrokerURLError,
    Publisher,
    PublishRefused,
    QueueMismatch,
    Topology,
    broker_addresses,
    check_priority,
)
from twistedq.amqp.protocol import PublishNacked
from twistedq.conf import Settings
from twistedq.daemon.feeder import Lanes, PriorityDeque, priority_of
from twistedq.message import TaskMessage, new_task_id
from twistedq.registry import TaskRegistry
from twistedq.task import Task, TaskSet, publish_task, task


class QueueArgumentTests(SynchronousTestCase):
    """
    The arguments each queue type declares.
    """

    def test_classic_as_before(self) -> None:
        """
        A classic topology without priorities declares the task queue
        with its dead-letter exchange alone, as twistedq always did, so
        queues made by earlier versions are taken as they are.
        """
        for queue_type in (None, "classic"):
            topology = Topology(exchange="ex", queue="jobs", queue_type=queue_type)
            self.assertEqual(topology.queue_arguments(), {"x-dead-letter-exchange": "ex.dead"})
            self.assertEqual(
                topology.delay_queue_arguments(4),
                {
                    "x-message-ttl": 4000,
                    "x-dead-letter-exchange": "ex",
                    "x-dead-letter-routing-key": "jobs",
                },
            )

    def test_quorum(self) -> None:
        """
        A quorum topology declares quorum queues that dead-letter at least
        once, with the delivery limit.
        """
        topology = Topology(exchange="ex", queue="jobs", queue_type="quorum", delivery_limit=3)
        self.assertEqual(
            topology.queue_arguments(),
            {
                "x-dead-letter-exchange": "ex.dead",
                "x-queue-type": "quorum",
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
                "x-delivery-limit": 3,
            },
        )
        self.assertEqual(topology.delay_queue_arguments(2)["x-queue-type"], "quorum")
        self.assertEqual(topology.delay_queue_arguments(2)["x-message-ttl"], 2000)

    def test_priorities(self) -> None:
        """
        A classic topology with a maximum priority declares its task queue
        with ``x-max-priority``.
        """
        topology = Topology(queue_type="classic", max_priority=9)
        self.assertEqual(topology.queue_arguments()["x-max-priority"], 9)

    def test_refused(self) -> None:
        """
        An unknown type, a delivery limit on a classic queue and priorities
        on a quorum queue (RabbitMQ 3.10 refuses them) are refused with the
        reason.
        """
        with self.assertRaisesRegex(ValueError, "classic, quorum"):
            Topology(queue_type="stream")
        with self.assertRaisesRegex(ValueError, "quorum queues only"):
            Topology(queue_type="classic", delivery_limit=3)
        with self.assertRaisesRegex(ValueError, "no priorities on RabbitMQ 3.10"):
            Topology(queue_type="quorum", max_priority=9)
        with self.assertRaisesRegex(ValueError, "1 to 255"):
            Topology(max_priority=0)


class MismatchTests(SynchronousTestCase):
    def test_text(self) -> None:
        """
        The error names the queue, the argument that differs and the
        daemon option behind it, and says what to do.
        """
        error = QueueMismatch(
            "jobs",
            {"x-queue-type": "quorum", "x-delivery-limit": 4},
            "PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue 'jobs' in "
            "vhost '/': received '4' but current is '3'",
        )
        text = str(error)
        self.assertIn("queue 'jobs' exists on the broker", text)
        self.assertIn("x-delivery-limit (--task-attempts)", text)
        self.assertIn("rabbitmqctl delete_queue jobs", text)
        self.assertIn("current is '3'", text)


class AddressListTests(SynchronousTestCase):
    def test_comma_separated(self) -> None:
        """
        Several URLs separated by commas (spaces allowed) are the nodes of
        a cluster, in order.
        """
        addresses = broker_addresses("amqp://a:5711/, amqp://u:p@b:5712/v ,")
        self.assertEqual([(a.host, a.port) for a in addresses], [("a", 5711), ("b", 5712)])
        self.assertEqual(addresses[1].vhost, "v")
        self.assertEqual(len(broker_addresses(["amqp://a/", "amqp://b/,amqp://c/"])), 3)

    def test_one_url_is_one_address(self) -> None:
        self.assertEqual(broker_addresses("amqp://a/"), [BrokerAddress(host="a")])

    def test_refused(self) -> None:
        """
        No URL, or a list given where one URL is expected, is an error
        (not a vhost named after the other URLs).
        """
        with self.assertRaises(BrokerURLError):
            broker_addresses(" , ")
        with self.assertRaisesRegex(BrokerURLError, "several broker URLs"):
            BrokerAddress.from_url("amqp://a/,amqp://b/")


class CountingEndpoint:
    """
    An endpoint that refuses every connection and counts the attempts.
    """

    def __init__(self) -> None:
        self.attempts = 0

    def connect(self, factory: object) -> defer.Deferred[object]:
        self.attempts += 1
        return defer.fail(ConnectionRefusedError("Connection refused"))


class RoundRobinTests(SynchronousTestCase):
    def test_next_node_after_a_failure(self) -> None:
        """
        Each failed attempt moves to the next address, round robin, and
        ``where`` names them all.
        """
        clock = Clock()
        endpoints = [CountingEndpoint() for _ in range(3)]
        addresses = [BrokerAddress(host=f"n{i}") for i in range(3)]
        connection = BrokerConnection(addresses, clock, endpoint=endpoints)
        connection.startService()
        self.addCleanup(connection.stopService)
        for _ in range(60):
            clock.advance(1)
        counts = [e.attempts for e in endpoints]
        self.assertGreater(min(counts), 2)
        self.assertLessEqual(max(counts) - min(counts), 1)
        self.assertIn("any of amqp://guest@n0:5672//, amqp://guest@n1", connection.where)

    def test_one_endpoint_per_address(self) -> None:
        with self.assertRaises(ValueError):
            BrokerConnection(
                [BrokerAddress(), BrokerAddress()], Clock(), endpoint=[CountingEndpoint()]
            )
        with self.assertRaises(ValueError):
            BrokerConnection([], Clock())


class PriorityTests(SynchronousTestCase):
    def test_property(self) -> None:
        """
        A priority travels as the AMQP ``priority`` property, not in the
        body; priority 0 or none sends no property.
        """
        publisher = Publisher(BrokerConnection(BrokerAddress(), Clock()), Topology())
        message = TaskMessage(id=new_task_id(), task="t")
        body, properties = publisher._encode(message, 7)
        self.assertEqual(properties["priority"], 7)
        self.assertEqual(body, message.encode())
        self.assertNotIn("priority", publisher._encode(message, 0)[1])
        self.assertNotIn("priority", publisher._encode(message)[1])

    def test_refused(self) -> None:
        for bad in (-1, 10, 2.5, "9", True):
            with self.assertRaises(ValueError):
                check_priority(bad)  # type: ignore[arg-type]
        check_priority(None)
        check_priority(9)


class DaemonOptionTests(TapTestCase):
    """
    ``twistd twistedq``'s options for a cluster and priorities.
    """

    def test_quorum(self) -> None:
        """
        ``--queue-type quorum`` declares quorum queues whose delivery
        limit is ``--task-attempts``; every queue consumed is of that type.
        """
        options = self.parse("--queue-type", "quorum", "--task-attempts", "4", "-q", "a,b")
        topology = options["topology"]
        self.assertEqual((topology.queue_type, topology.delivery_limit), ("quorum", 4))
        self.assertEqual(options["queues"], ["a", "b"])

    def test_default_takes_queues_as_they_are(self) -> None:
        topology = self.parse()["topology"]
        self.assertEqual((topology.queue_type, topology.delivery_limit), (None, None))

    def test_priorities(self) -> None:
        topology = self.parse("--queue-type", "classic", "--max-priority", "9")["topology"]
        self.assertEqual(topology.max_priority, 9)

    def test_refused(self) -> None:
        """
        Priorities on quorum queues and an unknown type are usage errors
        that say why.
        """
        with self.assertRaisesRegex(usage.UsageError, "no priorities on RabbitMQ 3.10"):
            self.parse("--queue-type", "quorum", "--max-priority", "9")
        with self.assertRaisesRegex(usage.UsageError, "classic, quorum"):
            self.parse("--queue-type", "mirrored")

    def test_broker_list(self) -> None:
        """
        ``--broker`` takes the URLs of a cluster's nodes, comma-separated.
        """
        options = self.parse("--broker", "amqp://n1:5711/,amqp://n2:5712/,amqp://n3:5713/")
        self.assertEqual([a.port for a in options["broker-addresses"]], [5711, 5712, 5713])
        self.assertEqual(options["broker-address"].host, "n1")


class RecordingClient:
    """
    A client that keeps what it is asked to publish.
    """

    def __init__(self) -> None:
        self.published: list[tuple[str, str | None, int | None]] = []
        self.settings = Settings()

    def publish(self, message: TaskMessage, queue: str | None = None, priority=None) -> None:
        self.published.append((message.task, queue, priority))


class TaskPriorityTests(SynchronousTestCase):
    def test_per_call_and_per_task(self) -> None:
        """
        ``apply_async(priority=N)`` and ``Task.priority`` reach the
        client's publish; a call's priority beats the task's; without
        either the client is called as before (no priority argument).
        """

        class Urgent(Task):
            name = "urgent"
            priority = 7

        class Plain(Task):
            name = "plain"

        client = RecordingClient()
        Urgent.apply_async(client=client)
        Urgent.apply_async(client=client, priority=2)
        Plain.apply_async(client=client)
        publish_task("by.name", priority=9, client=client)  # type: ignore[arg-type]
        self.assertEqual(
            [(name, priority) for name, _, priority in client.published],
            [("urgent", 7), ("urgent", 2), ("plain", None), ("by.name", 9)],
        )


class _Delivery:
    def __init__(self, priority: int | None) -> None:
        self.properties = {} if priority is None else {"priority": priority}


class _Job:
    def __init__(self, name: str, priority: int | None = None) -> None:
        self.name = name
        self.delivery = _Delivery(priority)


class DaemonBufferTests(SynchronousTestCase):
    """
    The due jobs a daemon holds go by priority too: a job with a priority
    goes ahead of the jobs of lower priority it holds, behind those of its
    own or higher, in order.
    """

    def test_deque(self) -> None:
        pending = PriorityDeque()
        for job in (_Job("a"), _Job("b"), _Job("c", 5)):
            priority = priority_of(job)  # type: ignore[arg-type]
            if priority:
                pending.append_by_priority(job, priority)  # type: ignore[arg-type]
            else:
                pending.append(job)  # type: ignore[arg-type]
        pending.append_by_priority(_Job("d", 9), 9)  # type: ignore[arg-type]
        pending.append_by_priority(_Job("e", 5), 5)  # type: ignore[arg-type]
        pending.append(_Job("f"))  # type: ignore[arg-type]
        self.assertEqual([j.name for j in pending], ["d", "c", "e", "a", "b", "f"])  # type: ignore[attr-defined]

    def test_lanes(self) -> None:
        lanes = Lanes(lambda job: job.name[0])
        lanes.append(_Job("x1"))  # type: ignore[arg-type]
        lanes.append(_Job("y1"))  # type: ignore[arg-type]
        lanes.append_by_priority(_Job("x2", 3), 3)  # type: ignore[arg-type]
        self.assertEqual(len(lanes), 3)
        self.assertEqual([lanes.popleft().name for _ in range(3)], ["x2", "y1", "x1"])  # type: ignore[attr-defined]

    def test_priority_of(self) -> None:
        self.assertEqual(priority_of(_Job("a", 7)), 7)  # type: ignore[arg-type]
        self.assertEqual(priority_of(_Job("a")), 0)  # type: ignore[arg-type]
        plain = _Job("a")
        plain.delivery = object()  # type: ignore[assignment]
        self.assertEqual(priority_of(plain), 0)  # type: ignore[arg-type]


class DecoratorPriorityTests(SynchronousTestCase):
    def test_decorator(self) -> None:
        """
        ``@task(priority=N)`` gives its calls that priority; a bad one is
        refused when the task is defined.
        """
        registry = TaskRegistry()

        @task(name="decorated", priority=8, registry=registry)
        def decorated() -> None:
            pass

        client = RecordingClient()
        decorated.apply_async(client=client)
        self.assertEqual(client.published, [("decorated", None, 8)])
        with self.assertRaises(ValueError):
            task(name="bad", priority=11, registry=registry)(lambda: None)


class _NackingChannel:
    """
    A channel whose every publish the broker refuses (``basic.nack``).
    """

    closed = False

    def publish(self, *args: object, **kwargs: object) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred()
        clock.callLater(0, d.errback, PublishNacked("the broker refused the message"))
        return d


clock = Clock()


class RefusedPublishTests(SynchronousTestCase):
    """
    A publish the broker refuses (as a quorum queue does while it elects
    a leader) raises PublishRefused, a PublishNacked naming the task, and
    a batch's failure carries the ids the broker confirmed, so a taskset
    revokes only what was not published.
    """

    def test_publisher(self) -> None:
        publisher = Publisher(BrokerConnection(BrokerAddress(), clock), Topology())
        d = defer.Deferred.fromCoroutine(
            publisher._confirmed(_NackingChannel(), "x", "q", "id-1", b"{}", {})  # type: ignore[arg-type]
        )
        clock.advance(0)
        failure = self.failureResultOf(d, PublishRefused)
        self.assertIsInstance(failure.value, PublishNacked)
        self.assertIn("id-1", str(failure.value))

    def test_batch_confirmed_ids(self) -> None:
        from twisted.internet.testing import MemoryReactorClock

        from twistedq.client import AsyncClient

        reactor = MemoryReactorClock()
        client = AsyncClient(Settings(result_backend="memory://"), reactor, record_timeout=0.1)
        refused = TaskMessage(id=new_task_id(), task="t")
        taken = TaskMessage(id=new_task_id(), task="t")

        async def publish_batch(
            encoded: list[tuple[TaskMessage, bytes]], queue: object = None, priority: object = None
        ) -> list[Exception | None]:
            return [PublishRefused(m.id) if m is refused else None for m, _ in encoded]

        client.publisher.publish_batch = publish_batch  # type: ignore[method-assign]
        d = client.publish_many([taken, refused])
        reactor.advance(1)
        failure = self.failureResultOf(d, PublishRefused)
        self.assertEqual(failure.value.confirmed_ids, [taken.id])


class RefusingClient(RecordingClient):
    """
    A client whose batch publish the broker partly refuses: the first
    message is confirmed, the others refused.
    """

    def __init__(self) -> None:
        super().__init__()
        self.abandoned: list[str] = []

    def create_taskset(self, taskset_id: str, total: int) -> None:
        pass

    def publish_many(self, messages: list[TaskMessage], queue: str | None = None) -> None:
        error = PublishRefused(messages[1].id)
        error.confirmed_ids = [messages[0].id]
        self.first = messages[0].id
        raise error

    def abandon(self, messages: list[TaskMessage], reason: str) -> list[str]:
        self.abandoned = [m.id for m in messages]
        return self.abandoned


class TaskSetRefusedTests(SynchronousTestCase):
    def test_refused_subtasks_revoked(self) -> None:
        """
        A taskset whose publish the broker partly refused records the
        subtasks it did not confirm as REVOKED (so the taskset completes)
        and raises PublishRefused; the confirmed one is left to run.
        """
        client = RefusingClient()
        taskset = TaskSet("t", [((1,), {}), ((2,), {}), ((3,), {})], client=client)  # type: ignore[arg-type]
        with self.assertRaises(PublishRefused) as caught:
            taskset.run()
        self.assertEqual(len(client.abandoned), 2)
        self.assertNotIn(client.first, client.abandoned)
        self.assertIn("2 others are recorded as REVOKED", str(caught.exception))
