"""
Tests for the workflow fields of :py:obj:`twistedq.message.TaskMessage`.
"""

import json

from twisted.trial.unittest import SynchronousTestCase

from twistedq.message import (
    MALFORMED,
    MAX_LINKS,
    MAX_QUEUE_NAME,
    MAX_SIGNATURE_DEPTH,
    MessageError,
    TaskMessage,
    check_signature,
    queue_name_error,
)

TASK_ID = "0b0c8a34-9a4b-4d8e-8b59-3f5ad0c1e7a2"
OTHER_ID = "5f0c8a34-9a4b-4d8e-8b59-3f5ad0c1e7a2"


def signature(task="mul", **changes):
    sig = {"task": task, "args": [3], "kwargs": {}, "options": {}, "immutable": False}
    sig.update(changes)
    return sig


def body(**fields):
    document = {"v": 1, "id": TASK_ID, "task": "add", "args": [1, 2], "kwargs": {}}
    document.update(fields)
    return json.dumps(document).encode()


class CanvasRoundTripTests(SynchronousTestCase):
    """
    Workflow fields survive encode and decode; a message without them is
    encoded exactly as before.
    """

    def test_without_fields(self):
        """
        A message without workflow fields encodes none of their keys.
        """
        encoded = TaskMessage(id=TASK_ID, task="add").encode()
        for key in (b"links", b"errlinks", b"chain", b"chord"):
            self.assertNotIn(key, encoded)
        self.assertFalse(TaskMessage.decode(encoded).has_followups)

    def test_round_trip(self):
        """
        Links, errlinks, chain and chord come back equal.
        """
        link = signature(options={"task_id": OTHER_ID, "queue": "q", "countdown": 1.5})
        message = TaskMessage(
            id=TASK_ID,
            task="add",
            taskset=OTHER_ID,
            links=(link,),
            errlinks=(signature("log", immutable=True),),
            chain=(signature(), signature("neg", args=[])),
            chord=signature("tsum", options={"errlinks": [signature("log")]}),
        )
        decoded = TaskMessage.decode(message.encode())
        self.assertEqual(decoded, message)
        self.assertTrue(decoded.has_followups)


class CanvasValidationTests(SynchronousTestCase):
    """
    Malformed workflow fields are refused with a MessageError that says which.
    """

    def assertRefused(self, fragment, **fields):
        error = self.assertRaises(MessageError, TaskMessage.decode, body(**fields))
        self.assertIn(fragment, str(error))
        self.assertEqual(error.reason, "malformed")
        self.assertEqual(error.task_id, TASK_ID)

    def test_not_a_list(self):
        self.assertRefused("links: is not a JSON array", links={"task": "x"})

    def test_not_an_object(self):
        self.assertRefused("chain[1]: is not a JSON object", chain=[signature(), "mul"])

    def test_bad_task_name(self):
        self.assertRefused("errlinks[0]: task name", errlinks=[signature(task="")])

    def test_unknown_key(self):
        self.assertRefused("unknown keys ['subtask_type']", links=[signature(subtask_type="x")])

    def test_unknown_option(self):
        self.assertRefused(
            "unknown options ['priority']", links=[signature(options={"priority": 3})]
        )

    def test_bad_task_id(self):
        self.assertRefused(
            "task_id 'nope' is not a UUID", links=[signature(options={"task_id": "nope"})]
        )

    def test_bad_countdown(self):
        for countdown in (-1, True, "3", 1e12):
            self.assertRefused(
                "is not a number of seconds", links=[signature(options={"countdown": countdown})]
            )

    def test_bad_queue(self):
        for queue in ("", "q" * 256, 7, "amq.typo"):
            self.assertRefused("is not a queue name", links=[signature(options={"queue": queue})])

    def test_bad_args(self):
        self.assertRefused("args is not a JSON array", links=[signature(args="abc")])
        self.assertRefused("kwargs is not a JSON object", links=[signature(kwargs=[1])])
        self.assertRefused("immutable is not true or false", links=[signature(immutable=1)])

    def test_too_many_links(self):
        self.assertRefused(f"over the limit of {MAX_LINKS}", links=[signature()] * (MAX_LINKS + 1))

    def test_too_deep(self):
        """
        Signatures nested through their links deeper than the cap are refused.
        """
        sig = signature()
        for _ in range(MAX_SIGNATURE_DEPTH):
            sig = signature(options={"links": [sig]})
        self.assertRefused(f"nested over {MAX_SIGNATURE_DEPTH} deep", links=[sig])

    def test_deep_enough(self):
        """
        Nesting up to the cap is taken.
        """
        sig = signature()
        for _ in range(MAX_SIGNATURE_DEPTH - 1):
            sig = signature(options={"links": [sig]})
        check_signature(sig)
        self.assertEqual(TaskMessage.decode(body(links=[sig])).links, (sig,))

    def test_chord_needs_taskset(self):
        """
        A chord member names its chord in ``taskset``.
        """
        self.assertRefused("chord: a chord member's taskset", chord=signature())
        self.assertRefused("chord: is not a JSON object", chord=[], taskset=OTHER_ID)

    def test_check_refuses_before_publish(self):
        """
        ``check`` (what the client runs before publishing) refuses them too.
        """
        message = TaskMessage(id=TASK_ID, task="add", links=(signature(task=7),))
        self.assertRaises(MessageError, message.check)


