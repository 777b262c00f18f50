"""
Tests of the client's publish path (issue #14, client targets): each
message is validated once on its way to the broker, and the checks made
faster keep their rules.
"""

import unicodedata
import uuid

from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from txamqp.client import Closed

from tests.unit.fakes import ResultsOnly
from twistedq.amqp.broker import BrokerUnavailable, PublishUncertain
from twistedq.amqp.protocol import BatchConfirms, PublishNacked, Unroutable
from twistedq.backends.base import OutcomeRecord
from twistedq.backends.memory import MemoryBackend
from twistedq.client import Client
from twistedq.conf import Settings
from twistedq.message import MAX_TASK_NAME, MessageError, TaskMessage, is_task_id, is_task_name
from twistedq.outcome import Outcome, success_document


def uuid_round_trip(text: str) -> bool:
    """
    The definition ``is_task_id`` had: the canonical text of a UUID.
    """
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def by_categories(name: object) -> bool:
    """
    The definition ``is_task_name`` had: no control, format or surrogate
    character.
    """
    return (
        isinstance(name, str)
        and 0 < len(name) <= MAX_TASK_NAME
        and not any(unicodedata.category(c) in ("Cc", "Cf", "Cs") for c in name)
    )


class TaskIdTests(SynchronousTestCase):
    def test_same_as_uuid_round_trip(self):
        """
        ``is_task_id`` accepts exactly the canonical lower-case text of a
        UUID: not upper case, braces, URNs, missing or moved hyphens,
        other digits or spaces.
        """
        canonical = str(uuid.uuid4())
        samples = [
            canonical,
            str(uuid.uuid1()),
            str(uuid.UUID(int=0)),
            canonical.upper(),
            "{" + canonical + "}",
            "urn:uuid:" + canonical,
            canonical.replace("-", ""),
            canonical[:8] + canonical[9:13] + "-" + canonical[8:9] + canonical[13:],
            canonical + "\n",
            " " + canonical[1:],
            canonical[:-1] + "g",
            canonical[:-1] + "\u0663",  # ARABIC-INDIC DIGIT THREE
            canonical[:35],
            canonical + "0",
            "",
        ]
        samples += [str(uuid.uuid4()) for _ in range(200)]
        for sample in samples:
            self.assertEqual(is_task_id(sample), uuid_round_trip(sample), repr(sample))


class TaskNameTests(SynchronousTestCase):
    def test_same_as_categories(self):
        """
        ``is_task_name`` refuses exactly the names with a control, format
        or lone surrogate character, whatever their script, and the
        names of a wrong length.
        """
        for code in range(0x3000):
            for name in (chr(code), f"tasks.{chr(code)}x"):
                self.assertEqual(is_task_name(name), by_categories(name), hex(code))
        for name in ("", "a" * MAX_TASK_NAME, "a" * (MAX_TASK_NAME + 1), "\u200b", None, 3):
            self.assertEqual(is_task_name(name), by_categories(name), repr(name))


class InlineThread:
    """
    A reactor thread that runs every call at once, on a memory reactor.
    """

    def __init__(self):
        self.reactor = MemoryReactorClock()

    def call(self, function, *args, timeout=None, **kwargs):
        d = defer.maybeDeferred(function, *args, **kwargs)
        results = []
        d.addBoth(results.append)
        (result,) = results
        if isinstance(result, Exception) or hasattr(result, "raiseException"):
            result.raiseException()
        return result


class ConfirmingChannel:
    """
    A publishing channel whose broker confirms every message at once.
    """

    closed = False

    def __init__(self):
        self.bodies = []

    def publish(self, exchange, routing_key, body, properties, mandatory=False):
        self.bodies.append(body)
        return defer.succeed(None)

    def publish_batch(self, exchange, routing_key, contents, mandatory=False):
        self.bodies.extend(body for body, _ in contents)
        batch = BatchConfirms(len(contents))
        for index in range(len(contents)):
            batch.settle(index, None)
        return batch


