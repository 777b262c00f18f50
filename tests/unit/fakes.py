"""
The one set of fakes of the unit tests, and the helpers they share.  The
store of the unit tests is not a fake: it is the in-package
:py:class:`~twistedq.backends.memory.MemoryBackend`, with the helpers
below to read what was asked of it.  Test modules import from here, never
from each other.
"""

import datetime
import time
from collections import Counter

from twisted.internet import defer
from twisted.internet.error import ConnectionDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer

from twistedq import context
from twistedq.backends.base import IResultBackend, OutcomeRecord
from twistedq.backends.memory import MemoryBackend
from twistedq.conf import Settings
from twistedq.message import TaskMessage
from twistedq.outcome import Outcome, success_document, top_status
from twistedq.states import FAILURE
from twistedq.worker.pool import Child, ChildLost, IChildStarter

#: A realistic Unix time for a test's clock: 2027-01-15.
NOW = 1_800_000_000
#: The same, as the scheduler's wall clock starts it: a whole minute, UTC.
START = 1_800_000_000.0
#: A taskset id.
TASKSET = "00000000-0000-4000-8000-00000000aaaa"


def task_id(number):
    """
    The task id numbered ``number``.
    """
    return f"00000000-0000-4000-8000-{number:012d}"


def iso(seconds):
    """
    The ISO 8601 UTC text of a Unix time, as the client writes it.
    """
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat()


# The store: the memory store, and what to read of it.


def answered(d):
    """
    The result of a Deferred that has fired (the memory store answers at
    once unless paused); its failure is raised.
    """
    results = []
    d.addBoth(results.append)
    if not results:
        raise AssertionError("no answer yet: is the store paused?")
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def store_calls(store):
    """
    The records of each ``store_results`` call made to a memory store, in
    the order made (answered, failed or held).
    """
    return [list(call.args[0]) for call in store.calls if call.name == "store_results"]


def held_writes(store):
    """
    The ``store_results`` calls a paused memory store holds, in the order
    made: ``(records, held)`` each, where ``held.answer()`` writes and
    answers, and ``held.fail(error)`` fails the write.
    """
    return [
        (list(held.call.args[0]), held) for held in store.held if held.call.name == "store_results"
    ]


def held_named(store, name):
    """
    The calls of method ``name`` a paused memory store holds.
    """
    return [held for held in store.held if held.call.name == name]


def committed(store):
    """
    The ``(task id, token)`` of every outcome committed under a claim, in
    the order committed.
    """
    return [(w.record.task_id, w.token) for w in store.writes if w.token is not None]


def put(store, task_id, document, taskset=None):
    """
    Store an outcome in a memory store as the daemon does (counted in its
    taskset, as failed if it is a FAILURE).
    """
    failed = top_status(document) == FAILURE
    answered(store.store_results([OutcomeRecord(task_id, document, taskset, failed)]))


@implementer(IResultBackend)
class ResultsOnly:
    """
    A store seen through :py:class:`IResultBackend` alone, as a store
    without claims is: the daemon then reads committed outcomes instead of
    claiming tasks.  Every call goes to ``store``.
    """

    def __init__(self, store):
        self.store = store
        self.url = store.url

    def __getattr__(self, name):
        if name in IResultBackend.names():
            return getattr(self.store, name)
        raise AttributeError(name)


# The broker's side.


class FakeDelivery:
    """
    Records how it was settled: ``"ack"``, ``("reject", requeue)`` or
    ``("dead-letter", reason)`` (with the detail in ``details``).
    """

    def __init__(self, body, redelivered=False, headers=None, queue=None):
        self.body = body
        self.redelivered = redelivered
        self.headers = headers
        self.queue = queue
        self.settled = []
        self.details = []

    def ack(self):
        self.settled.append("ack")

    def reject(self, requeue):
        self.settled.append(("reject", requeue))

    def dead_letter(self, reason, detail):
        self.settled.append(("dead-letter", reason))
        self.details.append(detail)
        return defer.succeed(None)


def delivery(number, task="add", **fields):
    """
    A delivery of task ``number``: ``task`` with the argument ``number``
    and the message ``fields`` given.
    """
    message = TaskMessage(id=task_id(number), task=task, args=(number,), **fields)
    return FakeDelivery(message.encode())


