"""
Tests for :py:obj:`twistedq.message`.
"""

import json
import uuid

from twisted.trial.unittest import SynchronousTestCase

from twistedq.message import (
    MAX_BODY_SIZE,
    MessageError,
    TaskMessage,
    is_task_id,
    new_task_id,
    peek_task,
)

TASK_ID = "0b0c8a34-9a4b-4d8e-8b59-3f5ad0c1e7a2"


def document(**changes):
    """
    A valid version 1 message document, with ``changes`` applied (a value of
    ``...`` removes the key).
    """
    doc = {
        "v": 1,
        "id": TASK_ID,
        "task": "add",
        "args": [1, 2],
        "kwargs": {},
        "taskset": None,
        "eta": None,
        "expires": None,
        "retries": 0,
    }
    for key, value in changes.items():
        if value is ...:
            del doc[key]
        else:
            doc[key] = value
    return doc


def body(**changes):
    return json.dumps(document(**changes)).encode("utf-8")


class RoundTripTests(SynchronousTestCase):
    """
    Encoding then decoding gives back an equal message.
    """

    def test_simple(self):
        """
        A message with positional arguments comes back equal, args as a tuple.
        """
        message = TaskMessage(id=TASK_ID, task="add", args=(1, 2))
        decoded = TaskMessage.decode(message.encode())
        self.assertEqual(decoded, message)
        self.assertIsInstance(decoded.args, tuple)

    def test_all_fields(self):
        """
        Every field, kwargs, unicode text and nested JSON values survive the
        round trip unchanged.
        """
        message = TaskMessage(
            id=TASK_ID,
            task="päckage.tâsk",
            args=("ünïcødé ☃", [1, [2, {"deep": [None, True, 1.5]}]], {"k": "v"}),
            kwargs={"naïve": {"list": [1, 2, 3], "text": "日本語"}, "n": None},
            taskset="ed7b2a51-5b8d-4a61-9f0a-7cf1f5a8e0a4",
            eta="2026-11-24T10:00:00+00:00",
            expires="2026-11-25T10:00:00+00:00",
            retries=3,
        )
        self.assertEqual(TaskMessage.decode(message.encode()), message)

    def test_encoding_is_utf8_json(self):
        """
        The encoded body is compact JSON bytes with every field of version 1.
        """
        encoded = TaskMessage(id=TASK_ID, task="t", args=("é",)).encode()
        self.assertIsInstance(encoded, bytes)
        self.assertNotIn(b", ", encoded)
        encoded.decode("utf-8")
        self.assertEqual(
            json.loads(encoded),
            {
                "v": 1,
                "id": TASK_ID,
                "task": "t",
                "args": ["é"],
                "kwargs": {},
                "taskset": None,
                "eta": None,
                "expires": None,
                "retries": 0,
            },
        )

    def test_optional_fields_default(self):
        """
        A document without the optional fields decodes with their defaults.
        """
        message = TaskMessage.decode(json.dumps({"v": 1, "id": TASK_ID, "task": "t"}).encode())
        self.assertEqual(message, TaskMessage(id=TASK_ID, task="t"))


