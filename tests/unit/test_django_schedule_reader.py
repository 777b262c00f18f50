"""
The daemon's reader of the periodic tasks defined in the Django database,
on a :py:class:`Clock` with a fake database: it reads the rows only when
the schedule revision changed (or after ``reload_every``), survives a
database that fails, and its stop waits for a read under way.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from twistedq.backends.memory import MemoryBackend
from twistedq.contrib.django import schedule_reader
from twistedq.contrib.django.schedule_reader import DatabaseSchedules, database_schedules
from twistedq.scheduler import PeriodicDefinition, Scheduler
from twistedq.schedules import Interval


class FakeDatabase:
    """
    The revision and the definitions; counts the reads of each.
    """

    def __init__(self) -> None:
        self.revision = 0
        self.definitions: list[PeriodicDefinition] = []
        self.unread: dict[str, str] = {}
        self.reads = {"revision": 0, "definitions": 0}
        self.fail = False
        self.hold: defer.Deferred[None] | None = None

    def read_revision(self, alias: str) -> int:
        self.reads["revision"] += 1
        if self.fail:
            raise ConnectionError("database down")
        return self.revision

    def read_definitions(self, alias: str) -> tuple[list[PeriodicDefinition], dict[str, str]]:
        self.reads["definitions"] += 1
        return list(self.definitions), dict(self.unread)

    def run(self, work: Any) -> defer.Deferred[Any]:
        if self.hold is not None:
            return self.hold.addCallback(lambda _: work())
        try:
            return defer.succeed(work())
        except Exception as error:
            return defer.fail(error)


class FakeScheduler:
    def __init__(self) -> None:
        self.given: list[list[str]] = []

    def define_tasks(self, definitions: list[PeriodicDefinition]) -> None:
        self.given.append([definition.name for definition in definitions])


class ReaderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.database = FakeDatabase()
        self.patch(schedule_reader, "read_revision", self.database.read_revision)
        self.patch(schedule_reader, "read_definitions", self.database.read_definitions)
        self.scheduler = FakeScheduler()
        self.reader = DatabaseSchedules(
            self.database.run,
            "default",
            cast(Scheduler, self.scheduler),
            self.clock,
            poll=1.0,
            reload_every=60.0,
        )

    def define(self, *names: str) -> None:
        self.database.definitions = [
            PeriodicDefinition(name, Interval(5), "reports.build") for name in names
        ]
        self.database.revision += 1

    def test_reads_rows_when_revision_changes(self) -> None:
        """
        The rows are read at start, then only after the revision changed:
        the other polls read one number.
        """
        self.define("a")
        self.reader.startService()
        self.clock.advance(1)
        self.clock.advance(1)
        self.assertEqual(self.scheduler.given, [["a"]])
        self.define("a", "b")
        self.clock.advance(1)
        self.assertEqual(self.scheduler.given, [["a"], ["a", "b"]])
        self.assertEqual(self.database.reads, {"revision": 4, "definitions": 2})

    def test_reloads_after_reload_every(self) -> None:
        """
        Without a change of revision the rows are read again every
        ``reload_every`` seconds (rows changed by raw SQL).
        """
        self.reader.startService()
        for _ in range(60):
            self.clock.advance(1)
        self.assertEqual(len(self.scheduler.given), 2)

    def test_database_failure_logged_and_tried_again(self) -> None:
        """
        A read that fails is logged; the next poll tries again.
        """
        self.database.fail = True
        self.define("a")
        self.reader.startService()
        self.assertEqual(self.scheduler.given, [])
        self.database.fail = False
        self.clock.advance(1)
        self.assertEqual(self.scheduler.given, [["a"]])

    def test_stop_waits_for_read(self) -> None:
        """
        A read under way is waited for by the stop (the store's thread
        pool stops after the reader), and a poll does not start a second
        read meanwhile.
        """
        self.database.hold = defer.Deferred()
        self.reader.startService()
        self.clock.advance(1)
        self.assertEqual(self.database.reads["revision"], 0)
        stopped = self.reader.stopService()
        self.assertNoResult(stopped)
        self.database.hold.callback(None)
        self.successResultOf(stopped)

    def test_only_for_the_django_store(self) -> None:
        """
        Other stores have no periodic tasks in a database.
        """
        self.assertIsNone(
            database_schedules(
                MemoryBackend(self.clock), cast(Scheduler, self.scheduler), self.clock
            )
        )

    def test_unreadable_row_logged(self) -> None:
        """
        A row that cannot be read is logged, by name and why, in the
        reactor's thread; the others are scheduled.
        """
        logged: list[dict[str, Any]] = []
        observer = cast(ILogObserver, logged.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.define("a")
        self.database.unread = {"b": "args must be a JSON list and kwargs a JSON object"}
        self.reader.startService()
        self.assertEqual(self.scheduler.given, [["a"]])
        texts = [formatEvent(event) for event in logged]
        self.assertIn(
            "Periodic task b not scheduled: args must be a JSON list and kwargs a JSON object",
            texts,
        )