class FakeChannel:
    """
    An AMQP channel.  Records acks and rejects, and tracks what a broker
    would: the outstanding delivery tags, each settled at most once.  A
    ``multiple`` ack settles every outstanding tag up to its own; a single
    ack or reject of a tag that is not outstanding is a protocol error
    (RabbitMQ closes the channel with PRECONDITION_FAILED).  Records queue
    declarations, and publishes: each returns a Deferred the test fires as
    the broker's confirm.
    """

    def __init__(self, tags=()):
        self.closed = False
        self.calls = []
        self.outstanding = set(tags)
        self.acked = []
        self.rejected = []
        self.errors = []
        self.declared = []
        self.published = []

    def basic_ack(self, delivery_tag, multiple):
        self.calls.append(("ack", delivery_tag, multiple))
        if multiple:
            if delivery_tag not in self.outstanding:
                self.errors.append(("unknown tag", delivery_tag))
            covered = sorted(t for t in self.outstanding if t <= delivery_tag)
        else:
            if delivery_tag not in self.outstanding:
                self.errors.append(("unknown tag", delivery_tag))
                return
            covered = [delivery_tag]
        self.outstanding -= set(covered)
        self.acked.extend(covered)

    def basic_reject(self, delivery_tag, requeue):
        self.calls.append(("reject", delivery_tag, requeue))
        if delivery_tag not in self.outstanding:
            self.errors.append(("unknown tag", delivery_tag))
            return
        self.outstanding.discard(delivery_tag)
        self.rejected.append((delivery_tag, requeue))

    def queue_declare(self, **arguments):
        self.declared.append(arguments)
        return defer.succeed(None)

    def publish(self, exchange, routing_key, body, properties, mandatory=False):
        d = defer.Deferred()
        self.published.append((exchange, routing_key, body, properties, mandatory, d))
        return d


class FakeBroker:
    """
    Publishes for the scheduler and the dispatcher.  ``publish`` records
    the message and its queue at once, or fails (``fail``), or never
    answers (``hang``); ``publish_later`` records the message and its
    delay in ``sent`` and returns a Deferred the test fires.
    """

    def __init__(self):
        self.messages = []
        self.queues = []
        self.fail = False
        self.hang = False
        self.sent = []

    def publish(self, message, queue):
        if self.fail:
            return defer.fail(ConnectionError("broker down"))
        if self.hang:
            return defer.Deferred()
        self.messages.append(message)
        self.queues.append(queue)
        return defer.succeed(None)

    def ids(self):
        return Counter(message.id for message in self.messages)

    def publish_later(self, message, delay, **options):
        d = defer.Deferred()
        self.sent.append((message, delay, d))
        return d


# The pool's side.


class FakePool:
    """
    ``idle`` children; ``run_batch`` takes one (there must be one), records
    the bodies and the time limit, and returns a Deferred the test fires
    (:py:meth:`finish`).  ``task_limits`` are the tasks the children
    registered, with their limits.  Batch ``i`` runs on a child named
    ``Process-<i + 1>`` (:py:attr:`last_child`); :py:meth:`terminate`
    records the batch whose child it would kill (:py:attr:`killed`), and
    the test ends it with :py:meth:`lose`.
    """

    def __init__(self, idle=1):
        self.idle = idle
        self.batches = []
        self.task_limits = {}
        self.time_limits = []
        self.last_child = None
        self.killed = []

    @property
    def idle_count(self):
        return self.idle

    def run_batch(self, bodies, time_limit=None):
        self.time_limits.append(time_limit)
        if self.idle <= 0:
            raise RuntimeError("no idle child")
        self.idle -= 1
        d = defer.Deferred()
        self.batches.append((list(bodies), d))
        self.last_child = f"Process-{len(self.batches)}"
        return d

    def terminate(self, body):
        for index, (bodies, d) in enumerate(self.batches):
            if not d.called and index not in self.killed and any(b is body for b in bodies):
                self.killed.append(index)
                return f"Process-{index + 1}"
        return None

    def lose(self, index, reason="revoked"):
        """
        Batch ``index``'s child died (``reason`` as :py:class:`ChildLost`
        gives it); it is replaced by an idle one.
        """
        from twistedq.worker.pool import ChildLost

        self.idle += 1
        self.batches[index][1].errback(ChildLost(f"batch {index} lost: {reason}", reason))

    def finish(self, index, outcomes=None):
        """
        Answer batch ``index`` with ``outcomes``, by default a success for
        each of its bodies; its child is idle again.
        """
        bodies, d = self.batches[index]
        if outcomes is None:
            outcomes = []
            for body in bodies:
                message = TaskMessage.decode(body)
                outcomes.append(success_document(message.id, message.task, message.args))
        self.idle += 1
        d.callback(outcomes)

    def ids(self):
        """
        The task ids of each batch, in the order run.
        """
        return [[TaskMessage.decode(body).id for body in bodies] for bodies, _ in self.batches]


class FakeAMP:
    """
    Stands for the daemon's AMP connection to a child: records every
    ``callRemote`` and answers only when the test says so.
    """

    def __init__(self):
        self.calls = []
        self.connected = True

    def callRemote(self, command, **kwargs):
        if not command.requiresAnswer:
            self.calls.append((command, kwargs, None))
            return None
        if not self.connected:
            return defer.fail(ConnectionDone("not connected"))
        d = defer.Deferred()
        self.calls.append((command, kwargs, d))
        return d

    def commands(self):
        return [command for command, _, _ in self.calls]

    def answer(self, command, response):
        """
        Answer the oldest unanswered call of ``command``.
        """
        for called, _, d in self.calls:
            if called is command and d is not None and not d.called:
                d.callback(response)
                return
        raise AssertionError(f"no pending {command.__name__}")

    def connection_lost(self, reason):
        """
        Like AMP's connectionLost: every unanswered call fails.
        """
        self.connected = False
        for _, _, d in self.calls:
            if d is not None and not d.called:
                d.errback(reason)


