"""
Tests for the dashboard's revoke and terminate actions
(:py:func:`twistedq.dashboard.daemon.operator_actions`).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from twistedq.amqp.broker import Topology
from twistedq.dashboard.actions import ActionRefused
from twistedq.dashboard.daemon import _known_periodic, operator_actions

ONE = "3cfbaabc-eb48-42dc-9baa-d70eecb39fbc"
TWO = "5d1d6a6e-0a4c-4bd4-9a44-9c2f3e0f4b21"


class FakeClient:
    def __init__(self) -> None:
        self.revoked: list[tuple[list[str], str]] = []

    def revoke(self, ids: list[str], reason: str) -> defer.Deferred[list[str]]:
        self.revoked.append((ids, reason))
        return defer.succeed([])  # both were taken by daemons already


class FakeControl:
    def __init__(self, replies: list[dict[str, Any]]) -> None:
        self.replies = replies
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def broadcast(self, command: str, arguments: dict[str, Any], timeout: float) -> Any:
        self.sent.append((command, arguments))
        return defer.succeed(self.replies)


class RevokeActionTests(SynchronousTestCase):
    def actions(self, replies: list[dict[str, Any]]) -> tuple[Any, FakeClient, FakeControl]:
        client, control = FakeClient(), FakeControl(replies)
        made = operator_actions(
            "t" * 20, lambda: client, None, Topology("twistedq", "twistedq"), control, None
        )
        return made, client, control

    def test_revoke_drops_held_tasks(self) -> None:
        """
        Revoke asks the daemons too (without terminate), so that a task a
        daemon holds but has not started is dropped; one running is said
        to be running.
        """
        replies = [
            {"ok": True, "reply": {"revoked": [ONE], "terminated": [], "running": []}},
            {"ok": True, "reply": {"revoked": [], "terminated": [], "running": [TWO]}},
        ]
        actions, client, control = self.actions(replies)
        answer = self.successResultOf(actions.run("revoke", {"ids": [ONE, TWO]}))
        self.assertEqual(client.revoked, [([ONE, TWO], "revoked from the dashboard")])
        self.assertEqual(control.sent, [("revoke", {"ids": [ONE, TWO], "terminate": False})])
        self.assertEqual(answer, {"revoked": [ONE], "terminated": [], "running": [TWO]})

    def test_terminate(self) -> None:
        """
        Terminate asks the daemons to kill the children running the tasks.
        """
        replies = [{"ok": True, "reply": {"revoked": [], "terminated": [TWO], "running": [TWO]}}]
        actions, _, control = self.actions(replies)
        answer = self.successResultOf(actions.run("terminate", {"ids": [TWO]}))
        self.assertEqual(control.sent, [("revoke", {"ids": [TWO], "terminate": True})])
        self.assertEqual(answer, {"revoked": [], "terminated": [TWO], "running": []})


class FakeEntry:
    def __init__(self, job: object | None = None) -> None:
        self.job = job


class FakeScheduler:
    def __init__(self) -> None:
        self.entries = {"report": FakeEntry(), "twistedq.recover_parked_tasks": FakeEntry(object())}
        self.set: list[tuple[str, bool]] = []

    def set_enabled(self, name: str, enabled: bool) -> defer.Deferred[None]:
        self.set.append((name, enabled))
        return defer.succeed(None)


class PauseActionTests(SynchronousTestCase):
    def test_known_periodic_tasks_only(self) -> None:
        """
        Pause and resume take the periodic tasks the scheduler publishes;
        an unknown name and the daemon's own jobs are refused (400), and
        nothing is written to the store for them.
        """
        scheduler = FakeScheduler()
        actions = operator_actions(
            "t" * 20,
            FakeClient,
            None,
            Topology("twistedq", "twistedq"),
            None,
            _known_periodic(scheduler),
        )
        answer = self.successResultOf(actions.run("pause", {"name": "report"}))
        self.assertEqual(answer, {"name": "report", "enabled": False})
        for name in ("nope", "twistedq.recover_parked_tasks", "x" * 5000):
            self.assertRaises(ActionRefused, actions.run, "pause", {"name": name})
        self.assertEqual(scheduler.set, [("report", False)])