class DecodeRejectionTests(SynchronousTestCase):
    """
    Anything that is not a valid version 1 message is refused with a
    :py:obj:`MessageError` that says why.
    """

    def assertRefused(self, data, *fragments, **kwargs):
        error = self.assertRaises(MessageError, TaskMessage.decode, data, **kwargs)
        self.assertIsInstance(error, ValueError)
        for fragment in fragments:
            self.assertIn(fragment, str(error))
        return error

    def test_not_bytes(self):
        """
        A ``str`` body is refused, naming its type.
        """
        self.assertRefused(body().decode(), "bytes", "str")

    def test_nested_too_deeply(self):
        """
        JSON nested deeper than the decoder can follow is refused as
        malformed (not a RecursionError); the task id and name are kept
        when the body starts as ``encode`` writes it.
        """
        deep = b"[" * 100_000 + b"]" * 100_000
        error = self.assertRefused(deep, "nested too deeply")
        self.assertEqual((error.reason, error.task_id), ("malformed", None))
        head = TaskMessage(id=TASK_ID, task="add").encode()[:-1]
        error = self.assertRefused(head + b',"x":' + deep + b"}", "nested too deeply")
        self.assertEqual((error.task_id, error.task), (TASK_ID, "add"))

    def test_over_max_size(self):
        """
        A body over ``max_size`` is refused, giving its size and the limit.
        """
        data = body()
        self.assertRefused(data, str(len(data)), "limit of 10", max_size=10)

    def test_exactly_max_size(self):
        """
        A body of exactly ``max_size`` bytes is accepted.
        """
        data = body()
        self.assertEqual(TaskMessage.decode(data, max_size=len(data)).task, "add")

    def test_default_max_size(self):
        """
        The default limit is 16 MiB.
        """
        self.assertEqual(MAX_BODY_SIZE, 16 * 1024 * 1024)
        self.assertRefused(b" " * (MAX_BODY_SIZE + 1), "over the limit")

    def test_not_utf8(self):
        """
        A body with bytes that are not UTF-8 is refused as not UTF-8.
        """
        self.assertRefused(body(task="x").replace(b'"x"', b'"\xff\xfe"'), "not UTF-8")

    def test_utf16_refused(self):
        """
        A UTF-16 encoded body is refused as not UTF-8, even though it holds a
        valid document: the format is UTF-8 JSON only.
        """
        self.assertRefused(json.dumps(document()).encode("utf-16"), "not UTF-8")

    def test_not_json(self):
        """
        A body that is not JSON is refused as not JSON.
        """
        self.assertRefused(b"{not json", "not JSON")

    def test_nan_refused(self):
        """
        A body holding ``NaN`` (which is not JSON, and which encode refuses)
        is refused.
        """
        data = body().replace(b"[1, 2]", b"[NaN, 2]")
        self.assertIn(b"NaN", data)
        self.assertRaises(MessageError, TaskMessage.decode, data)

    def test_array(self):
        """
        A JSON array is refused as not a JSON object.
        """
        self.assertRefused(b"[1, 2]", "not a JSON object")

    def test_wrong_version(self):
        """
        A version other than 1, or none, is refused, naming the version.
        """
        self.assertRefused(body(v=2), "unsupported message version 2")
        self.assertRefused(body(v="1"), "unsupported message version '1'")
        self.assertRefused(body(v=...), "unsupported message version None")

    def test_boolean_version(self):
        """
        ``"v": true`` is not version 1 and is refused.
        """
        self.assertRefused(body(v=True), "unsupported message version")

    def test_unknown_field(self):
        """
        An unknown field is refused, naming it.
        """
        self.assertRefused(body(extra=1, other=2), "unknown fields", "'extra'", "'other'")

    def test_non_uuid_id(self):
        """
        An id that is not a UUID is refused, naming it.
        """
        self.assertRefused(body(id="42"), "id '42' is not a UUID")
        self.assertRefused(body(id=42), "is not a UUID")
        self.assertRefused(body(id=...), "id None is not a UUID")

    def test_upper_case_uuid_id(self):
        """
        An upper-case UUID is not the canonical form and is refused.
        """
        self.assertRefused(body(id=TASK_ID.upper()), "is not a UUID")

    def test_empty_task_name(self):
        """
        An empty or missing task name is refused.
        """
        self.assertRefused(body(task=""), "task name '' is not a string of 1 to 256")
        self.assertRefused(body(task=...), "task name None")
        self.assertRefused(body(task=["add"]), "task name")

    def test_odd_task_names(self):
        """
        A task name over 256 characters, or with a control character or a
        lone surrogate, is refused; the error shows it cut short.
        """
        long_name = "a" * 60_000
        error = self.assertRefused(body(task=long_name), "characters without control")
        self.assertLess(len(str(error)), 300)
        self.assertIsNone(error.task)
        self.assertRefused(body(task="add\u0000"), "task name")
        self.assertRefused(body(task="add\n"), "task name")
        self.assertRefused(body(task="\ud800"), "task name")
        self.assertRefused(body(task="add\u202e"), "format characters")  # right-to-left override
        self.assertRefused(body(task="a\u200bdd"), "task name")  # zero-width space
        self.assertEqual(TaskMessage.decode(body(task="a" * 256)).task, "a" * 256)
        self.assertEqual(TaskMessage.decode(body(task="tâche.ÿ")).task, "tâche.ÿ")

    def test_infinite_number(self):
        """
        A number too large for a float (JSON has no infinity) is refused.
        """
        self.assertRefused(
            b'{"v":1,"id":"%s","task":"add","args":[1e999]}' % TASK_ID.encode(), "out of range"
        )

    def test_args_not_list(self):
        """
        ``args`` that is not a JSON array is refused.
        """
        self.assertRefused(body(args={"a": 1}), "args is not a JSON array")
        self.assertRefused(body(args="12"), "args is not a JSON array")

    def test_kwargs_not_object(self):
        """
        ``kwargs`` that is not a JSON object is refused.
        """
        self.assertRefused(body(kwargs=[1]), "kwargs is not a JSON object")

    def test_retries_negative(self):
        """
        A negative retry count is refused.
        """
        self.assertRefused(body(retries=-1), "retries is not a non-negative integer")

    def test_retries_bool(self):
        """
        A boolean retry count is refused although ``bool`` is an ``int``.
        """
        self.assertRefused(body(retries=True), "retries is not a non-negative integer")

    def test_retries_float(self):
        """
        A fractional retry count is refused.
        """
        self.assertRefused(body(retries=1.5), "retries is not a non-negative integer")

    def test_eta_not_string(self):
        """
        ``eta``, ``expires`` and ``taskset`` that are not strings are refused,
        naming the field.
        """
        self.assertRefused(body(eta=12), "eta is not a string or null")
        self.assertRefused(body(expires=[]), "expires is not a string or null")
        self.assertRefused(body(taskset=1), "taskset is not a string or null")


