"""
Results in the Django project's database (SQLite, PostgreSQL,
MySQL/MariaDB), through the models of ``twistedq.contrib.django``:
``TWISTEDQ_RESULT_BACKEND = "django://"`` (or ``django://<alias>`` for a
database other than ``default``).

The ORM blocks, so every operation runs in a thread pool of its own
(bounded: one thread for SQLite, which has one writer at a time), never on
the reactor; each unit of work closes stale connections before and after,
as a Django request would.  A batch of outcomes is one transaction.

The ``document`` column keeps the outcome document as twistedq encodes it:
JSON with every character past ASCII escaped (a NUL as ``\\u0000``), which
every database holds whole; a document in raw UTF-8 is kept as it is where
the column holds its characters, and escaped to ASCII JSON (the same
value) where not.  The columns that repeat parts of it for the admin (task
name, status, traceback) hold what their database can of the text: a NUL,
a lone surrogate and, in a MySQL column (or connection: Django 4.2's
default) narrower than ``utf8mb4``, any character it lacks, as a
backslash escape; the name cut to 255
characters.  A taskset id its column cannot hold (over 36 characters, or
other than printable ASCII) is kept as a digest of it.

A document over ``max_document_size`` is refused with
:py:class:`~twistedq.backends.base.StoreRefused` before it is parsed or
sent, and so is one that is not a JSON document, or one the database
refuses for good (its data or size limits, rather than an outage).
"""

from __future__ import annotations

import datetime
import json
import re
import socket
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from twisted.internet import defer, threads
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from twistedq.backends.base import (
    DEFAULT_RESULT_TTL,
    IClaimStore,
    IFencedLeases,
    IResultBackend,
    IScheduleStore,
    OutcomeRecord,
    ParkedTask,
    PeriodicState,
    SlotClaim,
    StoreRefused,
    TasksetState,
)
from twistedq.backends.claims import FencedClaims, holds_any
from twistedq.backends.limits import MiB, check_sizes, fitted_id
from twistedq.daemon.periodic import CLEANUP_JOB, RECOVERY_JOB

__all__ = ["DjangoBackend"]

T = TypeVar("T")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _moment(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)


def _seconds(moment: datetime.datetime | None) -> float | None:
    if moment is None:
        return None
    if moment.tzinfo is None:  # a project with USE_TZ = False stores UTC
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def _parse_done(document: dict[str, Any]) -> datetime.datetime | None:
    text = document.get("date_done")
    return datetime.datetime.fromisoformat(text) if text else None


#: The largest statement, by database: PostgreSQL's 1 GiB (a field, and a
#: query's text); SQLite's length limit; MySQL's is its max_allowed_packet,
#: read when connecting.
_STATEMENT = {"postgresql": 1024 * MiB, "sqlite": 1_000_000_000}

#: What a text column cannot hold, by how much of Unicode it holds: all
#: but NUL and lone surrogates (PostgreSQL, SQLite, MySQL's utf8mb4), the
#: Basic Multilingual Plane (MySQL's utf8mb3), or ASCII (any other MySQL
#: character set).
_UNHELD = {
    "full": re.compile("[\x00\ud800-\udfff]"),
    "bmp": re.compile("[\x00\ud800-\udfff\U00010000-\U0010ffff]"),
    "ascii": re.compile("[^\x01-\x7f]"),
}

#: A taskset id its 36-character column holds as it is.
_TASKSET_TEXT = re.compile(r"[!-~]+")

#: MySQL's errors that refuse a value for good: a packet (statement) over
#: max_allowed_packet, a string its column's character set lacks, a value
#: too long for its column.
_MYSQL_REFUSALS = frozenset({1153, 1301, 1366, 1406})


def _refuses_for_good(error: Exception) -> bool:
    """
    Whether a database error refuses the data (the same write fails
    again), rather than telling of an outage.
    """
    from django.db import DataError

    if isinstance(error, DataError):
        return True
    cause = error.__cause__
    sqlstate = getattr(cause, "sqlstate", None) or ""
    if sqlstate[:2] in ("22", "54"):  # data exception, program limit exceeded
        return True
    args: tuple[Any, ...] = getattr(cause, "args", ())
    return len(args) > 0 and args[0] in _MYSQL_REFUSALS


