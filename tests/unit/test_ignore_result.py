"""
Tests for tasks whose results are ignored: the ``ignore_result`` field of
the task message, and a daemon that writes nothing to the store for them.
"""

import json

from twisted.trial.unittest import SynchronousTestCase

from twistedq.message import MessageError, TaskMessage

TASK_ID = "0b0c8a34-9a4b-4d8e-8b59-3f5ad0c1e7a2"


class MessageFieldTests(SynchronousTestCase):
    """
    The optional ``ignore_result`` field of a version 1 message.
    """

    def test_absent_by_default(self):
        """
        A message that stores its result has no ``ignore_result`` field, so
        daemons that do not know the field take it.
        """
        document = json.loads(TaskMessage(id=TASK_ID, task="add").encode())
        self.assertNotIn("ignore_result", document)

    def test_round_trip(self):
        """
        ``ignore_result=True`` is encoded as ``"ignore_result": true`` and
        decoded back.
        """
        message = TaskMessage(id=TASK_ID, task="add", ignore_result=True)
        body = message.encode()
        self.assertIs(json.loads(body)["ignore_result"], True)
        self.assertEqual(TaskMessage.decode(body), message)

    def test_false_accepted(self):
        """
        An explicit ``false`` is the default.
        """
        body = json.dumps({"v": 1, "id": TASK_ID, "task": "add", "ignore_result": False}).encode()
        self.assertIs(TaskMessage.decode(body).ignore_result, False)

    def test_not_boolean(self):
        """
        Anything but true or false is malformed.
        """
        for value in (1, "true", None, [True]):
            body = json.dumps(
                {"v": 1, "id": TASK_ID, "task": "add", "ignore_result": value}
            ).encode()
            error = self.assertRaises(MessageError, TaskMessage.decode, body)
            self.assertIn("ignore_result", str(error))
            self.assertEqual(error.task_id, TASK_ID)