def confirming_client(case):
    """
    A blocking client on a memory store whose publisher's channel is a
    :py:class:`ConfirmingChannel`.
    """
    settings = Settings.from_environment(
        broker_url="amqp://127.0.0.1:1/", result_backend="memory://"
    )
    client = Client(settings, thread=InlineThread())
    channel = ConfirmingChannel()

    async def ready(queue):
        return channel

    client.async_client.publisher._ready_channel = ready
    case.addCleanup(client.async_client.connection.stopService)
    return client, channel


class ValidatedOnceTests(SynchronousTestCase):
    def count_validations(self):
        counted = []
        original = TaskMessage._checked_fields.__func__

        def counting(cls, document):
            counted.append(document["id"])
            return original(cls, document)

        self.patch(TaskMessage, "_checked_fields", classmethod(counting))
        return counted

    def test_publish_many_validates_each_message_once(self):
        """
        ``Client.publish_many`` and ``publish`` validate each message once
        on the way to the broker (not in each layer), and publish it.
        """
        client, channel = confirming_client(self)
        counted = self.count_validations()
        messages = [TaskMessage(id=str(uuid.uuid4()), task="noop", args=(i,)) for i in range(3)]
        client.publish_many(messages)
        client.publish(TaskMessage(id=str(uuid.uuid4()), task="noop"))
        self.assertEqual(len(counted), 4)
        self.assertEqual(len(set(counted)), 4)
        self.assertEqual(len(channel.bodies), 4)

    def test_async_publish_many_validates_each_message_once(self):
        """
        ``AsyncClient.publish_many`` validates each message once too.
        """
        client, channel = confirming_client(self)
        counted = self.count_validations()
        messages = [TaskMessage(id=str(uuid.uuid4()), task="noop") for _ in range(3)]
        self.successResultOf(client.async_client.publish_many(messages))
        self.assertEqual(sorted(counted), sorted(m.id for m in messages))
        self.assertEqual(channel.bodies, [m.encode() for m in messages])

    def test_one_bad_message_publishes_nothing(self):
        """
        A batch with one message that breaks a rule is refused whole, by
        either client, before anything is published; the error names it.
        """
        client, channel = confirming_client(self)
        good = TaskMessage(id=str(uuid.uuid4()), task="noop")
        bad = TaskMessage(id=str(uuid.uuid4()), task="noop", args="abc")
        error = self.assertRaises(MessageError, client.publish_many, [good, bad])
        self.assertIn("args must be a list or tuple, not str", str(error))
        self.assertEqual(error.task_id, bad.id)
        failure = self.failureResultOf(client.async_client.publish_many([good, bad]), MessageError)
        self.assertEqual(failure.value.task_id, bad.id)
        self.assertEqual(channel.bodies, [])


class HeldChannel:
    """
    A publishing channel whose broker settles each batch when the test
    says (:py:meth:`settle`).
    """

    closed = False

    def __init__(self):
        self.batches = []

    def publish_batch(self, exchange, routing_key, contents, mandatory=False):
        batch = BatchConfirms(len(contents))
        self.batches.append(batch)
        return batch

    def settle(self, *errors):
        batch = self.batches.pop(0)
        for index, error in enumerate(errors):
            if error != "hold":
                batch.settle(index, error)


def held_client(case, store=None):
    """
    A Twisted client on a memory store (or ``store``), on a clock, whose
    channel is a :py:class:`HeldChannel`.
    """
    client, _ = confirming_client(case)
    async_client = client.async_client
    if store is not None:
        async_client.backend = store
    channel = HeldChannel()

    async def ready(queue):
        return channel

    async_client.publisher._ready_channel = ready
    return async_client, channel


def stored(client, messages):
    found = client.backend.get_results([m.id for m in messages]).result
    return [Outcome.from_bytes(m.id, data) for m, data in zip(messages, found, strict=True)]