#: The daemons' own periodic jobs: no task, so no result row for them.
OWN_JOBS = frozenset({RECOVERY_JOB, CLEANUP_JOB})


class _Database:
    """
    What the parts of the Django store share: the database alias, the
    thread pool the ORM runs in, and the expiry of rows.
    """

    def __init__(
        self,
        reactor: Any,
        alias: str = "default",
        ttl: int = DEFAULT_RESULT_TTL,
        threads: int = 4,
        worker: str = "",
        max_document_size: int | None = None,
    ) -> None:
        self.reactor = reactor
        self.alias = alias
        self.url = f"django://{alias}"
        self.ttl = ttl
        self.max_threads = threads
        self.worker = worker or socket.gethostname()
        self._worker_name: Callable[[], str] | None = None
        self._pool: ThreadPool | None = None
        self._max_given = max_document_size
        #: The largest document stored, in bytes: a quarter of the
        #: database's largest statement (a document may be written twice in
        #: a row, its traceback repeated, and escaped), unless given.
        self.max_document_size = max_document_size or _STATEMENT["postgresql"] // 4
        self._unheld = _UNHELD["full"]

    def named_by(self, name: Callable[[], str]) -> None:
        """
        Record ``name()``, asked when connecting, in the ``worker`` column
        (the daemon names itself: its pid is known only once it forked).
        """
        self._worker_name = name

    def connect(self) -> defer.Deferred[None]:
        if self._worker_name is not None:
            self.worker = self._worker_name()
        import django
        from django.conf import settings

        if not settings.configured:
            settings._setup()  # reads DJANGO_SETTINGS_MODULE
        django.setup()
        from django.db import connections

        threads = 1 if connections[self.alias].vendor == "sqlite" else self.max_threads
        self._pool = ThreadPool(minthreads=1, maxthreads=threads, name="twistedq-django")
        self._pool.start()
        return self._run(self._read_limits)

    def _read_limits(self) -> None:
        """
        Read the database's largest statement and what its result columns
        hold (in the pool thread).
        """
        from django.db import connections

        connection = connections[self.alias]
        statement = _STATEMENT.get(connection.vendor, _STATEMENT["postgresql"])
        if connection.vendor == "sqlite":
            connection.ensure_connection()
            getlimit = getattr(connection.connection, "getlimit", None)
            if getlimit is not None:
                statement = getlimit(0)  # SQLITE_LIMIT_LENGTH
        elif connection.vendor == "mysql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT @@max_allowed_packet")
                (statement,) = cursor.fetchone()
                cursor.execute(
                    "SELECT DISTINCT character_set_name FROM information_schema.columns"
                    " WHERE table_schema = DATABASE() AND table_name = 'twistedq_taskresult'"
                    " AND column_name IN ('document', 'task_name', 'traceback')"
                )
                charsets = {row[0] for row in cursor.fetchall()}
                # What the connection carries counts too: Django 4.2 opens
                # MySQL connections in utf8 (utf8mb3) unless told otherwise.
                cursor.execute("SELECT @@character_set_connection")
                charsets.add(cursor.fetchone()[0])
            if charsets - {"utf8mb4"}:
                held = charsets <= {"utf8mb4", "utf8mb3", "utf8"}
                self._unheld = _UNHELD["bmp" if held else "ascii"]
        if self._max_given is None:
            self.max_document_size = int(statement) // 4

    def _run(self, work: Callable[[], T]) -> defer.Deferred[T]:
        pool = self._pool
        if pool is None:
            return defer.fail(RuntimeError(f"the result store {self.url} is not connected"))

        def unit() -> T:
            from django.db import close_old_connections

            close_old_connections()
            try:
                return work()
            finally:
                close_old_connections()

        return threads.deferToThreadPool(self.reactor, pool, unit)

    def close(self) -> defer.Deferred[None]:
        pool, self._pool = self._pool, None
        if pool is None:
            return defer.succeed(None)

        def closed() -> None:
            from django.db import connections

            connections.close_all()

        d = threads.deferToThreadPool(self.reactor, pool, closed)
        return d.addBoth(lambda _: pool.stop())

    def _expiry(self) -> datetime.datetime:
        return _now() + datetime.timedelta(seconds=self.ttl)

    def _mark_periodic(self, task_id: str, name: str) -> None:
        """
        Record that periodic task ``name`` published task ``task_id`` (in
        the pool thread): see :py:class:`_ResultRows`.
        """

    def _live_document(self, task_id: str, now: datetime.datetime) -> bytes | None:
        """
        The stored document of a task, unless expired (in the pool thread).
        """
        from twistedq.contrib.django.models import TaskResult

        document = (
            TaskResult.objects.using(self.alias)
            .filter(task_id=task_id, expires_at__gt=now)
            .values_list("document", flat=True)
            .first()
        )
        return None if document is None else document.encode("utf-8")