class EncodeTests(SynchronousTestCase):
    """
    Encoding refuses what JSON cannot carry.
    """

    def test_object_argument(self):
        """
        An argument that is not a JSON value raises :py:obj:`MessageError`
        naming the task.
        """
        message = TaskMessage(id=TASK_ID, task="add", args=(object(),))
        error = self.assertRaises(MessageError, message.encode)
        self.assertIn("arguments of task 'add' are not JSON values", str(error))

    def test_nan_argument(self):
        """
        A NaN argument raises :py:obj:`MessageError`: JSON has no NaN.
        """
        message = TaskMessage(id=TASK_ID, task="add", kwargs={"x": float("nan")})
        self.assertRaises(MessageError, message.encode)

    def test_infinity_argument(self):
        """
        An infinite argument raises :py:obj:`MessageError`.
        """
        message = TaskMessage(id=TASK_ID, task="add", args=(float("inf"),))
        self.assertRaises(MessageError, message.encode)


class TaskIdTests(SynchronousTestCase):
    """
    Task ids are canonical lower-case UUID4 text.
    """

    def test_new_task_id_is_uuid4(self):
        """
        ``new_task_id()`` returns the canonical text of a random UUID4.
        """
        task_id = new_task_id()
        parsed = uuid.UUID(task_id)
        self.assertEqual(parsed.version, 4)
        self.assertEqual(str(parsed), task_id)
        self.assertTrue(is_task_id(task_id))

    def test_new_task_ids_differ(self):
        """
        Two calls give two different ids.
        """
        self.assertNotEqual(new_task_id(), new_task_id())

    def test_is_task_id_refuses(self):
        """
        ``is_task_id`` refuses upper case, braces, missing dashes and junk.
        """
        self.assertTrue(is_task_id(TASK_ID))
        for text in (
            TASK_ID.upper(),
            "{" + TASK_ID + "}",
            TASK_ID.replace("-", ""),
            "urn:uuid:" + TASK_ID,
            "x" * 36,
            "",
        ):
            self.assertFalse(is_task_id(text), text)


