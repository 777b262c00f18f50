"""
Tests for :py:mod:`twistedq.canvas`: signatures, chain, group and chord as
the client publishes them.
"""

import json
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.unit.fakes import FakeClient
from twistedq.canvas import (
    Signature,
    chain,
    chord,
    chord_member_id,
    group,
    maybe_signature,
    signature,
)
from twistedq.message import MAX_CHAIN
from twistedq.outcome import failure_document, success_document
from twistedq.registry import TaskRegistry
from twistedq.result import AsyncResult, TaskSetResult
from twistedq.task import publish_task, task


def tasks():
    registry = TaskRegistry()

    @task(name="add", registry=registry)
    def add(x, y):
        return x + y

    @task(name="mul", registry=registry)
    def mul(x, y):
        return x * y

    @task(name="tsum", registry=registry)
    def tsum(values):
        return sum(values)

    return add, mul, tsum


class SignatureTests(SynchronousTestCase):
    """
    Signatures are JSON documents of a task call.
    """

    def setUp(self):
        self.add, self.mul, self.tsum = tasks()

    def test_s(self):
        """
        ``add.s(2, 2)`` is the document of the call, JSON as it is.
        """
        sig = self.add.s(2, y=3)
        self.assertEqual(
            json.loads(json.dumps(sig)),
            {"task": "add", "args": [2], "kwargs": {"y": 3}, "options": {}, "immutable": False},
        )
        self.assertEqual(repr(sig), "add(2, y=3)")
        self.assertEqual(maybe_signature(json.loads(json.dumps(sig))), sig)

    def test_si_and_signature(self):
        """
        ``si`` is immutable; ``signature`` takes options.
        """
        self.assertTrue(self.add.si(1, 2).immutable)
        sig = self.add.signature((1, 2), countdown=10, queue="q")
        self.assertEqual(sig.options, {"countdown": 10, "queue": "q"})
        self.assertEqual(signature("add", (1,), queue="q").options, {"queue": "q"})

    def test_unknown_option(self):
        """
        An option that cannot travel in a message is refused at once.
        """
        self.assertRaises(TypeError, self.add.signature, (1, 2), priority=3)

    def test_clone(self):
        """
        ``clone`` adds arguments after its own and leaves the original alone.
        """
        sig = self.add.s(2)
        self.assertEqual(sig.clone((3,)).args, [2, 3])
        self.assertEqual(sig.args, [2])

    def test_delay_with_links(self):
        """
        ``apply_async`` with ``link``/``link_error`` puts their documents in
        the message; the signature's own options are kept.
        """
        client = FakeClient()
        sig = self.add.s(2, 2).set(queue="q")
        result = sig.apply_async(link=self.mul.s(3), link_error=[self.tsum.si(0)], client=client)
        message, queue = client.published[0]
        self.assertEqual(queue, "q")
        self.assertEqual(message.id, result.task_id)
        self.assertEqual(message.args, (2, 2))
        self.assertEqual(message.links, (dict(self.mul.s(3)),))
        self.assertEqual(message.errlinks, (dict(self.tsum.si(0)),))
        self.assertEqual(sig.options, {"queue": "q"})

    def test_publish_task_links(self):
        """
        ``apply_async`` of a task takes ``link`` and ``link_error``.
        """
        client = FakeClient()
        self.add.apply_async((1, 1), link=self.mul.s(2), client=client)
        publish_task("add", (1, 1), link_error=self.mul.s(2), client=client)
        self.assertEqual(client.published[0][0].links, (dict(self.mul.s(2)),))
        self.assertEqual(client.published[1][0].errlinks, (dict(self.mul.s(2)),))
        plain = self.add.apply_async((1, 1), client=client)
        self.assertFalse(client.published[2][0].has_followups)
        self.assertIsNone(plain.parent)


