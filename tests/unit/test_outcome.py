"""
Tests for :py:obj:`twistedq.outcome`.
"""

import json

from twisted.trial.unittest import SynchronousTestCase

from twistedq.outcome import (
    Outcome,
    RemoteTaskError,
    failure_document,
    status_document,
    success_document,
)

TASK_ID = "0b0c8a34-9a4b-4d8e-8b59-3f5ad0c1e7a2"


class CustomError(Exception):
    """
    An importable exception with two arguments.
    """

    def __init__(self, code, detail):
        super().__init__(code, detail)
        self.code = code
        self.detail = detail


class Outer:
    class InnerError(Exception):
        """
        An exception nested in a class.
        """


class StrictError(Exception):
    """
    An exception whose constructor refuses what it was built with remotely.
    """

    def __init__(self, value):
        if not isinstance(value, int):
            raise TypeError("int please")
        super().__init__(value)


def raise_and_document(exception):
    try:
        raise exception
    except BaseException as e:
        return failure_document(TASK_ID, "mytask", e)


class DocumentTests(SynchronousTestCase):
    """
    The stored JSON documents.
    """

    def test_success(self):
        """
        A success document holds id, task, status SUCCESS, the result and a
        UTC completion time.
        """
        document = json.loads(success_document(TASK_ID, "add", {"sum": [3, "é"]}))
        date_done = document.pop("date_done")
        self.assertEqual(
            document,
            {"id": TASK_ID, "task": "add", "status": "SUCCESS", "result": {"sum": [3, "é"]}},
        )
        self.assertTrue(date_done.endswith("+00:00"), date_done)

    def test_success_non_json(self):
        """
        A result that is not a JSON value raises ``TypeError``.
        """
        self.assertRaises(TypeError, success_document, TASK_ID, "t", object())
        self.assertRaises(TypeError, success_document, TASK_ID, "t", {"s": {1, 2}})

    def test_success_nan(self):
        """
        A NaN result raises ``ValueError``.
        """
        self.assertRaises(ValueError, success_document, TASK_ID, "t", float("nan"))

    def test_failure(self):
        """
        A failure document holds the exception's module, type, message, args
        and the traceback.
        """
        document = json.loads(raise_and_document(ValueError("bad", 2)))
        document.pop("date_done")
        traceback = document.pop("traceback")
        self.assertEqual(
            document,
            {
                "id": TASK_ID,
                "task": "mytask",
                "status": "FAILURE",
                "result": None,
                "exc": {
                    "module": "builtins",
                    "type": "ValueError",
                    "message": "('bad', 2)",
                    "args": ["bad", 2],
                },
            },
        )
        self.assertIn("raise_and_document", traceback)
        self.assertIn("ValueError: ('bad', 2)", traceback)

    def test_failure_given_traceback(self):
        """
        An explicit traceback text is stored as given.
        """
        document = json.loads(failure_document(TASK_ID, "t", KeyError("k"), traceback="tb"))
        self.assertEqual(document["traceback"], "tb")

    def test_failure_non_json_args(self):
        """
        Exception arguments that are not JSON values are stored as null.
        """
        document = json.loads(raise_and_document(ValueError(object())))
        self.assertIsNone(document["exc"]["args"])
        self.assertIn("object object at", document["exc"]["message"])

    def test_failure_nested_class(self):
        """
        The type of a nested exception class is its qualified name.
        """
        document = json.loads(raise_and_document(Outer.InnerError("x")))
        self.assertEqual(document["exc"]["module"], __name__)
        self.assertEqual(document["exc"]["type"], "Outer.InnerError")


class FromBytesTests(SynchronousTestCase):
    """
    ``Outcome.from_bytes`` parses stored documents.
    """

    def test_none_is_pending(self):
        """
        No document means PENDING, not ready.
        """
        outcome = Outcome.from_bytes(TASK_ID, None)
        self.assertEqual(outcome, Outcome(task_id=TASK_ID, status="PENDING"))
        self.assertFalse(outcome.ready)

    def test_success(self):
        """
        A success document parses to a ready SUCCESS outcome with its result.
        """
        outcome = Outcome.from_bytes(TASK_ID, success_document(TASK_ID, "add", [1, 2]))
        self.assertEqual(
            (outcome.task_id, outcome.status, outcome.result, outcome.task),
            (TASK_ID, "SUCCESS", [1, 2], "add"),
        )
        self.assertTrue(outcome.ready)
        self.assertIsNone(outcome.exc)

    def test_failure(self):
        """
        A failure document parses to a ready FAILURE outcome with exc and
        traceback.
        """
        outcome = Outcome.from_bytes(TASK_ID, raise_and_document(ValueError("bad")))
        self.assertEqual(outcome.status, "FAILURE")
        self.assertTrue(outcome.ready)
        self.assertEqual(outcome.exc["type"], "ValueError")
        self.assertIn("Traceback", outcome.traceback)