class QueueNameTests(SynchronousTestCase):
    """
    A queue named anywhere in a message (a signature's ``queue`` option at
    every depth) follows the rules of the client's own queue: the daemon
    declares ``<queue>.dead`` and ``<queue>.delay.<n>`` for it, so the
    name with those suffixes must fit an AMQP short string, and the broker
    refuses names in its reserved ``amq.`` prefix.
    """

    def test_longest_suffix_fits(self):
        """
        The longest queue name allowed leaves room for the longest delay
        queue suffix the daemon appends.
        """
        from twistedq.amqp.broker import DELAY_EXPONENT_MAX, Topology

        longest = "q" * MAX_QUEUE_NAME
        self.assertIsNone(queue_name_error(longest))
        delay = Topology(queue=longest).delay_queue(2**DELAY_EXPONENT_MAX)
        self.assertEqual(len(delay), 255)
        self.assertIn("longer than", queue_name_error(longest + "q"))

    def test_bad_names(self):
        for queue in ("", "amq.typo", "q" * (MAX_QUEUE_NAME + 1), "é" * 121, 7, None):
            self.assertIsNotNone(queue_name_error(queue), queue)
        for queue in ("q", "amqx", "tasks.amq.x", "é" * 120):
            self.assertIsNone(queue_name_error(queue), queue)

    def test_every_depth(self):
        """
        A bad queue is refused in links, errlinks, chain steps, a chord's
        callback and the links of those, as malformed.
        """
        bad = signature(options={"queue": "amq.typo"})
        nested = signature(options={"links": [signature(options={"errlinks": [bad]})]})
        for fields in (
            {"links": [bad]},
            {"errlinks": [bad]},
            {"chain": [signature(), bad]},
            {"chain": [nested]},
            {"chord": bad, "taskset": OTHER_ID},
        ):
            with self.assertRaises(MessageError) as caught:
                TaskMessage.decode(body(**fields))
            self.assertIn("reserves the prefix 'amq.'", str(caught.exception))
            self.assertEqual(caught.exception.reason, MALFORMED)

    def test_long_later_step(self):
        """
        The tester's 251-character queue on a later chain step is refused
        when the message is checked, before it is published.
        """
        step = signature(options={"queue": "q" * 251})
        message = TaskMessage(id=TASK_ID, task="add", chain=(signature(), step))
        with self.assertRaises(MessageError) as caught:
            message.check()
        self.assertIn("chain[1]", str(caught.exception))