class ChainTests(SynchronousTestCase):
    """
    A chain publishes its first task, the others in its message.
    """

    def setUp(self):
        self.add, self.mul, self.tsum = tasks()

    def test_chain(self):
        """
        The last result's parents reach the first, whose message carries
        the rest with the ids chosen up front.
        """
        client = FakeClient()
        result = chain(self.add.s(2, 2), self.mul.s(4), self.mul.s(10)).apply_async(client=client)
        self.assertEqual(len(client.published), 1)
        message = client.published[0][0]
        self.assertEqual([step["task"] for step in message.chain], ["mul", "mul"])
        ids = [message.id] + [step["options"]["task_id"] for step in message.chain]
        self.assertEqual(result.task_id, ids[2])
        self.assertEqual(result.parent.task_id, ids[1])
        self.assertEqual(result.parent.parent.task_id, ids[0])
        self.assertIsNone(result.parent.parent.parent)

    def test_pipe_flattens(self):
        """
        ``a | b | c`` is one chain of three.
        """
        workflow = self.add.s(1, 1) | self.mul.s(2) | (self.mul.s(3) | self.mul.s(4))
        self.assertEqual([s.task for s in workflow.tasks], ["add", "mul", "mul", "mul"])

    def test_link_error_on_every_step(self):
        """
        ``link_error`` of a chain is an errback of each step; ``link`` one
        of the last.
        """
        client = FakeClient()
        errback = self.tsum.si([])
        chain(self.add.s(1, 1), self.mul.s(2)).apply_async(
            link=self.add.s(1), link_error=errback, client=client
        )
        message = client.published[0][0]
        self.assertEqual(message.errlinks, (dict(errback),))
        self.assertEqual(message.chain[0]["options"]["errlinks"], [dict(errback)])
        self.assertEqual(message.chain[0]["options"]["links"], [dict(self.add.s(1))])

    def test_get_raises_failed_step(self):
        """
        ``get`` of a chain's last result raises the exception of a step
        that failed at once (the steps after it never run), and returns
        the last value once every step succeeded.
        """
        client = FakeClient()
        result = chain(self.add.s(1, 1), self.mul.s(2), self.mul.s(3)).apply_async(client=client)
        first, second = result.parent.parent.task_id, result.parent.task_id
        client.put(first, success_document(first, "add", 2))
        client.put(second, failure_document(second, "mul", ValueError("no")))
        started = time.monotonic()
        self.assertRaises(ValueError, result.get, timeout=30)
        self.assertLess(time.monotonic() - started, 10)

    def test_get_waits_for_steps(self):
        """
        ``get`` of a chain's last result waits for every step, within one
        timeout.
        """
        client = FakeClient()
        result = chain(self.add.s(1, 1), self.mul.s(2), self.mul.s(3)).apply_async(client=client)
        first, second = result.parent.parent.task_id, result.parent.task_id
        client.put(first, success_document(first, "add", 2))
        self.assertRaises(TimeoutError, result.get, timeout=0.05)
        client.put(second, success_document(second, "mul", 4))
        self.assertRaises(TimeoutError, result.get, timeout=0.05)
        client.put(result.task_id, success_document(result.task_id, "mul", 12))
        self.assertEqual(result.get(timeout=1), 12)

    def test_timeout_names_the_chain(self):
        """
        A chain's ``get`` that times out says so for the chain and its
        whole timeout, and which step had not finished, not the time left
        to an earlier step nor a store that did not answer.
        """
        client = FakeClient()
        result = chain(self.add.s(1, 1), self.mul.s(2), self.mul.s(3)).apply_async(client=client)
        first, second = result.parent.parent.task_id, result.parent.task_id
        client.put(first, success_document(first, "add", 2))
        with self.assertRaises(TimeoutError) as caught:
            result.get(timeout=0.05)
        self.assertEqual(
            str(caught.exception),
            f"chain ending in task {result.task_id} not ready within 0.05 s: "
            f"step 2 of 3 (task {second}) has not finished",
        )

    def test_signatures_left_alone(self):
        """
        Publishing a chain adds ids and callbacks to copies: the
        signatures given keep their own.
        """
        first, last = self.add.s(1, 1), self.mul.s(2)
        last.link_error(self.tsum.s())
        before = json.dumps([first, last])
        chain(first, last).apply_async(
            link=self.add.s(1), link_error=self.tsum.si([]), client=FakeClient()
        )
        self.assertEqual(json.dumps([first, last]), before)

    def test_no_group_in_chain(self):
        self.assertRaises(TypeError, chain, self.add.s(1, 1), group(self.add.s(1, 1)))

    def test_longest_chain(self):
        """
        A chain has at most MAX_CHAIN steps, refused when it is built (a
        chain one step longer was accepted, two refused at publish only).
        """
        steps = [self.add.s(1, 1)] + [self.mul.s(2)] * (MAX_CHAIN - 1)
        client = FakeClient()
        chain(*steps).apply_async(client=client)
        self.assertEqual(len(client.published[0][0].chain), MAX_CHAIN - 1)
        with self.assertRaises(ValueError) as caught:
            chain(*steps, self.mul.s(2))
        self.assertIn(f"at most {MAX_CHAIN} steps, not {MAX_CHAIN + 1}", str(caught.exception))
        with self.assertRaises(ValueError):
            chain(*steps) | self.mul.s(2)


