"""
The daemon's side of the periodic tasks defined in the Django database:
a service that hands them to the scheduler and keeps them current.

Every ``poll`` seconds it reads one number, the schedule revision
(:py:class:`~twistedq.contrib.django.schedule_models.ScheduleRevision`,
bumped by every save or delete of a periodic task or schedule); when it
changed, and every ``reload_every`` seconds in any case (for rows changed
by raw SQL), it reads the rows that define a task and gives them to
:py:meth:`twistedq.scheduler.Scheduler.define_tasks`.  Slots are claimed
in the store as for the tasks declared in code, so each runs once across
daemons.  Reads run in the Django store's own thread pool.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from twistedq.backends.base import IResultBackend
from twistedq.scheduler import PeriodicDefinition, Scheduler

__all__ = ["DatabaseSchedules", "database_schedules", "definition_of"]

log = Logger()

#: How far before a one-off task's start its slot may be (a start time
#: that falls on a slot runs that slot).
_ON_SLOT = 0.001


_UTC = datetime.timezone.utc


def _seconds(moment: datetime.datetime | None, zone: datetime.tzinfo) -> float | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.timestamp()


def definition_of(row: Any, zone: datetime.tzinfo = _UTC) -> PeriodicDefinition:
    """
    The scheduler's definition of a periodic task row defined in the
    database.  A one-off task's window holds one slot: the first at or
    after its start time and after its last save, the same in every
    daemon.

    :param zone: the zone of times without one (``TIME_ZONE``, in a
        project with ``USE_TZ = False``).
    :raises ValueError: the row's schedule or arguments cannot be read.
    """
    schedule = row.schedule()
    args = json.loads(row.args)
    kwargs = json.loads(row.kwargs)
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise ValueError("args must be a JSON list and kwargs a JSON object")
    starts, ends = _seconds(row.start_time, zone), _seconds(row.expires, zone)
    if row.one_off:
        saved = _seconds(row.updated_at, zone) or 0.0
        first = schedule.next_slot(max(saved, (starts or 0.0) - _ON_SLOT))
        starts, ends = first, first if ends is None else min(first, ends)
    return PeriodicDefinition(
        name=row.name,
        schedule=schedule,
        task=row.task,
        args=tuple(args),
        kwargs=kwargs,
        queue=row.queue or None,
        starts=starts,
        ends=ends,
        one_off=row.one_off,
        enabled=row.enabled,
    )


def read_revision(alias: str) -> int:
    """
    The schedule revision (0 before any change), in a thread with Django.
    """
    from twistedq.contrib.django.schedule_models import ScheduleRevision

    revision = ScheduleRevision.objects.using(alias).filter(pk=1).values_list("revision")
    found = revision.first()
    return int(found[0]) if found else 0


def read_definitions(alias: str) -> tuple[list[PeriodicDefinition], dict[str, str]]:
    """
    The definitions of the periodic task rows that define a task, in a
    thread with Django, and why each row that cannot be read is left out
    (by name).
    """
    from django.db.models import Q
    from django.utils import timezone

    from twistedq.contrib.django.schedule_models import PeriodicTaskState

    zone = timezone.get_default_timezone()
    rows = (
        PeriodicTaskState.objects.using(alias)
        .filter(Q(interval__isnull=False) | Q(crontab__isnull=False))
        .select_related("interval", "crontab")
    )
    definitions, unread = [], {}
    for row in rows:
        try:
            definitions.append(definition_of(row, zone))
        except (TypeError, ValueError) as error:
            unread[row.name] = str(error)
    return definitions, unread


class DatabaseSchedules(Service):
    """
    Keeps a scheduler's defined tasks equal to the Django database's.

    :param run: runs a function in the Django store's thread pool and
        gives its result (:py:class:`~twistedq.contrib.django.store.DjangoBackend`'s).
    :param alias: the database alias.
    :param scheduler: the scheduler given the definitions.
    :param clock: the reactor, or a :py:class:`~twisted.internet.task.Clock`.
    :param poll: seconds between reads of the schedule revision.
    :param reload_every: seconds after which the rows are read again even
        if the revision did not change.
    """

    name = "database-schedules"

    def __init__(
        self,
        run: Any,
        alias: str,
        scheduler: Scheduler,
        clock: Any,
        poll: float = 1.0,
        reload_every: float = 60.0,
    ) -> None:
        self.run = run
        self.alias = alias
        self.scheduler = scheduler
        self.clock = clock
        self.poll = poll
        self.reload_every = reload_every
        #: The revision of the definitions given to the scheduler.
        self.revision: int | None = None
        self._loaded_at = 0.0
        self._loop = LoopingCall(self._look)
        self._loop.clock = clock
        self._looking: defer.Deferred[None] | None = None

    def startService(self) -> None:
        Service.startService(self)
        self._loop.start(self.poll, now=True)

    def stopService(self) -> defer.Deferred[None]:
        Service.stopService(self)
        if self._loop.running:
            self._loop.stop()
        looking = self._looking
        if looking is None:
            return defer.succeed(None)
        done: defer.Deferred[None] = defer.Deferred()
        looking.addBoth(lambda _: done.callback(None))
        return done

    def _look(self) -> None:
        if self._looking is not None:
            return
        self._looking = defer.ensureDeferred(self._refresh())
        self._looking.addErrback(
            lambda failure: log.warn(
                "Cannot read the periodic tasks defined in the database: {error}",
                error=failure.value,
            )
        )
        self._looking.addBoth(self._looked)

    def _looked(self, _: Any) -> None:
        self._looking = None

    async def _refresh(self) -> None:
        revision = await self.run(lambda: read_revision(self.alias))
        stale = self.clock.seconds() - self._loaded_at >= self.reload_every
        if revision == self.revision and not stale:
            return
        definitions, unread = await self.run(lambda: read_definitions(self.alias))
        for name, error in unread.items():
            log.error("Periodic task {name} not scheduled: {error}", name=name, error=error)
        self.scheduler.define_tasks(definitions)
        self.revision = revision
        self._loaded_at = self.clock.seconds()


def database_schedules(
    backend: IResultBackend, scheduler: Scheduler, clock: Any
) -> DatabaseSchedules | None:
    """
    The service reading the periodic tasks defined in the database when
    ``backend`` is the Django store; None for the other stores.
    """
    from twistedq.contrib.django.store import DjangoBackend

    if not isinstance(backend, DjangoBackend):
        return None
    return DatabaseSchedules(backend._run, backend.alias, scheduler, clock)