class _ResultRows(_Database):
    """
    :py:class:`~twistedq.backends.base.IResultBackend` on ``TaskResult``,
    ``TaskSetResult`` and ``TaskSetMember`` rows.
    """

    def store_results(self, records: Sequence[OutcomeRecord]) -> defer.Deferred[None]:
        try:
            self._check([(record.task_id, record.document) for record in records])
        except StoreRefused:
            return defer.fail()
        return self._run(lambda: self._refusing(records, lambda: self._store_now(records)))

    def _check(self, documents: Sequence[tuple[str, bytes]]) -> None:
        check_sizes(documents, self.max_document_size, self.url)

    def _refusing(self, documents: Sequence[Any], work: Callable[[], T]) -> T:
        """
        Run ``work`` (in the pool thread); a database error refusing its
        data for good is raised as a StoreRefused, naming the task where
        ``documents`` (records or task id and document pairs) has one.
        """
        from django.db import DatabaseError

        try:
            return work()
        except DatabaseError as error:
            if not _refuses_for_good(error):
                raise
            task_id = documents[0][0] if len(documents) == 1 else None
            raise StoreRefused(f"{self.url} refused the write: {error}", task_id) from error

    def _column_text(self, text: str) -> str:
        """
        ``text`` as the result table's text columns hold it: what they
        cannot hold as backslash escapes.
        """
        return self._unheld.sub(lambda found: ascii(found.group())[1:-1], text)

    def _taskset(self, taskset_id: str) -> str:
        return fitted_id(taskset_id, 36, _TASKSET_TEXT)

    def _row(self, task_id: str, document: bytes) -> tuple[Any, dict[str, Any]]:
        """
        The ``TaskResult`` row of a document, unsaved, and the document
        parsed; StoreRefused if it is not a JSON object with a status.
        """
        from twistedq.contrib.django.models import TaskResult

        try:
            text = document.decode("utf-8")
            parsed = json.loads(text)
            status = parsed["status"]
            if not isinstance(status, str):
                raise TypeError("its status is not text")
        except (ValueError, KeyError, TypeError) as error:
            raise StoreRefused(
                f"the outcome of task {task_id} is not a JSON document with a status: {error}",
                task_id,
            ) from None
        if self._unheld.search(text):  # raw text this database lacks: escaped
            text = json.dumps(parsed, separators=(",", ":"))
        row = TaskResult(
            task_id=task_id,
            task_name=self._column_text(str(parsed.get("task") or ""))[:255],
            status=self._column_text(status)[:16],
            document=text,
            expires_at=self._expiry(),
        )
        return row, parsed

    def _statements(self, rows: list[Any]) -> list[list[Any]]:
        """
        The rows in groups whose documents together fit in one statement.
        """
        groups: list[list[Any]] = [[]]
        size = 0
        for row in rows:
            if groups[-1] and size + len(row.document) > self.max_document_size:
                groups.append([])
                size = 0
            groups[-1].append(row)
            size += len(row.document)
        return groups

    def _store_now(self, records: Sequence[OutcomeRecord]) -> None:
        """
        Store outcomes, in the calling (pool) thread, as one transaction.
        """
        from django.db import transaction

        from twistedq.arguments import arguments_text
        from twistedq.contrib.django.models import TaskResult, TaskSetMember

        rows = []
        for record in records:
            row, document = self._row(record.task_id, record.document)
            row.traceback = self._column_text(str(document.get("traceback") or ""))
            row.worker = self.worker
            row.date_done = _parse_done(document)
            row.task_args = self._column_text(arguments_text(document.get("task_args")))
            row.task_kwargs = self._column_text(arguments_text(document.get("task_kwargs")))
            row.taskset_id = self._taskset(record.taskset) if record.taskset else ""
            rows.append(row)
        members = [
            TaskSetMember(taskset_id=self._taskset(r.taskset), task_id=r.task_id, failed=r.failed)
            for r in records
            if r.taskset
        ]
        from django.db import connections

        # MySQL/MariaDB upsert on any unique key and take no target.
        target = (
            ["task_id"]
            if connections[self.alias].features.supports_update_conflicts_with_target
            else None
        )
        with transaction.atomic(using=self.alias):
            for group in self._statements(rows):
                TaskResult.objects.using(self.alias).bulk_create(
                    group,
                    update_conflicts=True,
                    unique_fields=target,
                    update_fields=[
                        "task_name",
                        "status",
                        "document",
                        "traceback",
                        "worker",
                        "date_done",
                        "expires_at",
                        "task_args",
                        "task_kwargs",
                        "taskset_id",
                    ],
                )
            if members:
                TaskSetMember.objects.using(self.alias).bulk_create(members, ignore_conflicts=True)

    def _mark_periodic(self, task_id: str, name: str) -> None:
        """
        Record that periodic task ``name`` published task ``task_id``: on its
        result row, made as a pending record if the task has none yet (in
        the pool thread).
        """
        from twistedq.contrib.django.models import TaskResult
        from twistedq.outcome import pending_document

        results = TaskResult.objects.using(self.alias)
        if results.filter(task_id=task_id).update(periodic_task=name[:255]):
            return
        row = self._row(task_id, pending_document(task_id, name))[0]
        row.periodic_task = name[:255]
        results.bulk_create([row], ignore_conflicts=True)
        # An outcome stored meanwhile kept its row: mark it.
        results.filter(task_id=task_id).update(periodic_task=name[:255])

    def mark_sent(self, records: Sequence[tuple[str, bytes]]) -> defer.Deferred[None]:
        try:
            self._check(records)
        except StoreRefused:
            return defer.fail()

        def mark() -> None:
            from twistedq.contrib.django.models import TaskResult

            rows = [self._row(task_id, document)[0] for task_id, document in records]
            for group in self._statements(rows):
                TaskResult.objects.using(self.alias).bulk_create(group, ignore_conflicts=True)

        return self._run(lambda: self._refusing(records, mark))

    def get_result(self, task_id: str) -> defer.Deferred[bytes | None]:
        return self.get_results([task_id]).addCallback(lambda found: found[0])

    def get_results(self, task_ids: Sequence[str]) -> defer.Deferred[list[bytes | None]]:
        ids = list(task_ids)

        def read() -> list[bytes | None]:
            from twistedq.contrib.django.models import TaskResult

            found: dict[str, bytes] = {}
            now = _now()
            for start in range(0, len(ids), 500):
                rows = (
                    TaskResult.objects.using(self.alias)
                    .filter(task_id__in=ids[start : start + 500], expires_at__gt=now)
                    .values_list("task_id", "document")
                )
                for task_id, document in rows:
                    found[task_id] = document.encode("utf-8")
            return [found.get(task_id) for task_id in ids]

        return self._run(read)

    def forget(self, task_ids: Sequence[str]) -> defer.Deferred[None]:
        ids = list(task_ids)

        def delete() -> None:
            from twistedq.contrib.django.models import TaskResult

            TaskResult.objects.using(self.alias).filter(task_id__in=ids).delete()

        return self._run(delete)

    def create_taskset(self, taskset_id: str, total: int) -> defer.Deferred[None]:
        def create() -> None:
            from twistedq.contrib.django.models import TaskSetResult

            TaskSetResult.objects.using(self.alias).update_or_create(
                taskset_id=self._taskset(taskset_id),
                defaults={"total": total, "expires_at": self._expiry()},
            )

        return self._run(create)

    def get_taskset(self, taskset_id: str) -> defer.Deferred[TasksetState | None]:
        def read() -> TasksetState | None:
            from django.db.models import Count, IntegerField, OuterRef, Q, Subquery

            from twistedq.contrib.django.models import TaskSetMember, TaskSetResult

            members = (
                TaskSetMember.objects.using(self.alias)
                .filter(taskset_id=OuterRef("taskset_id"))
                .values("taskset_id")
            )
            row = (
                TaskSetResult.objects.using(self.alias)
                .filter(taskset_id=self._taskset(taskset_id), expires_at__gt=_now())
                .annotate(
                    completed=Subquery(
                        members.annotate(n=Count("id")).values("n"),
                        output_field=IntegerField(),
                    ),
                    failures=Subquery(
                        members.annotate(n=Count("id", filter=Q(failed=True))).values("n"),
                        output_field=IntegerField(),
                    ),
                )
                .values_list("total", "completed", "failures")
                .first()
            )
            if row is None:
                return None
            total, completed, failures = row
            return TasksetState(total, completed or 0, failures or 0)

        return self._run(read)

    def delete_expired(self) -> defer.Deferred[int]:
        """
        Remove expired outcomes and tasksets; fires with how many outcomes.
        """

        def delete() -> int:
            from twistedq.contrib.django.models import (
                ClaimedTask,
                PeriodicSlot,
                TaskResult,
                TaskSetMember,
                TaskSetResult,
            )

            now = _now()
            removed, _ = TaskResult.objects.using(self.alias).filter(expires_at__lte=now).delete()
            expired = TaskSetResult.objects.using(self.alias).filter(expires_at__lte=now)
            TaskSetMember.objects.using(self.alias).filter(
                taskset_id__in=list(expired.values_list("taskset_id", flat=True))
            ).delete()
            expired.delete()
            PeriodicSlot.objects.using(self.alias).filter(expires_at__lte=now).delete()
            ClaimedTask.objects.using(self.alias).filter(expires_at__lte=now).exclude(
                lease_until__gt=now
            ).delete()
            return removed

        return self._run(delete)