class ExceptionTests(SynchronousTestCase):
    """
    ``Outcome.exception`` rebuilds the exception a task raised.
    """

    def outcome(self, exception):
        return Outcome.from_bytes(TASK_ID, raise_and_document(exception))

    def test_builtin(self):
        """
        A builtin exception is rebuilt with its class and arguments, carrying
        the remote traceback.
        """
        outcome = self.outcome(ValueError("bad", 2))
        rebuilt = outcome.exception()
        self.assertIs(type(rebuilt), ValueError)
        self.assertEqual(rebuilt.args, ("bad", 2))
        self.assertEqual(rebuilt.remote_traceback, outcome.traceback)

    def test_importable_custom(self):
        """
        An importable custom exception is rebuilt from its arguments.
        """
        rebuilt = self.outcome(CustomError(404, "missing")).exception()
        self.assertIs(type(rebuilt), CustomError)
        self.assertEqual((rebuilt.code, rebuilt.detail), (404, "missing"))

    def test_nested_class(self):
        """
        An exception class nested in a class is found by its qualified name.
        """
        rebuilt = self.outcome(Outer.InnerError("x")).exception()
        self.assertIs(type(rebuilt), Outer.InnerError)

    def test_unimportable(self):
        """
        An exception whose module cannot be imported becomes a
        :py:obj:`RemoteTaskError` that names the original class.
        """
        outcome = Outcome(
            task_id=TASK_ID,
            status="FAILURE",
            exc={"module": "no.such.module", "type": "GoneError", "message": "m", "args": ["m"]},
            traceback="tb text",
        )
        rebuilt = outcome.exception()
        self.assertIs(type(rebuilt), RemoteTaskError)
        self.assertEqual(
            (rebuilt.exc_module, rebuilt.exc_type, rebuilt.message, rebuilt.traceback),
            ("no.such.module", "GoneError", "m", "tb text"),
        )
        self.assertEqual(str(rebuilt), "GoneError: m")
        self.assertEqual(rebuilt.remote_traceback, "tb text")

    def test_missing_class(self):
        """
        A class missing from an importable module becomes a
        :py:obj:`RemoteTaskError`.
        """
        outcome = Outcome(
            task_id=TASK_ID,
            status="FAILURE",
            exc={"module": __name__, "type": "NotHere", "message": "m", "args": []},
        )
        self.assertIs(type(outcome.exception()), RemoteTaskError)

    def test_constructor_fails(self):
        """
        An exception whose constructor fails on the stored arguments becomes a
        :py:obj:`RemoteTaskError`.
        """
        outcome = self.outcome(StrictError(5))
        outcome = Outcome(
            task_id=TASK_ID,
            status="FAILURE",
            exc={**outcome.exc, "args": ["five"]},
            traceback=outcome.traceback,
        )
        rebuilt = outcome.exception()
        self.assertIs(type(rebuilt), RemoteTaskError)
        self.assertEqual(rebuilt.exc_type, "StrictError")

    def test_custom_wrong_arity(self):
        """
        An exception that cannot be rebuilt from ``args`` (its constructor
        takes other arguments) becomes a :py:obj:`RemoteTaskError`.
        """

        outcome = Outcome(
            task_id=TASK_ID,
            status="FAILURE",
            exc={"module": __name__, "type": "CustomError", "message": "m", "args": ["m"]},
        )
        self.assertIs(type(outcome.exception()), RemoteTaskError)

    def test_args_not_json(self):
        """
        Without stored arguments the exception is a :py:obj:`RemoteTaskError`
        carrying the message.
        """
        rebuilt = self.outcome(ValueError(object())).exception()
        self.assertIs(type(rebuilt), RemoteTaskError)
        self.assertEqual(rebuilt.exc_type, "ValueError")

    def test_not_an_exception_class(self):
        """
        A stored type that is not an exception class is never called.
        """
        outcome = Outcome(
            task_id=TASK_ID,
            status="FAILURE",
            exc={"module": "os", "type": "system", "message": "m", "args": ["true"]},
        )
        self.assertIs(type(outcome.exception()), RemoteTaskError)

    def test_system_exit(self):
        """
        ``SystemExit`` is not rebuilt (raising it would exit the client).
        """
        rebuilt = self.outcome(SystemExit(3)).exception()
        self.assertIs(type(rebuilt), RemoteTaskError)
        self.assertEqual(rebuilt.exc_type, "SystemExit")


class StatusDocumentTests(SynchronousTestCase):
    """
    The status JSON of ``/celery/<task_id>/status/``.
    """

    def test_pending(self):
        """
        PENDING has a null result.
        """
        self.assertEqual(
            status_document(Outcome.pending(TASK_ID)),
            {"task": {"id": TASK_ID, "status": "PENDING", "result": None}},
        )

    def test_success(self):
        """
        SUCCESS carries the result.
        """
        outcome = Outcome.from_bytes(TASK_ID, success_document(TASK_ID, "add", 42))
        self.assertEqual(
            status_document(outcome),
            {"task": {"id": TASK_ID, "status": "SUCCESS", "result": 42}},
        )

    def test_failure(self):
        """
        FAILURE carries the message as result, the class name as exc and the
        traceback.
        """
        outcome = Outcome(
            task_id=TASK_ID,
            status="FAILURE",
            exc={"module": "builtins", "type": "KeyError", "message": "'k'", "args": ["k"]},
            traceback="Traceback ...",
        )
        self.assertEqual(
            status_document(outcome),
            {
                "task": {
                    "id": TASK_ID,
                    "status": "FAILURE",
                    "result": "'k'",
                    "exc": "KeyError",
                    "traceback": "Traceback ...",
                }
            },
        )
