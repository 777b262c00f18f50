"""
``twistedq status`` lists the task queue's delay queues with their
messages and the age of the oldest, and flags one whose oldest message is
there longer than its wait plus
:py:data:`~twistedq.cli.session.OVERDUE_MARGIN` (the broker does not
release it): status 1 and a line on stderr naming it.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.unit.test_cli import FakeSession, Run, _succeed, reply
from twistedq.cli.session import OVERDUE_MARGIN, DelayQueue


class DelayQueueStatusTests(SynchronousTestCase):
    def session(self, delays: list[DelayQueue]) -> FakeSession:
        stats = {"pool": {"children": 2, "busy": 0}, "dispatcher": {"completed": 1, "failed": 0}}
        session = FakeSession(
            broadcast={
                "ping": [reply("a:1", {"pong": True, "uptime": 60})],
                "inspect.stats": [reply("a:1", stats)],
            },
            queue_counts={"jobs": (0, 2), "jobs.dead": (0, 0)},
            delay_queues=delays,
        )
        connection: Any = type("C", (), {"address": "amqp://guest@h:5672//"})()
        session.connection = lambda: _succeed(connection)  # type: ignore[method-assign]
        return session

    def test_overdue(self) -> None:
        delays = [
            DelayQueue("jobs.delay.2", 2, 3, 1.5),
            DelayQueue("jobs.delay.64", 64, 601, 64 + OVERDUE_MARGIN + 536),
            DelayQueue("jobs.delay.1024", 1024, 0, None),
        ]
        run = Run(self, self.session(delays), "status")
        self.assertEqual(run.status, 1)
        lines = run.out.getvalue().splitlines()
        self.assertEqual(lines[1], "queue         jobs: 0 ready, 2 consumers")
        self.assertEqual(
            lines[2].split(),
            ["delay", "queues", "jobs.delay.2:", "3", "waiting,", "oldest", "1.5s"],
        )
        self.assertIn("jobs.delay.64: 601 waiting, oldest 11m00s OVERDUE (waits 64 s)", lines[3])
        self.assertEqual(lines[4].strip(), "jobs.delay.1024: 0 waiting")
        self.assertIn("dead letters", lines[5])
        self.assertIn("past their wait in jobs.delay.64", run.err.getvalue())

    def test_on_time_json(self) -> None:
        delays = [DelayQueue("jobs.delay.64", 64, 10, 64 + OVERDUE_MARGIN - 1)]
        run = Run(self, self.session(delays), "status", "--json")
        self.assertEqual(run.status, 0)
        document = json.loads(run.out.getvalue())
        self.assertEqual(
            document["delay_queues"],
            [
                {
                    "name": "jobs.delay.64",
                    "seconds": 64,
                    "ready": 10,
                    "oldest_age": 123.0,
                    "overdue": False,
                }
            ],
        )