class RefusalReasonTests(SynchronousTestCase):
    """
    Each refusal carries a reason code for the dead-letter queue, and the
    task id and name when they can be read.
    """

    def refused(self, data, **kwargs):
        return self.assertRaises(MessageError, TaskMessage.decode, data, **kwargs)

    def test_not_json(self):
        """
        Bytes that are not UTF-8, or text that is not JSON: ``not-json``,
        no id.
        """
        for data in (b"\xff\xfe", b"{nope"):
            error = self.refused(data)
            self.assertEqual((error.reason, error.task_id, error.task), ("not-json", None, None))

    def test_malformed(self):
        """
        JSON that is not a task message: ``malformed``, with the id and
        name where they are valid.
        """
        cases = [
            (b"[1]", None, None),
            (body(args="x"), TASK_ID, "add"),
            (body(id="not-a-uuid"), None, "add"),
            (body(task=5), TASK_ID, None),
            (body(v=2), TASK_ID, "add"),
        ]
        for data, task_id, task in cases:
            error = self.refused(data)
            self.assertEqual(
                (error.reason, error.task_id, error.task), ("malformed", task_id, task)
            )

    def test_too_large(self):
        """
        A body over the limit: ``too-large``, with the id and name read
        from the head of a body the client wrote, without decoding it.
        """
        message = TaskMessage(id=TASK_ID, task='odd "name"', args=("x" * 100,))
        error = self.refused(message.encode(), max_size=50)
        self.assertEqual(
            (error.reason, error.task_id, error.task), ("too-large", TASK_ID, message.task)
        )
        error = self.refused(b" " * 60, max_size=50)
        self.assertEqual((error.reason, error.task_id), ("too-large", None))

    def test_peek_task(self):
        """
        :py:func:`peek_task` reads only a head written as the client writes
        it.
        """
        self.assertEqual(peek_task(TaskMessage(id=TASK_ID, task="add").encode()), (TASK_ID, "add"))
        self.assertIsNone(peek_task(body()))
        self.assertIsNone(peek_task(b'{"v":1,"id":"' + b"0" * 36 + b'","task":"add",'))


class EncodeRefusalTests(SynchronousTestCase):
    """
    Encoding, which every publish does before anything is sent, refuses a
    message the daemon would dead-letter or that would not arrive as it was
    written.
    """

    def test_id_not_uuid(self):
        """
        A task id that is not a UUID in canonical form is refused: the
        daemon would dead-letter the message without storing a FAILURE.
        """
        for bad in ("my-task-1", TASK_ID.upper(), "", 7):
            message = TaskMessage(id=bad, task="add")
            error = self.assertRaises(MessageError, message.encode)
            self.assertIn("is not a UUID", str(error))
            self.assertEqual(error.task, "add")

    def test_task_name_empty(self):
        """
        An empty or non-string task name is refused, with the task id.
        """
        for bad in ("", None, 3):
            error = self.assertRaises(MessageError, TaskMessage(id=TASK_ID, task=bad).encode)
            self.assertEqual(error.task_id, TASK_ID)

    def test_kwargs_keys_not_strings(self):
        """
        Keyword argument names that are not strings are refused instead of
        being turned into strings (``{1: 'a', '1': 'b'}`` would lose one).
        """
        message = TaskMessage(id=TASK_ID, task="add", kwargs={1: "a", "1": "b"})
        error = self.assertRaises(MessageError, message.encode)
        self.assertIn("keyword argument names must be strings", str(error))
        self.assertIn("1", str(error))
        self.assertEqual((error.task_id, error.task), (TASK_ID, "add"))

    def test_kwargs_not_mapping(self):
        """
        ``kwargs`` that is not a dict is refused.
        """
        message = TaskMessage(id=TASK_ID, task="add", kwargs=[("x", 1)])
        error = self.assertRaises(MessageError, message.encode)
        self.assertIn("kwargs", str(error))

    def test_args_string(self):
        """
        ``args`` as a string is refused: it would run as one argument per
        character.
        """
        for bad in ("abc", b"abc", {"x": 1}, {1, 2}, 5):
            message = TaskMessage(id=TASK_ID, task="add", args=bad)
            error = self.assertRaises(MessageError, message.encode)
            self.assertIn("args must be a list or tuple", str(error))

    def test_args_list_accepted(self):
        """
        ``args`` as a list encodes as the same JSON array as a tuple.
        """
        as_list = TaskMessage(id=TASK_ID, task="add", args=[1, 2]).encode()
        self.assertEqual(as_list, TaskMessage(id=TASK_ID, task="add", args=(1, 2)).encode())

    def test_taskset_eta_retries(self):
        """
        A taskset id, ETA or expiry that is not a string, an ETA that is
        not ISO 8601, or retries that are not a count are refused.
        """
        for changes in (
            {"taskset": 5},
            {"eta": 1700000000},
            {"expires": "tomorrow"},
            {"retries": -1},
            {"retries": True},
        ):
            message = TaskMessage(id=TASK_ID, task="add", **changes)
            self.assertRaises(MessageError, message.encode)
