"""
The scheduler's defined periodic tasks (those the Django admin defines),
on a :py:class:`Clock` with the memory store: their messages, their
window, one-off runs, changes that keep their place in time, removal, and
code-declared tasks taking precedence.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.fakes import START, FakeBroker
from tests.unit.test_scheduler import Daemon, advance
from twistedq.backends.memory import MemoryBackend
from twistedq.scheduler import PeriodicDefinition, slot_task_id
from twistedq.schedules import Interval


def every(seconds: float, **kwargs: Any) -> PeriodicDefinition:
    return PeriodicDefinition(
        name="db.report",
        schedule=Interval(seconds),
        task="reports.build",
        args=(1, "two"),
        kwargs={"key": "value"},
        **kwargs,
    )


class DefinedTaskTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemoryBackend(self.clock)
        self.broker = FakeBroker()

    def daemon(self, *definitions: PeriodicDefinition) -> Daemon:
        daemon = Daemon(self.clock, self.store, self.broker)
        daemon.scheduler.define_tasks(list(definitions))
        daemon.scheduler.startService()
        self.addCleanup(daemon.scheduler.stopService)
        return daemon

    def slots(self) -> list[float]:
        """
        The slots published, as seconds after START, from the message ids.
        """
        ids = {slot_task_id("db.report", START + s / 4): s / 4 for s in range(400)}
        return [ids[message.id] for message in self.broker.messages]

    def test_two_daemons_publish_task_with_arguments_once_per_slot(self) -> None:
        """
        Two schedulers given the same definition publish each slot once,
        as the defined task with its arguments, to its queue, under the
        slot's id (named by the periodic task, not the task).
        """
        self.daemon(every(2, queue="reports"))
        self.daemon(every(2, queue="reports"))
        advance(self.clock, 10)
        self.assertEqual(self.slots(), [0, 2, 4, 6, 8, 10])
        message = self.broker.messages[0]
        self.assertEqual(
            (message.task, message.args, message.kwargs),
            ("reports.build", (1, "two"), {"key": "value"}),
        )
        self.assertEqual(set(self.broker.queues), {"reports"})

    def test_window(self) -> None:
        """
        No slot before ``starts`` or after ``ends`` runs.
        """
        self.daemon(every(1, starts=START + 3, ends=START + 6))
        advance(self.clock, 10)
        self.assertEqual(self.slots(), [3, 4, 5, 6])

    def test_change_keeps_place_in_time(self) -> None:
        """
        A definition changed to another interval runs on the new one from
        the change on: no slot of the old one after it, no catch-up, no
        slot twice.
        """
        first = self.daemon(every(4))
        second = self.daemon(every(4))
        advance(self.clock, 8.25)
        for daemon in (first, second):
            daemon.scheduler.define_tasks([every(1)])
        advance(self.clock, 3)
        self.assertEqual(self.slots(), [0, 4, 8, 9, 10, 11])

    def test_removed_and_disabled(self) -> None:
        """
        A definition no longer given, or given disabled (and so stored:
        the Django store's row is both), runs no more.
        """
        removed = self.daemon(every(1))
        advance(self.clock, 2)
        removed.scheduler.define_tasks([])
        advance(self.clock, 2)
        self.assertEqual(self.slots(), [0, 1, 2])
        self.assertNotIn("db.report", removed.scheduler.entries)
        self.successResultOf(self.store.set_periodic_enabled("db.report", False))
        removed.scheduler.define_tasks([every(1, enabled=False)])
        advance(self.clock, 2)
        self.assertEqual(self.slots(), [0, 1, 2])

    def test_one_off_runs_once_and_pauses(self) -> None:
        """
        A one-off definition whose window holds one slot runs that slot
        once across daemons and is paused in the store.
        """
        definition = every(1, starts=START + 2, ends=START + 2, one_off=True)
        self.daemon(definition)
        self.daemon(definition)
        advance(self.clock, 6)
        self.assertEqual(self.slots(), [2])
        state = self.successResultOf(self.store.get_periodic_states(["db.report"]))
        self.assertFalse(state["db.report"].enabled)

    def test_code_declared_task_wins(self) -> None:
        """
        A definition named like a task declared in code is left out: the
        code's task keeps running, without arguments.
        """
        daemon = Daemon(self.clock, self.store, self.broker)
        daemon.scheduler.add_tasks({"db.report": {"every": 1.0}})
        daemon.scheduler.define_tasks([every(1)])
        daemon.scheduler.startService()
        self.addCleanup(daemon.scheduler.stopService)
        advance(self.clock, 1)
        self.assertEqual([m.task for m in self.broker.messages], ["db.report", "db.report"])
        self.assertEqual(self.broker.messages[0].args, ())
        self.assertEqual(len(self.flushLoggedErrors()), 0)