class UnclearTypeErrorTests(SynchronousTestCase):
    """
    What is not a signature where one is wanted is refused with a text
    that says what was given and what to do.
    """

    def setUp(self):
        self.add, self.mul, self.tsum = tasks()

    def assertRefused(self, text, call, *args, **kwargs):
        with self.assertRaises(TypeError) as caught:
            call(*args, **kwargs)
        self.assertIn(text, str(caught.exception))

    def test_task_name_as_link(self):
        """
        ``link='inc'`` says a task name is not a signature (it said
        "'i' is not a signature").
        """
        for option in ("link", "link_error"):
            self.assertRefused(
                "'mul' is a task name, not a signature: use mul.s() or signature('mul')",
                self.add.apply_async,
                (1, 1),
                client=FakeClient(),
                **{option: "mul"},
            )
        self.assertRefused("'mul' is a task name", self.add.s(1, 1).link, "mul")

    def test_workflow_where_a_signature_goes(self):
        """
        A chain (or group, chord) inside a group, as a link or a chord's
        callback says workflows do not nest (it said "'chain' object is
        not iterable").
        """
        steps = chain(self.add.s(1, 1), self.mul.s(2))
        self.assertRefused("a chain cannot be used", group, steps)
        self.assertRefused("a chain cannot be used", group, [self.add.s(1, 1), steps])
        self.assertRefused(
            "a chain cannot be used", self.add.apply_async, (1, 1), link=steps, client=FakeClient()
        )
        self.assertRefused("a group cannot be used", chord, [self.add.s(1, 1)], group(self.add.s()))


class GroupChordTests(SynchronousTestCase):
    """
    A group is a taskset of signatures; a chord a group whose members know
    the callback.
    """

    def setUp(self):
        self.add, self.mul, self.tsum = tasks()

    def test_group(self):
        client = FakeClient()
        result = group(self.add.s(i, i) for i in range(3)).apply_async(client=client)
        self.assertIsInstance(result, TaskSetResult)
        self.assertEqual(result.total, 3)
        self.assertEqual([m.taskset for m, _ in client.published], [result.taskset_id] * 3)
        self.assertEqual(client.calls[0], ("create_taskset", result.taskset_id, 3))

    def test_chord(self):
        """
        Members have ids derived from the chord's id and carry the
        callback, whose id is chosen up front.
        """
        client = FakeClient()
        result = chord([self.add.s(i, i) for i in range(3)], self.tsum.s()).apply_async(
            client=client
        )
        self.assertIsInstance(result, AsyncResult)
        header = result.parent
        messages = [m for m, _ in client.published]
        self.assertEqual(
            [m.id for m in messages], [chord_member_id(header.taskset_id, i) for i in range(3)]
        )
        for m in messages:
            self.assertEqual(m.taskset, header.taskset_id)
            self.assertEqual(m.chord["options"]["task_id"], result.task_id)
        self.assertEqual((group(self.add.s(1, 1)) | self.tsum.s()).body, self.tsum.s())

    def test_empty_chord(self):
        """
        An empty header publishes the callback at once with an empty list.
        """
        client = FakeClient()
        result = chord([])(self.tsum.s(), client=client)
        message = client.published[0][0]
        self.assertEqual((message.id, message.args), (result.task_id, ([],)))

    def test_names_in_task_module(self):
        """
        The workflow names are also in :py:mod:`twistedq.task`, beside
        ``TaskSet``.
        """
        import twistedq.task

        for name in ("Signature", "chain", "chord", "group", "signature"):
            self.assertIn(name, twistedq.task.__all__)
        self.assertIs(twistedq.task.group, group)

    def test_signature_is_dict(self):
        self.assertIsInstance(self.add.s(), Signature)
        self.assertIsInstance(self.add.s(), dict)