class _ScheduleRows(_Database):
    """
    :py:class:`~twistedq.backends.base.IScheduleStore` on a
    ``PeriodicSlot`` row per claimed slot, whose unique key makes one insert
    win, and a ``PeriodicTaskState`` row per task; leases are timed by the
    daemons' clocks.
    """

    def claim_slot(self, key: str, owner: str, lease: float) -> defer.Deferred[SlotClaim]:
        def claim() -> SlotClaim:
            from django.db import IntegrityError, transaction

            from twistedq.contrib.django.models import PeriodicSlot

            slots = PeriodicSlot.objects.using(self.alias)
            now = _now()
            slots.filter(slot_key=key, done=False, expires_at__lte=now).delete()
            try:
                with transaction.atomic(using=self.alias):
                    slots.create(
                        slot_key=key,
                        owner=owner,
                        expires_at=now + datetime.timedelta(seconds=lease),
                    )
                return SlotClaim.WON
            except IntegrityError:
                done = slots.filter(slot_key=key).values_list("done", flat=True).first()
                return SlotClaim.DONE if done else SlotClaim.HELD

        return self._run(claim)

    def release_slot(self, key: str, owner: str) -> defer.Deferred[None]:
        def release() -> None:
            from twistedq.contrib.django.models import PeriodicSlot

            PeriodicSlot.objects.using(self.alias).filter(
                slot_key=key, owner=owner, done=False
            ).delete()

        return self._run(release)

    def _state_row(self, name: str) -> Any:
        """
        The QuerySet of the task's state row, created first if missing.
        """
        from django.db import IntegrityError, transaction

        from twistedq.contrib.django.models import PeriodicTaskState

        states = PeriodicTaskState.objects.using(self.alias)
        if not states.filter(name=name).exists():
            try:
                with transaction.atomic(using=self.alias):
                    states.create(name=name)
            except IntegrityError:
                pass  # another daemon created it meanwhile
        return states.filter(name=name)

    def commit_slot(
        self, key: str, name: str, slot: float, next_run_at: float, keep: float
    ) -> defer.Deferred[None]:
        def commit() -> None:
            from django.db.models import F, Value
            from django.db.models.functions import Coalesce, Greatest

            from twistedq.contrib.django.models import PeriodicSlot

            PeriodicSlot.objects.using(self.alias).update_or_create(
                slot_key=key,
                defaults={
                    "owner": "",
                    "done": True,
                    "expires_at": _now() + datetime.timedelta(seconds=keep),
                },
            )
            if name not in OWN_JOBS:  # no task: no result row
                self._mark_periodic(key, name)
            ran_at = Value(_moment(slot))
            self._state_row(name).update(
                last_run_at=Greatest(Coalesce(F("last_run_at"), ran_at), ran_at),
                total_run_count=F("total_run_count") + 1,
                next_run_at=_moment(next_run_at),
            )

        return self._run(commit)

    def note_schedule(self, name: str, next_run_at: float) -> defer.Deferred[None]:
        return self._run(lambda: self._state_row(name).update(next_run_at=_moment(next_run_at)))

    def set_periodic_enabled(self, name: str, enabled: bool) -> defer.Deferred[None]:
        return self._run(lambda: self._state_row(name).update(enabled=enabled))

    def get_periodic_states(self, names: Sequence[str]) -> defer.Deferred[dict[str, PeriodicState]]:
        def read() -> dict[str, PeriodicState]:
            from twistedq.contrib.django.models import PeriodicTaskState

            rows = PeriodicTaskState.objects.using(self.alias).filter(name__in=list(names))
            return {
                row.name: PeriodicState(
                    row.name,
                    row.enabled,
                    _seconds(row.last_run_at),
                    row.total_run_count,
                    _seconds(row.next_run_at),
                )
                for row in rows
            }

        return self._run(read)


