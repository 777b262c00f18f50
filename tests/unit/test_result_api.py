"""
Tests for :py:obj:`twistedq.result.AsyncResult` and
:py:obj:`twistedq.result.TaskSetResult` against the fake client (over the
memory store), and for the taskset status document.
"""

import json
import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from tests.unit.fakes import FakeClient, in_child
from twistedq.backends.base import TasksetState
from twistedq.message import new_task_id
from twistedq.outcome import (
    RemoteTaskError,
    failure_document,
    pending_document,
    revoked_document,
    success_document,
    taskset_status_document,
)
from twistedq.result import (
    AsyncResult,
    Status,
    TaskRevokedError,
    TaskSetResult,
    WaitInTaskError,
)


class AsyncResultStateTests(SynchronousTestCase):
    """
    The state predicates of :py:obj:`AsyncResult` for each kind of record.
    """

    def result_for(self, document_for=None, seed_states=False):
        task_id = new_task_id()
        outcomes = {}
        if document_for is not None:
            outcomes[task_id] = document_for(task_id)
        client = FakeClient(outcomes, seed_states=seed_states)
        return AsyncResult(task_id, client), client

    def test_unknown(self):
        """
        An id with no record is PENDING, not ready, not known, not queued.
        """
        result, _ = self.result_for()
        self.assertEqual(result.status, "PENDING")
        self.assertFalse(result.ready())
        self.assertFalse(result.successful())
        self.assertFalse(result.failed())
        self.assertFalse(result.is_done())
        self.assertFalse(result.known())
        self.assertFalse(result.queued())
        self.assertIsNone(result.result)

    def test_pending_record(self):
        """
        A published task with no outcome yet is PENDING, known and queued,
        not ready.
        """
        result, _ = self.result_for(lambda i: pending_document(i, "add"))
        self.assertEqual(result.status, "PENDING")
        self.assertFalse(result.ready())
        self.assertTrue(result.known())
        self.assertTrue(result.queued())
        self.assertFalse(result.successful())
        self.assertIsNone(result.result)

    def test_success(self):
        """
        A success is SUCCESS, ready, successful, done, known and no longer
        queued; ``result`` is the value.
        """
        result, _ = self.result_for(lambda i: success_document(i, "add", [1, {"a": 2}]))
        self.assertEqual(result.status, "SUCCESS")
        self.assertTrue(result.ready())
        self.assertTrue(result.successful())
        self.assertTrue(result.is_done())
        self.assertFalse(result.failed())
        self.assertTrue(result.known())
        self.assertFalse(result.queued())
        self.assertEqual(result.result, [1, {"a": 2}])

    def test_failure(self):
        """
        A failure is FAILURE, ready, failed and not successful; ``result``
        is the rebuilt exception, carrying the remote traceback.
        """
        result, _ = self.result_for(
            lambda i: failure_document(i, "add", ValueError("bad", 7), traceback="TB")
        )
        self.assertEqual(result.status, "FAILURE")
        self.assertTrue(result.ready())
        self.assertTrue(result.failed())
        self.assertFalse(result.successful())
        self.assertFalse(result.queued())
        exception = result.result
        self.assertIsInstance(exception, ValueError)
        self.assertEqual(exception.args, ("bad", 7))
        self.assertEqual(exception.remote_traceback, "TB")
        self.assertEqual(result.traceback, "TB")

    def test_revoked(self):
        """
        A revoked task is REVOKED, ready, neither successful nor failed.
        """
        result, _ = self.result_for(lambda i: revoked_document(i, "add", "expired"))
        self.assertEqual(result.status, "REVOKED")
        self.assertTrue(result.ready())
        self.assertFalse(result.successful())
        self.assertFalse(result.failed())
        self.assertTrue(result.known())

    def test_status_is_callable_string(self):
        """
        ``status`` is a :py:obj:`Status`, a string that may also be called as
        the seed's ``result.status()``.
        """
        result, _ = self.result_for(lambda i: success_document(i, "add", 1))
        self.assertIsInstance(result.status, Status)
        self.assertIsInstance(result.status, str)
        self.assertEqual(result.status(), "SUCCESS")
        self.assertEqual(result.state, "SUCCESS")

    def test_seed_states(self):
        """
        With ``seed_states`` a success reads as the seed's DONE (called or
        not) and is still successful; other states are unchanged.
        """
        result, _ = self.result_for(lambda i: success_document(i, "add", 1), seed_states=True)
        self.assertEqual(result.status, "DONE")
        self.assertEqual(result.status(), "DONE")
        self.assertTrue(result.successful())
        failed, _ = self.result_for(
            lambda i: failure_document(i, "add", ValueError("x")), seed_states=True
        )
        self.assertEqual(failed.status(), "FAILURE")
        pending, _ = self.result_for(seed_states=True)
        self.assertEqual(pending.status(), "PENDING")

    def test_ready_outcome_cached(self):
        """
        Once an outcome is ready it is not read from the store again.
        """
        result, client = self.result_for(lambda i: success_document(i, "add", 1))
        result.status  # noqa: B018
        result.ready()
        result.get()
        self.assertEqual(client.get_outcome_calls, 1)

    def test_pending_outcome_read_again(self):
        """
        A pending outcome is read again, so a later success is seen.
        """
        result, client = self.result_for()
        self.assertFalse(result.ready())
        client.put(result.task_id, success_document(result.task_id, "add", 5))
        self.assertTrue(result.ready())
        self.assertEqual(result.result, 5)
        self.assertEqual(client.get_outcome_calls, 2)

    def test_equality(self):
        """
        Two results of the same id are equal and hash alike.
        """
        task_id = new_task_id()
        self.assertEqual(AsyncResult(task_id), AsyncResult(task_id, FakeClient()))
        self.assertEqual(len({AsyncResult(task_id), AsyncResult(task_id)}), 1)
        self.assertNotEqual(AsyncResult(task_id), AsyncResult(new_task_id()))


