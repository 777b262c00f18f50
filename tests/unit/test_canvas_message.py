"""
Tests for the workflow fields of :py:obj:`twistedq.message.TaskMessage`.
"""

import json

from twisted.trial.unittest import SynchronousTestCase

from twistedq.message import (
    MAX_LINKS,
    MAX_SIGNATURE_DEPTH,
    MessageError,
    TaskMessage,
    check_signature,
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
        for queue in ("", "q" * 256, 7):
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