class _ClaimRows(_ResultRows):
    """
    :py:class:`~twistedq.backends.base.IFencedLeases` on a ``ClaimedTask``
    row per task, holding its fence and its lease, and a ``ParkedMessage``
    row per parked message: each step is an ``UPDATE`` whose ``WHERE``
    holds the condition, or an ``INSERT`` only one can make, atomic on
    every database.
    """

    def take_leases(
        self, task_ids: Sequence[str], lease: float, unless: Sequence[bytes] = ()
    ) -> defer.Deferred[list[tuple[int | None, bytes | None]]]:
        def take() -> list[tuple[int | None, bytes | None]]:
            from django.db import transaction

            now = _now()
            answers: list[tuple[int | None, bytes | None]] = []
            for task_id in task_ids:
                with transaction.atomic(using=self.alias):
                    token = self._take_row(task_id, now, now + datetime.timedelta(seconds=lease))
                    # The row is locked now: a commit that ended the last
                    # lease is visible.
                    document = self._live_document(task_id, now)
                    if token is not None and holds_any(document, unless):
                        transaction.set_rollback(True, using=self.alias)
                        token = None
                answers.append((token, document))
            return answers

        return self._run(take)

    def _take_row(
        self, task_id: str, now: datetime.datetime, until: datetime.datetime
    ) -> int | None:
        """
        Lease the task if no live lease is on it, in the pool thread, inside
        a transaction; answers the new token.
        """
        from django.db import IntegrityError, transaction
        from django.db.models import F, Q

        from twistedq.contrib.django.models import ClaimedTask

        rows = ClaimedTask.objects.using(self.alias)
        lapsed = Q(lease_until__isnull=True) | Q(lease_until__lte=now)
        raised = rows.filter(lapsed, task_id=task_id).update(
            token=F("token") + 1, lease_until=until, expires_at=self._expiry()
        )
        if raised:
            return int(rows.filter(task_id=task_id).values_list("token", flat=True).get())
        try:
            with transaction.atomic(using=self.alias):
                rows.create(task_id=task_id, lease_until=until, expires_at=self._expiry())
            return 1
        except IntegrityError:  # a row exists with a live lease
            return None

    def extend_leases(
        self, claims: Sequence[tuple[str, int]], lease: float
    ) -> defer.Deferred[list[bool]]:
        def renew() -> list[bool]:
            from twistedq.contrib.django.models import ClaimedTask

            now = _now()
            until = now + datetime.timedelta(seconds=lease)
            rows = ClaimedTask.objects.using(self.alias)
            return [
                rows.filter(task_id=task_id, token=token, lease_until__gt=now).update(
                    lease_until=until, expires_at=self._expiry()
                )
                == 1
                for task_id, token in claims
            ]

        return self._run(renew)

    def end_leases(self, claims: Sequence[tuple[str, int]]) -> defer.Deferred[None]:
        def release() -> None:
            from twistedq.contrib.django.models import ClaimedTask

            rows = ClaimedTask.objects.using(self.alias)
            for task_id, token in claims:
                rows.filter(task_id=task_id, token=token).update(lease_until=None)

        return self._run(release)

    def commit_fenced(
        self, records: Sequence[OutcomeRecord], tokens: Sequence[int]
    ) -> defer.Deferred[list[bool]]:
        def commit() -> list[bool]:
            from django.db import transaction

            from twistedq.contrib.django.models import ClaimedTask, ParkedMessage

            rows = ClaimedTask.objects.using(self.alias)
            with transaction.atomic(using=self.alias):
                committed = [
                    rows.filter(task_id=record.task_id, token=token).update(lease_until=None) == 1
                    for record, token in zip(records, tokens, strict=True)
                ]
                done = [r for r, ok in zip(records, committed, strict=True) if ok]
                if done:
                    self._store_now(done)
                    ParkedMessage.objects.using(self.alias).filter(
                        task_id__in=[r.task_id for r in done]
                    ).delete()
            return committed

        try:
            self._check([(record.task_id, record.document) for record in records])
        except StoreRefused:
            return defer.fail()
        return self._run(lambda: self._refusing(records, commit))

    def park_leased(self, parked: Sequence[ParkedTask]) -> defer.Deferred[list[bool]]:
        def park() -> list[bool]:
            from django.db import transaction

            from twistedq.contrib.django.models import ClaimedTask, ParkedMessage

            answers = []
            for task in parked:
                with transaction.atomic(using=self.alias):
                    current = (
                        ClaimedTask.objects.using(self.alias)
                        .select_for_update()
                        .filter(task_id=task.task_id, token=task.token, lease_until__gt=_now())
                        .exists()
                    )
                    if current:
                        ParkedMessage.objects.using(self.alias).update_or_create(
                            task_id=task.task_id,
                            defaults={"token": task.token, "queue": task.queue, "body": task.body},
                        )
                answers.append(current)
            return answers

        return self._run(park)

    def unleased_parked(self, most: int) -> defer.Deferred[list[tuple[ParkedTask, bytes | None]]]:
        def find() -> list[tuple[ParkedTask, bytes | None]]:
            from twistedq.contrib.django.models import ClaimedTask, ParkedMessage

            now = _now()
            live = ClaimedTask.objects.using(self.alias).filter(lease_until__gt=now)
            unleased = ParkedMessage.objects.using(self.alias).exclude(
                task_id__in=live.values("task_id")
            )
            return [
                (
                    ParkedTask(row.task_id, row.token, row.queue, bytes(row.body)),
                    self._live_document(row.task_id, now),
                )
                for row in unleased.order_by("id")[:most]
            ]

        return self._run(find)

    def drop_parked(self, task_ids: Sequence[str]) -> defer.Deferred[None]:
        def drop() -> None:
            from twistedq.contrib.django.models import ParkedMessage

            ParkedMessage.objects.using(self.alias).filter(task_id__in=list(task_ids)).delete()

        return self._run(drop)


@implementer(IResultBackend, IScheduleStore, IClaimStore, IFencedLeases)
class DjangoBackend(_ClaimRows, _ScheduleRows, FencedClaims):
    """
    A result backend in a Django database.

    :param alias: the database alias in ``DATABASES``.
    :param ttl: seconds an outcome is kept.
    :param threads: the most ORM threads (SQLite always uses one).
    :param worker: recorded in each result's ``worker`` column (by
        default this host's name).
    """

    @classmethod
    def from_url(cls, url: str, reactor: Any, ttl: int = DEFAULT_RESULT_TTL) -> DjangoBackend:
        """
        Build from ``django://`` or ``django://<alias>``.
        """
        alias = url.split("://", 1)[1].strip("/") or "default"
        return cls(reactor, alias, ttl)