class AsyncResultGetTests(SynchronousTestCase):
    """
    ``get()`` returns the value, raises the task's exception, or times out.
    """

    def result_for(self, document_for=None):
        task_id = new_task_id()
        outcomes = {} if document_for is None else {task_id: document_for(task_id)}
        client = FakeClient(outcomes)
        return AsyncResult(task_id, client), client

    def test_value(self):
        """
        ``get()`` of a success returns the value; ``wait`` is the same.
        """
        result, _ = self.result_for(lambda i: success_document(i, "add", 42))
        self.assertEqual(result.get(), 42)
        self.assertEqual(result.wait(), 42)

    def test_raises_rebuilt(self):
        """
        ``get()`` of a failure raises the rebuilt exception.
        """
        result, _ = self.result_for(lambda i: failure_document(i, "add", KeyError("k")))
        with self.assertRaises(KeyError) as caught:
            result.get()
        self.assertEqual(caught.exception.args, ("k",))

    def test_raises_remote_error(self):
        """
        An exception whose class cannot be rebuilt here is raised as a
        :py:obj:`RemoteTaskError` naming the original class.
        """
        document = {
            "id": "x",
            "status": "FAILURE",
            "exc": {
                "module": "no_such_module_here",
                "type": "Gone",
                "message": "lost",
                "args": ["lost"],
            },
            "traceback": "TB",
        }
        result, _ = self.result_for(lambda i: json.dumps({**document, "id": i}).encode())
        with self.assertRaises(RemoteTaskError) as caught:
            result.get()
        self.assertEqual(caught.exception.exc_type, "Gone")
        self.assertEqual(caught.exception.traceback, "TB")

    def test_revoked(self):
        """
        ``get()`` of a revoked task raises :py:obj:`TaskRevokedError`
        carrying the reason.
        """
        result, _ = self.result_for(lambda i: revoked_document(i, "add", "expired at noon"))
        with self.assertRaises(TaskRevokedError) as caught:
            result.get()
        self.assertIn("expired at noon", str(caught.exception))

    def test_timeout(self):
        """
        ``get(timeout=0.01)`` of a task that stays pending raises
        :py:obj:`TimeoutError`.
        """
        result, client = self.result_for(lambda i: pending_document(i, "add"))
        self.assertRaises(TimeoutError, result.get, timeout=0.01)
        self.assertGreater(client.get_outcome_calls, 1)

    def test_zero_timeout(self):
        """
        ``get(timeout=0)`` of a pending task raises at once.
        """
        result, _ = self.result_for()
        self.assertRaises(TimeoutError, result.get, timeout=0)

    def test_zero_timeout_ready(self):
        """
        ``get(timeout=0)`` of a finished task returns its value.
        """
        result, _ = self.result_for(lambda i: success_document(i, "add", "v"))
        self.assertEqual(result.get(timeout=0), "v")

    def test_in_task(self):
        """
        ``get()`` inside a task raises :py:obj:`WaitInTaskError` at once,
        without reading the store.
        """
        result, client = self.result_for(lambda i: success_document(i, "add", 1))
        in_child(self)
        with self.assertRaises(WaitInTaskError) as caught:
            result.get()
        self.assertIn("Process-1", str(caught.exception))
        self.assertEqual(client.get_outcome_calls, 0)

    def test_forget(self):
        """
        ``forget()`` asks the client to delete the task's outcome and drops
        the cached one, so the task reads as unknown afterwards.
        """
        result, client = self.result_for(lambda i: success_document(i, "add", 1))
        self.assertTrue(result.successful())
        result.forget()
        self.assertEqual(client.forgotten, [[result.task_id]])
        self.assertEqual(result.status, "PENDING")
        self.assertFalse(result.known())


