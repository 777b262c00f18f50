"""
Tests of how the ``twistedq`` command's session reports a result store it
cannot use: a refused Redis login at once, an SQLite file that cannot be
opened, a store that does not answer.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python import log
from twisted.trial.unittest import SynchronousTestCase

from twistedq.cli.errors import EXIT_UNREACHABLE, Unreachable
from twistedq.cli.session import Session
from twistedq.conf import Settings

TASK_ID = "5f0c6a52-2a8e-4d0e-9a51-0d4c1e7f3b10"


class FakeClient:
    """
    A client whose store answers ``answer``: a Deferred, or an exception
    to fail with.
    """

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def _call(self) -> defer.Deferred[Any]:
        if isinstance(self.answer, Exception):
            return defer.fail(self.answer)
        return self.answer

    def get_outcomes(self, task_ids: Any) -> defer.Deferred[Any]:
        return self._call()

    def revoke(self, task_ids: Any) -> defer.Deferred[Any]:
        return self._call()


def session(backend: str, answer: Any) -> tuple[Session, Clock]:
    clock = Clock()
    made = Session(Settings(result_backend=backend), clock, timeout=5.0)
    made._client = FakeClient(answer)  # type: ignore[assignment]
    return made, clock


class StoreErrorTests(SynchronousTestCase):
    def test_refused_redis_login_at_once(self) -> None:
        """
        The Redis client's "could not auth" log line ends the wait at once
        (no time passed) as Unreachable (status 3) saying the store refused
        and why, the password left out.
        """
        store, _ = session("redis://:s3cretpw@127.0.0.1:6999/0", defer.Deferred())
        for call in (lambda: store.outcomes([TASK_ID]), lambda: store.revoke([TASK_ID])):
            waiting = defer.Deferred.fromCoroutine(call())
            self.assertNoResult(waiting)
            log.msg("Redis error: could not auth: WRONGPASS s3cretpw is\nwrong")
            error = self.failureResultOf(waiting, Unreachable).value
            self.assertEqual(
                str(error),
                "the result store at redis://:***@127.0.0.1:6999/0 refused: "
                "could not auth: WRONGPASS *** is wrong",
            )
            self.assertEqual(error.status, EXIT_UNREACHABLE)

    def test_other_log_lines_do_not_end_the_wait(self) -> None:
        answer: defer.Deferred[Any] = defer.Deferred()
        store, _ = session("redis://127.0.0.1:6999/0", answer)
        waiting = defer.Deferred.fromCoroutine(store.outcomes([TASK_ID]))
        log.msg("something else")
        self.assertNoResult(waiting)
        answer.callback(["found"])
        self.assertEqual(self.successResultOf(waiting), ["found"])
        log.msg("Redis error: could not auth: late")  # after the answer: ignored

    def test_unusable_sqlite_file(self) -> None:
        """
        An SQLite error (a file that cannot be opened) is Unreachable,
        naming the store.
        """
        failure = sqlite3.OperationalError("unable to open database file")
        store, _ = session("sqlite:////nonexistent/dir/x.db", failure)
        error = self.failureResultOf(
            defer.Deferred.fromCoroutine(store.outcomes([TASK_ID])), Unreachable
        ).value
        self.assertEqual(
            str(error),
            "cannot use the result store at sqlite:////nonexistent/dir/x.db: "
            "OperationalError: unable to open database file",
        )

    def test_silent_store_times_out(self) -> None:
        store, clock = session("redis://127.0.0.1:6999/0", defer.Deferred())
        waiting = defer.Deferred.fromCoroutine(store.outcomes([TASK_ID]))
        clock.advance(5)
        error = self.failureResultOf(waiting, Unreachable).value
        self.assertIn("did not answer within 5 s", str(error))
