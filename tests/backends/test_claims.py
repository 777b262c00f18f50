"""
The claim decision of :py:mod:`twistedq.backends.claims`, on documents.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from twistedq.backends.claims import STOPPING, holds_any, is_final_document, is_superseded
from twistedq.outcome import (
    failure_document,
    pending_document,
    retry_document,
    revoked_document,
    success_document,
)

TASK = "00000000-0000-4000-8000-000000000001"


class DecisionTests(SynchronousTestCase):
    def test_what_supersedes(self) -> None:
        """
        A final outcome supersedes every message; a RETRY only copies of
        earlier attempts; a pending record, a dead-lettered failure and no
        outcome none.
        """
        retry = retry_document(TASK, "t", ValueError("x"), retries=2)
        for document in (
            success_document(TASK, "t", 1),
            failure_document(TASK, "t", ValueError("x"), traceback=""),
            revoked_document(TASK, "t", "expired"),
        ):
            self.assertTrue(is_final_document(document))
            self.assertTrue(is_superseded(document, None))
        self.assertEqual([is_superseded(retry, n) for n in (None, 1, 2)], [False, True, False])
        dead = failure_document(TASK, "t", ValueError("x"), traceback="", dead_letter="x")
        for document in (None, pending_document(TASK, "t"), dead, b"not json"):
            self.assertFalse(is_superseded(document, 0))

    def test_stopping_names_every_superseding_status(self) -> None:
        """
        Every document that can supersede a message holds one of
        ``STOPPING``, even when written with spaces; a pending record holds
        none, so a store takes its lease in one step.
        """
        for document in (
            success_document(TASK, "t", 1),
            failure_document(TASK, "t", ValueError("x"), traceback=""),
            revoked_document(TASK, "t", "expired"),
            retry_document(TASK, "t", ValueError("x"), retries=2),
            b'{"status": "SUCCESS", "result": 1}',
        ):
            self.assertTrue(holds_any(document, STOPPING), document)
        self.assertFalse(holds_any(pending_document(TASK, "t"), STOPPING))
        self.assertFalse(holds_any(None, STOPPING))