def subtasks(client, count):
    return [AsyncResult(new_task_id(), client) for _ in range(count)]


class TaskSetResultTests(SynchronousTestCase):
    """
    Progress of a taskset comes from one store read per call.
    """

    def taskset(self, state, count=3):
        """
        A taskset of ``count`` subtasks whose progress in the store is
        ``state`` (None: the store does not know it): the first
        ``state.completed`` subtasks stored, the first ``state.failed`` of
        them failed.  Also its client.
        """
        taskset_id = new_task_id()
        client = FakeClient()
        subs = subtasks(client, count)
        if state is not None:
            client.create_taskset(taskset_id, state.total)
            for n, sub in enumerate(subs[: state.completed]):
                if n < state.failed:
                    document = failure_document(sub.task_id, "add", ValueError("x"))
                else:
                    document = success_document(sub.task_id, "add", n)
                client.put(sub.task_id, document, taskset_id)
            self.assertEqual(self.successResultOf(client.store.get_taskset(taskset_id)), state)
        return TaskSetResult(taskset_id, subs, client), client

    def test_completed_count_one_read(self):
        """
        ``completed_count()`` is the store's completed count, read with
        exactly one ``get_taskset`` call and no outcome read.
        """
        result, client = self.taskset(TasksetState(3, 2, 1))
        self.assertEqual(result.completed_count(), 2)
        self.assertEqual(client.get_taskset_calls, 1)
        self.assertEqual(client.get_outcome_calls, 0)
        self.assertEqual(client.get_outcomes_calls, [])

    def test_partly_done(self):
        """
        With 2 of 3 finished, one failed: not ready, waiting, failed, not
        successful.
        """
        result, client = self.taskset(TasksetState(3, 2, 1))
        self.assertEqual(result.total, 3)
        self.assertFalse(result.ready())
        self.assertTrue(result.waiting())
        self.assertTrue(result.failed())
        self.assertFalse(result.successful())
        self.assertEqual(client.get_taskset_calls, 4)

    def test_all_done(self):
        """
        With every subtask finished and none failed: ready, not waiting,
        successful, not failed.
        """
        result, _ = self.taskset(TasksetState(3, 3, 0))
        self.assertTrue(result.ready())
        self.assertFalse(result.waiting())
        self.assertTrue(result.successful())
        self.assertFalse(result.failed())

    def test_all_done_with_failure(self):
        """
        Every subtask finished, one failed: ready but not successful.
        """
        result, _ = self.taskset(TasksetState(3, 3, 1))
        self.assertTrue(result.ready())
        self.assertFalse(result.successful())
        self.assertTrue(result.failed())

    def test_unknown_taskset(self):
        """
        A taskset the store does not know has nothing completed.
        """
        result, _ = self.taskset(None)
        self.assertEqual(result.completed_count(), 0)
        self.assertFalse(result.ready())
        self.assertFalse(result.failed())

    def finished(self, documents):
        """
        A complete taskset whose subtasks have the given outcome documents
        (functions of the task id), and its client.
        """
        taskset_id = new_task_id()
        client = FakeClient()
        subs = subtasks(client, len(documents))
        client.create_taskset(taskset_id, len(subs))
        # Stored in reverse, so order cannot come from the store.
        for sub, document_for in reversed(list(zip(subs, documents, strict=True))):
            client.put(sub.task_id, document_for(sub.task_id), taskset_id)
        return TaskSetResult(taskset_id, subs, client), client

    def test_join_in_order(self):
        """
        ``join()`` returns the values in subtask order.
        """
        result, _ = self.finished(
            [lambda i, n=n: success_document(i, "add", n * 10) for n in range(5)]
        )
        self.assertEqual(result.join(), [0, 10, 20, 30, 40])

    def test_join_first_failure(self):
        """
        ``join()`` raises the exception of the first failed subtask in
        subtask order.
        """
        result, _ = self.finished(
            [
                lambda i: success_document(i, "t", 1),
                lambda i: failure_document(i, "t", ValueError("first")),
                lambda i: failure_document(i, "t", KeyError("second")),
            ]
        )
        with self.assertRaises(ValueError) as caught:
            result.join()
        self.assertEqual(str(caught.exception), "first")

    def test_join_revoked(self):
        """
        ``join()`` of a taskset with a revoked subtask raises
        :py:obj:`TaskRevokedError`, as ``get()`` and ``iterate()`` of that
        subtask do, instead of passing None off as its value.
        """
        result, _ = self.finished(
            [
                lambda i: success_document(i, "t", 1),
                lambda i: revoked_document(i, "t", "expired"),
            ]
        )
        self.assertRaises(TaskRevokedError, lambda: list(result.iterate()))
        self.assertRaises(TaskRevokedError, result.join)

    def test_join_many(self):
        """
        ``join()`` of more than 1000 subtasks reads the outcomes in chunks
        of 1000 and keeps the order.
        """
        result, client = self.finished(
            [lambda i, n=n: success_document(i, "t", n) for n in range(1001)]
        )
        self.assertEqual(result.join(), list(range(1001)))
        self.assertEqual([len(c) for c in client.get_outcomes_calls], [1000, 1])

    def test_join_timeout(self):
        """
        ``join(timeout=0)`` of an unfinished taskset raises
        :py:obj:`TimeoutError` without reading outcomes.
        """
        result, client = self.taskset(TasksetState(3, 1, 0))
        self.assertRaises(TimeoutError, result.join, timeout=0)
        self.assertEqual(client.get_outcomes_calls, [])

    def test_join_in_task(self):
        """
        ``join()`` inside a task raises :py:obj:`WaitInTaskError` without
        reading the store.
        """
        result, client = self.taskset(TasksetState(3, 3, 0))
        in_child(self)
        self.assertRaises(WaitInTaskError, result.join)
        self.assertEqual(client.get_taskset_calls, 0)

    def test_iterate_in_order(self):
        """
        ``iterate()`` yields the values in subtask order.
        """
        result, _ = self.finished(
            [lambda i, n=n: success_document(i, "t", f"v{n}") for n in range(4)]
        )
        self.assertEqual(list(result.iterate()), ["v0", "v1", "v2", "v3"])

    def test_iterate_failure_in_turn(self):
        """
        ``iterate()`` yields the values before a failed subtask, then raises
        its exception.
        """
        result, _ = self.finished(
            [
                lambda i: success_document(i, "t", "a"),
                lambda i: failure_document(i, "t", ZeroDivisionError("z")),
                lambda i: success_document(i, "t", "c"),
            ]
        )
        values = result.iterate()
        self.assertEqual(next(values), "a")
        self.assertRaises(ZeroDivisionError, next, values)