@implementer(IChildStarter)
class FakeStarter:
    """
    Starts in-memory children.  ``kill()`` is recorded and, when
    ``kill_ends`` is set, ends the child as a SIGKILL would.
    """

    def __init__(self):
        self.children = []
        self.kills = []
        self.kill_ends = True
        self.ready = None
        self.fail_next = 0
        self.attempts = 0

    def start(self, name):
        self.attempts += 1
        if self.fail_next:
            self.fail_next -= 1
            return defer.fail(ChildLost(f"{name} could not start"))
        protocol = FakeAMP()
        child = Child(name, protocol, defer.Deferred(), lambda: self.kill(child))
        child.pid = 1000 + len(self.children)
        self.children.append(child)
        if self.ready is not None:
            d = defer.Deferred()
            self.ready.append((child, d))
            return d
        return defer.succeed(child)

    def kill(self, child):
        self.kills.append(child.name)
        # A child whose AMP pipe is already closed is ending by itself.
        if self.kill_ends and child.protocol.connected and not child.ended.called:
            end(child, ProcessTerminated(signal=9))

    def names(self):
        return [child.name for child in self.children]


def end(child, reason=None):
    """
    End a child the way its process protocol does: the AMP connection is lost
    first, then ``ended`` fires.
    """
    if reason is None:
        reason = ProcessTerminated(exitCode=1)
    child.protocol.connection_lost(Failure(ConnectionDone("child ended")))
    child.ended.callback(reason)


# The client's side.


class FakeClient:
    """
    The blocking client (:py:class:`twistedq.client.Client`) in memory.
    Outcomes and tasksets are in a memory store (``store``), read and
    written as the real client does; published messages are recorded with
    their queue.  With ``runner`` (a function of a message giving an
    outcome document) every published message is "run" at once: its
    outcome is stored and counted in its taskset, as a daemon would.
    Publishes and taskset records are logged in ``calls``, and every read
    is counted.

    :param outcomes: task id to the outcome document stored for it.
    """

    def __init__(self, outcomes=None, seed_states=False, runner=None):
        self.settings = Settings(seed_states=seed_states)
        self.store = MemoryBackend(Clock())
        self.runner = runner
        self.published = []
        self.calls = []
        self.purged = []
        self.purge_count = 0
        self.forgotten = []
        self.get_outcome_calls = 0
        self.get_outcomes_calls = []
        self.get_taskset_calls = 0
        for task_id_, document in (outcomes or {}).items():
            self.put(task_id_, document)

    def put(self, task_id, document, taskset=None):
        """
        Store an outcome as the daemon does, counted in ``taskset``.
        """
        put(self.store, task_id, document, taskset)

    def publish(self, message, queue=None):
        self.calls.append(("publish", message.id, queue))
        self._publish([message], queue)

    def publish_many(self, messages, queue=None):
        messages = list(messages)
        self.calls.append(("publish_many", len(messages), queue))
        self._publish(messages, queue)

    def _publish(self, messages, queue):
        for message in messages:
            self.published.append((message, queue))
            if self.runner is not None:
                self.put(message.id, self.runner(message), message.taskset)

    def purge(self, queue=None):
        self.purged.append(queue)
        return self.purge_count

    def forget(self, task_ids):
        self.forgotten.append(list(task_ids))
        answered(self.store.forget(list(task_ids)))

    def create_taskset(self, taskset_id, total):
        self.calls.append(("create_taskset", taskset_id, total))
        answered(self.store.create_taskset(taskset_id, total))

    def get_taskset(self, taskset_id):
        self.get_taskset_calls += 1
        return answered(self.store.get_taskset(taskset_id))

    def get_outcome(self, task_id):
        self.get_outcome_calls += 1
        return Outcome.from_bytes(task_id, answered(self.store.get_result(task_id)))

    def wait_outcome(self, task_id, timeout=None):
        return wait_by_polling(self, task_id, timeout)

    def get_outcomes(self, task_ids):
        ids = list(task_ids)
        self.get_outcomes_calls.append(ids)
        found = answered(self.store.get_results(ids))
        return [Outcome.from_bytes(i, document) for i, document in zip(ids, found, strict=True)]


def in_child(case, name="Process-1"):
    """
    Make ``case`` run as if inside a pool child until it ends.
    """
    previous = context.current_child()
    context.set_current_child(name)
    case.addCleanup(context.set_current_child, previous)


def wait_by_polling(client, task_id, timeout=None):
    """
    What the real client's ``wait_outcome`` promises, for a fake client
    with ``get_outcome``: read until ready, TimeoutError past ``timeout``.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        outcome = client.get_outcome(task_id)
        if outcome.ready:
            return outcome
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"task {task_id} not ready within {timeout} s")
        time.sleep(0.001)