class PendingRecordTests(SynchronousTestCase):
    """
    The pending records of a publish: written with the publish on a store
    that can take them back, taken back for messages surely not published.
    """

    def messages(self, count):
        return [TaskMessage(id=str(uuid.uuid4()), task="noop") for _ in range(count)]

    def test_written_with_the_publish(self):
        """
        The pending records are in the store before the broker confirmed
        the messages; the call fires once it did.
        """
        client, channel = held_client(self)
        messages = self.messages(2)
        d = client.publish_many(messages)
        self.assertEqual([o.known for o in stored(client, messages)], [True, True])
        self.assertEqual({o.status for o in stored(client, messages)}, {"PENDING"})
        self.assertNoResult(d)
        channel.settle(None, None)
        self.successResultOf(d)

    def test_unsent_taken_back(self):
        """
        The records of messages refused (nacked), unroutable or not sent
        are taken back before the call fails; those of confirmed and of
        uncertain messages stay.
        """
        client, channel = held_client(self)
        messages = self.messages(4)
        d = client.publish_many(messages)
        channel.settle(
            None,
            PublishNacked("refused"),
            Unroutable(messages[2].id, 312, "NO_ROUTE", "q"),
            "hold",
        )
        client.reactor.advance(client.publisher.confirm_timeout)
        failure = self.failureResultOf(d, PublishUncertain)
        self.assertEqual(failure.value.task_id, messages[3].id)
        self.assertEqual(failure.value.confirmed_ids, [messages[0].id])
        known = [o.known for o in stored(client, messages)]
        self.assertEqual(known, [True, False, False, True])

    def test_take_back_keeps_an_outcome(self):
        """
        Taking back the record of a message not published keeps an outcome
        stored under its id (the task ran from an earlier publish).
        """
        client, channel = held_client(self)
        (message,) = self.messages(1)
        outcome = success_document(message.id, "noop", 1)
        client.backend.store_results([OutcomeRecord(message.id, outcome)])
        d = client.publish_many([message])
        channel.settle(Unroutable(message.id, 312, "NO_ROUTE", "q"))
        self.failureResultOf(d, Unroutable)
        self.assertEqual(client.backend.get_result(message.id).result, outcome)

    def test_channel_closed_nothing_recorded(self):
        """
        A publish that could not be sent at all (the channel closed) leaves
        no pending record.
        """
        client, channel = held_client(self)

        def closed(*args, **kwargs):
            raise Closed("channel closed")

        channel.publish_batch = closed
        messages = self.messages(2)
        failure = self.failureResultOf(client.publish_many(messages), BrokerUnavailable)
        self.assertEqual(failure.value.confirmed_ids, [])
        self.assertEqual([o.known for o in stored(client, messages)], [False, False])

    def test_store_without_take_back_records_after_confirm(self):
        """
        On a store that cannot take records back, only confirmed messages
        are recorded, once confirmed.
        """
        memory = MemoryBackend(MemoryReactorClock())
        client, channel = held_client(self, ResultsOnly(memory))
        messages = self.messages(2)
        d = client.publish_many(messages)
        self.assertEqual([o.known for o in stored(client, messages)], [False, False])
        channel.settle(None, Unroutable(messages[1].id, 312, "NO_ROUTE", "q"))
        self.failureResultOf(d, Unroutable)
        self.assertEqual([o.known for o in stored(client, messages)], [True, False])

    def test_raised_before_the_write_taken_back(self):
        """
        A publish that raises before the batch is written (here from the
        connection's wait) takes every record back and raises.
        """
        client, _ = held_client(self)
        waiting = defer.Deferred()

        async def ready(queue):
            await waiting
            raise RuntimeError("no channel")

        client.publisher._ready_channel = ready
        messages = self.messages(2)
        d = client.publish_many(messages)
        self.assertEqual([o.known for o in stored(client, messages)], [True, True])
        waiting.callback(None)
        self.failureResultOf(d, RuntimeError)
        self.assertEqual([o.known for o in stored(client, messages)], [False, False])