class TasksetStatusDocumentTests(SynchronousTestCase):
    """
    The JSON of the taskset status URL.
    """

    def test_unknown(self):
        """
        An unknown taskset has total 0, nothing completed, not ready.
        """
        self.assertEqual(
            taskset_status_document("ts", None),
            {"taskset": {"id": "ts", "total": 0, "completed": 0, "failed": 0, "ready": False}},
        )

    def test_in_progress(self):
        """
        A taskset part-way through reports its counts and is not ready.
        """
        self.assertEqual(
            taskset_status_document("ts", TasksetState(500, 120, 2)),
            {
                "taskset": {
                    "id": "ts",
                    "total": 500,
                    "completed": 120,
                    "failed": 2,
                    "ready": False,
                }
            },
        )

    def test_complete(self):
        """
        A taskset whose every subtask completed is ready.
        """
        document = taskset_status_document("ts", TasksetState(5, 5, 1))
        self.assertTrue(document["taskset"]["ready"])
        self.assertEqual(document["taskset"]["failed"], 1)


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class DefaultClientTests(SynchronousTestCase):
    def test_result_module_alone(self):
        """
        A process that imports only :py:mod:`twistedq.result` reads an
        ``AsyncResult(task_id)`` with the default client built from the
        environment (it raised LookupError: no default client), as
        doc/workflows.rst shows.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        store = os.path.join(directory, "results.sqlite3")
        task, taskset = new_task_id(), new_task_id()
        script = (
            "from twistedq.result import AsyncResult, TaskSetResult\n"
            f"print(AsyncResult({task!r}).status, TaskSetResult({taskset!r}, []).completed_count())"
        )
        env = dict(os.environ, TWISTEDQ_RESULT_BACKEND=f"sqlite:///{store}")
        env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
        )
        self.assertEqual((done.returncode, done.stdout), (0, "PENDING 0\n"), done.stderr)
