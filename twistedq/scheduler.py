"""
The scheduler of periodic tasks: a service in every daemon, and each slot
of a schedule still runs once.

Every daemon runs a :py:class:`Scheduler`.  On each tick (a
:py:class:`~twisted.internet.task.LoopingCall`, a quarter second by
default) it finds the slots (:py:mod:`twistedq.schedules`) that came due
since the last tick.  A slot gets a deterministic task id,
:py:func:`slot_task_id` (a UUID 5 of the task name and the slot), so every
daemon names it alike, and is claimed in the result store
(:py:class:`~twistedq.backends.base.IScheduleStore`) under a lease.  The
daemon that wins publishes the task with publisher confirms, then marks the
slot done and counts the run in the task's periodic state; the others find
the slot held or done and move on.  A daemon that dies between its claim and
its commit leaves a lease that lapses; the daemons that found the slot held
look again after the lease and one of them publishes it.  The id is also the
task's, so the consumer's duplicate check stops a second run of a slot
published twice.

Catching up: the task's ``catch_up`` policy applies to every gap, whatever
caused it: when a daemon starts and the slots since the task's
``last_run_at`` were all missed (no daemon ran), when the wall clock steps
forward, when the daemon was held up longer than ``grace`` (its tick came
late), and when the broker or the store could not be reached.  A slot
that could not be claimed or published is tried again every second until
the next slot of its task comes due; from then on it is missed.  A claim
answered only once its slot was missed (the store held it through an
outage) is let go, and the slot is missed too; a claim whose answer was
lost is released (owner-checked) before its slot is claimed again.
``"once"`` runs one slot for the whole gap: the latest one due when the
gap ends (the next slot itself, if it comes first); ``"skip"`` runs none
of the missed slots, and the task waits for its next slot.

Clock steps: slots are instants of the wall clock, but the scheduler's own
time never runs backward.  After the wall clock steps back, it keeps moving
from where it was at the pace of the monotonic clock, so no slot runs twice
and none stalls; it rejoins the wall clock when the wall clock catches up.

Pausing: a task whose stored state says ``enabled = False`` (the Django
admin's tick box, or :py:meth:`Scheduler.set_enabled`) has its slots
skipped until it is enabled again; the states are read every few seconds.

Defined tasks: besides the tasks declared in code, the scheduler runs
:py:class:`PeriodicDefinition` values given to
:py:meth:`Scheduler.define_tasks` (the Django admin's periodic tasks): a
task name with its arguments, and a window outside which no slot runs.  A
changed definition keeps its place in time (no slot runs twice, none is
caught up); a one-off definition is paused once its slot ran.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, cast

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from twistedq.backends.base import IScheduleStore, PeriodicState, SlotClaim
from twistedq.message import TaskMessage
from twistedq.schedules import Crontab, Interval, schedule_from_spec, slots_between

__all__ = ["LocalJob", "PeriodicDefinition", "Scheduler", "slot_task_id"]

log = Logger()

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://twistedq.invalid/periodic-slot")


def slot_task_id(name: str, slot: float) -> str:
    """
    The task id of one slot of a periodic task: the same in every daemon.
    """
    return str(uuid.uuid5(_NAMESPACE, f"{name}\n{slot!r}"))


@dataclass
class LocalJob:
    """
    A periodic job the daemon runs itself instead of publishing a task
    (the clean-up of expired results); claimed per slot like a task.
    """

    name: str
    schedule: Interval | Crontab
    run: Callable[[], Awaitable[Any]]
    catch_up: str = "skip"


@dataclass(frozen=True)
class PeriodicDefinition:
    """
    A periodic task defined as data rather than declared in code: publish
    ``task`` with ``args`` and ``kwargs`` on each slot of ``schedule``.

    :ivar name: the periodic task's own name, which names its slots (unique
        among periodic tasks).
    :ivar queue: the queue to publish to; None for the daemon's.
    :ivar starts: no slot earlier than this runs (seconds since the epoch).
    :ivar ends: no slot later than this runs.
    :ivar one_off: pause the task once a slot of it ran.
    :ivar enabled: whether it runs (the stored state says so too).
    """

    name: str
    schedule: Interval | Crontab
    task: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue: str | None = None
    starts: float | None = None
    ends: float | None = None
    one_off: bool = False
    enabled: bool = True
    catch_up: str = "once"

    def allows(self, slot: float) -> bool:
        """
        Whether ``slot`` lies in the definition's window.
        """
        return (self.starts is None or slot >= self.starts) and (
            self.ends is None or slot <= self.ends
        )


@dataclass
class _Entry:
    name: str
    schedule: Interval | Crontab
    catch_up: str
    queue: str | None = None
    job: LocalJob | None = None
    #: Its slots' messages say ignore_result (a task declared so in code).
    ignore_result: bool = False
    enabled: bool = True
    #: What it was defined from, when not declared in code.
    definition: PeriodicDefinition | None = None
    #: The scheduler time up to which slots were looked at.
    cursor: float | None = None
    #: Slots found held by another daemon: slot to the monotonic time at
    #: which to look again.
    recheck: dict[float, float] = field(default_factory=dict)
    #: Slots found held by another daemon and not yet seen done, each to
    #: whether it was missed (its next slot due) when first found held.
    held: dict[float, bool] = field(default_factory=dict)
    #: Slots whose claim got no answer (an error, a timeout): the store may
    #: have taken the claim all the same, for this daemon, which could not
    #: know it.  Such a claim is released before the slot is claimed again.
    unsure: set[float] = field(default_factory=set)
    #: Slots this daemon could not claim or publish: slot to the monotonic
    #: time at which to try again.
    retry: dict[float, float] = field(default_factory=dict)
    #: Whether slots were missed since one last ran.
    in_gap: bool = False
    #: Slots being claimed or published now.
    busy: set[float] = field(default_factory=set)
    #: Publishes under way, by slot.
    publishing: dict[float, defer.Deferred[Any]] = field(default_factory=dict)


class _SchedulerTime:
    """
    The scheduler's time: the wall clock's, except that it never runs
    backward (after a step back it moves on at the pace of the monotonic
    clock until the wall clock catches up), and that a forward step, or a
    tick later than ``grace`` after the one before, is told apart.
    """

    def __init__(
        self,
        wall: Callable[[], float],
        monotonic: Callable[[], float],
        step_tolerance: float,
        grace: float,
    ) -> None:
        self.wall = wall
        self.monotonic = monotonic
        self.step_tolerance = step_tolerance
        self.grace = grace
        #: The scheduler's time at the last tick (None before the first).
        self.now: float | None = None
        #: The monotonic clock at the last tick.
        self.now_monotonic = 0.0
        self._behind_wall_clock = False

    def advance(self) -> tuple[float, float | None]:
        """
        The scheduler's time now, and where a forward step of the wall
        clock began (None if there was none).
        """
        wall, mono = self.wall(), self.monotonic()
        previous = self.now
        if previous is None:
            now, stepped_from = wall, None
        else:
            expected = previous + (mono - self.now_monotonic)
            if wall < expected - self.step_tolerance:
                if not self._behind_wall_clock:
                    log.warn(
                        "The wall clock stepped back {by:.1f} s; the scheduler keeps its own "
                        "time until the wall clock catches up",
                        by=expected - wall,
                    )
                    self._behind_wall_clock = True
                now, stepped_from = expected, None
            elif wall > expected + self.step_tolerance:
                log.warn(
                    "The wall clock stepped forward {by:.1f} s; missed slots follow each "
                    "task's catch-up policy",
                    by=wall - expected,
                )
                now, stepped_from = wall, expected
            else:
                self._behind_wall_clock = False
                now, stepped_from = max(wall, previous), None
                if now - previous > self.grace:
                    log.warn(
                        "The scheduler was held up {by:.1f} s; missed slots follow each "
                        "task's catch-up policy",
                        by=now - previous,
                    )
        self.now, self.now_monotonic = now, mono
        return now, stepped_from

    def current(self) -> float:
        """
        The scheduler's time now, between ticks: its time at the last tick
        moved on by the monotonic clock.
        """
        if self.now is None:
            return self.wall()
        return self.now + (self.monotonic() - self.now_monotonic)


class Scheduler(Service):
    """
    Publishes the due slots of periodic tasks, once across daemons.

    :param store: where slots are claimed and periodic states kept.
    :param publish: ``publish(message, queue)``, confirmed by the broker
        when it fires (:py:meth:`twistedq.amqp.broker.Publisher.publish`).
    :param clock: the reactor (or a :py:class:`~twisted.internet.task.Clock`)
        for the tick.
    :param wall: the wall clock, seconds since the epoch.
    :param monotonic: a clock that never steps.
    :param tick: seconds between looks at the schedules.
    :param lease: seconds a claim holds a slot before it lapses; longer than
        a publish may take.
    :param keep: seconds a published slot is remembered as done.
    :param default_tz: the time zone of crontabs that name none.
    :param state_refresh: seconds between reads of the periodic states
        (pauses take effect within this time).
    :param step_tolerance: a difference between the wall clock and the
        monotonic clock larger than this, in seconds, is a clock step.
    :param grace: a tick that comes more than this many seconds after the
        one before (the daemon was held up) treats the slots in between as
        missed: they follow each task's catch-up policy.
    """

    name = "scheduler"

    def __init__(
        self,
        store: IScheduleStore,
        publish: Callable[[TaskMessage, str | None], Awaitable[None]],
        clock: Any,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        tick: float = 0.25,
        lease: float = 15.0,
        keep: float = 3600.0,
        default_tz: str | None = None,
        state_refresh: float = 2.0,
        step_tolerance: float = 1.0,
        owner: str | None = None,
        grace: float = 5.0,
    ) -> None:
        self.store = store
        self.clock = clock
        self.tick = tick
        self.lease = lease
        self.default_tz = default_tz
        self.state_refresh = state_refresh
        self.grace = grace
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.entries: dict[str, _Entry] = {}
        self.time = _SchedulerTime(wall, monotonic, step_tolerance, grace)
        self.slots = _SlotRuns(store, publish, clock, self.time, self.owner, lease, keep)
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock
        self._states_read_at: float | None = None
        self._starting = False
        self._refreshing = False
        self._pending: set[defer.Deferred[None]] = set()

    @property
    def published(self) -> int:
        """
        Slots run or published by this daemon.
        """
        return self.slots.published

    @property
    def failures(self) -> int:
        """
        Claims, publishes and jobs of this daemon that failed.
        """
        return self.slots.failures

    # configuration

    def add_tasks(self, specs: dict[str, dict[str, Any]]) -> None:
        """
        Schedule periodic tasks from their specs
        (:py:meth:`twistedq.task.PeriodicTask.schedule_spec`, as the
        children report them).  A spec that cannot be read is logged and
        left out.
        """
        for name, spec in specs.items():
            try:
                schedule = schedule_from_spec(spec, self.default_tz)
            except (TypeError, ValueError) as error:
                log.error("Periodic task {name} not scheduled: {error}", name=name, error=error)
                continue
            self.entries[name] = _Entry(
                name,
                schedule,
                spec.get("catch_up", "once"),
                queue=spec.get("queue"),
                ignore_result=spec.get("ignore_result") is True,
            )

    def define_tasks(self, definitions: list[PeriodicDefinition]) -> None:
        """
        Make ``definitions`` the defined periodic tasks: add the new ones,
        change the changed ones (they keep their place in time: no slot
        runs twice, none is caught up), remove those no longer given.  A
        definition named like a task declared in code or a job is logged
        and left out.
        """
        given = {definition.name: definition for definition in definitions}
        for name, entry in list(self.entries.items()):
            if entry.definition is not None and name not in given:
                del self.entries[name]
                log.info("Periodic task {name} removed", name=name)
        for name, definition in given.items():
            current = self.entries.get(name)
            if current is not None and current.definition is None:
                log.error(
                    "Periodic task {name} is declared in code: its definition is ignored",
                    name=name,
                )
            elif current is None or current.definition != definition:
                self.entries[name] = _defined_entry(definition, current)
                log.info(
                    "Periodic task {name} {what}: {task} on {schedule}{paused}",
                    name=name,
                    what="defined" if current is None else "changed",
                    task=definition.task,
                    schedule=definition.schedule,
                    paused="" if definition.enabled else " (paused)",
                )

    def add_job(self, job: LocalJob) -> None:
        """
        Schedule a job the daemon runs itself.
        """
        self.entries[job.name] = _Entry(job.name, job.schedule, job.catch_up, job=job)

    def set_enabled(self, name: str, enabled: bool) -> defer.Deferred[None]:
        """
        Pause or resume a periodic task in every daemon (through the store).
        """
        if name in self.entries:
            self.entries[name].enabled = enabled
        return self.store.set_periodic_enabled(name, enabled)

    # service

    def startService(self) -> None:
        Service.startService(self)
        self._loop.start(self.tick, now=True).addErrback(
            lambda failure: log.failure("The scheduler stopped", failure)
        )

    def stopService(self) -> defer.Deferred[None]:
        Service.stopService(self)
        if self._loop.running:
            self._loop.stop()
        # Let claims and publishes under way finish, so none is left held.
        pending = list(self._pending)
        return defer.DeferredList(pending).addCallback(lambda _: None)

    def stats(self) -> dict[str, Any]:
        """
        Counters and each task's next slot, for the status resource.
        """
        now = self.time.current()
        return {
            "published": self.slots.published,
            "failures": self.slots.failures,
            "tasks": {
                name: {
                    "enabled": entry.enabled,
                    "next_run_at": entry.schedule.next_slot(now),
                }
                for name, entry in self.entries.items()
            },
        }

    # time

    # the tick

    def _tick(self) -> None:
        try:
            self._look()
        except Exception:
            log.failure("Scheduler tick failed; trying again on the next one")

    def _look(self) -> None:
        new = [entry for entry in self.entries.values() if entry.cursor is None]
        if new and not self._starting:
            self._track(self._start_entries(new))
        if self._states_read_at is None:
            return  # until the states are read
        now, stepped_from = self.time.advance()
        mono = self.time.now_monotonic
        if mono - self._states_read_at >= self.state_refresh and not self._refreshing:
            self._track(self._refresh_states())
        for entry in self.entries.values():
            if entry.cursor is None:
                continue
            due = self._due(entry, now, stepped_from)
            entry.cursor = now
            self._cancel_superseded(entry, now)
            due += self._rechecks_due(entry, now, mono)
            due += self._retries_due(entry, now, mono)
            self._forget_unsure(entry, now)
            if not entry.enabled:
                entry.recheck.clear()
                entry.retry.clear()
                continue
            if entry.definition is not None:
                due = [slot for slot in due if entry.definition.allows(slot)]
            for slot in sorted(set(due)):
                if slot not in entry.busy:
                    self._track(self.slots.run(entry, slot))

    def _due(self, entry: _Entry, now: float, stepped_from: float | None) -> list[float]:
        """
        The slots that came due since the entry's cursor: all of them
        normally; after a forward step of the wall clock or a tick late by
        more than the grace, those jumped over are missed and follow the
        catch-up policy.
        """
        cursor = entry.cursor
        assert cursor is not None
        if stepped_from is not None and stepped_from > cursor:
            due = list(slots_between(entry.schedule, cursor, stepped_from))
            gap_from = stepped_from
        elif now - cursor > self.grace:
            due, gap_from = [], cursor
        else:
            return list(slots_between(entry.schedule, cursor, now))
        missed = entry.schedule.last_slot(now)
        if missed > gap_from:
            _enter_gap(entry, missed)
            if entry.catch_up == "once":
                due.append(missed)
        return due

    def _cancel_superseded(self, entry: _Entry, now: float) -> None:
        """
        Stop waiting for the publish of a slot whose next slot came due
        (the publisher is waiting for the broker): that slot is missed and
        follows the catch-up policy, so a broker that comes back does not
        receive every slot of the gap at once.
        """
        latest = entry.schedule.last_slot(now)
        for slot, publishing in list(entry.publishing.items()):
            if slot < latest:
                publishing.cancel()

    def _rechecks_due(self, entry: _Entry, now: float, mono: float) -> list[float]:
        """
        The slots held elsewhere to look at again now.
        """
        due = [slot for slot, at in entry.recheck.items() if at <= mono]
        for slot in due:
            del entry.recheck[slot]
        return due

    def _retries_due(self, entry: _Entry, now: float, mono: float) -> list[float]:
        """
        The failed slots to try again now.  A failed slot whose next slot
        came due is missed: ``"once"`` tries the latest slot due in its
        place (so every daemon tries the same one, and the gap runs once),
        ``"skip"`` drops it.
        """
        latest = entry.schedule.last_slot(now)
        for slot, at in list(entry.retry.items()):
            if slot < latest:
                del entry.retry[slot]
                _enter_gap(entry, slot)
                if entry.catch_up == "once":
                    entry.retry[latest] = min(at, entry.retry.get(latest, at))
        due = [slot for slot, at in entry.retry.items() if at <= mono]
        for slot in due:
            del entry.retry[slot]
        return due

    def _forget_unsure(self, entry: _Entry, now: float) -> None:
        """
        Forget the unsure claims of missed slots this daemon will not claim
        again: they lapse by themselves, and a daemon that finds one held
        once missed does not run it.
        """
        if entry.unsure:
            latest = entry.schedule.last_slot(now)
            entry.unsure = {
                slot
                for slot in entry.unsure
                if slot >= latest or slot in entry.busy or slot in entry.held or slot in entry.retry
            }

    def _track(self, coroutine: Any) -> defer.Deferred[Any]:
        d = defer.ensureDeferred(coroutine)
        self._pending.add(d)

        def done(result: Any) -> Any:
            self._pending.discard(d)
            return result

        d.addBoth(done)
        return d

    async def _start_entries(self, entries: list[_Entry]) -> None:
        """
        Read the stored states of entries just added, note each one's next
        run, and catch up what was missed while no daemon ran.
        """
        self._starting = True
        try:
            states = await self.store.get_periodic_states([entry.name for entry in entries])
        except Exception as error:
            log.warn("Cannot read periodic states ({error}); trying again", error=error)
            return
        finally:
            self._starting = False
        now, _ = self.time.advance()
        self._states_read_at = self.time.now_monotonic
        window = 2 * self.tick
        for entry in entries:
            name = entry.name
            state = states.get(name, PeriodicState(name))
            entry.enabled = state.enabled
            entry.cursor = now - window
            if state.enabled and state.last_run_at is not None and entry.catch_up == "once":
                missed = entry.schedule.last_slot(entry.cursor)
                if missed > state.last_run_at and _allows(entry, missed):
                    log.info(
                        "Catching up {name}: running its slot of {slot} once",
                        name=name,
                        slot=_iso(missed),
                    )
                    self._track(self.slots.run(entry, missed))
        notes = [
            self.store.note_schedule(entry.name, entry.schedule.next_slot(now)) for entry in entries
        ]
        try:
            await defer.gatherResults(notes, consumeErrors=True)
        except Exception as error:
            log.warn("Cannot note the next runs of periodic tasks: {error}", error=error)

    async def _refresh_states(self) -> None:
        self._refreshing = True
        try:
            states = await self.store.get_periodic_states(list(self.entries))
        except Exception as error:
            log.warn("Cannot read periodic states: {error}", error=error)
            return
        finally:
            self._refreshing = False
            self._states_read_at = self.time.monotonic()
        for name, entry in self.entries.items():
            state = states.get(name)
            enabled = state.enabled if state is not None else True
            if enabled != entry.enabled:
                log.info(
                    "Periodic task {name} {what}",
                    name=name,
                    what="resumed" if enabled else "paused",
                )
                entry.enabled = enabled


class _SlotRuns:
    """
    The course of one slot: its claim in the store, the decision on the
    store's answer (weighed against the time it took), and the run or
    publish of a slot won, then its record.

    :ivar published: slots run or published by this daemon.
    :ivar failures: claims, publishes and jobs that failed.
    """

    def __init__(
        self,
        store: IScheduleStore,
        publish: Callable[[TaskMessage, str | None], Awaitable[None]],
        clock: Any,
        time: _SchedulerTime,
        owner: str,
        lease: float,
        keep: float,
    ) -> None:
        self.store = store
        self.publish = publish
        self.clock = clock
        self.time = time
        self.owner = owner
        self.lease = lease
        self.keep = keep
        self.published = 0
        self.failures = 0

    @property
    def retry_interval(self) -> float:
        """
        Seconds between tries of a slot that failed or was found held.
        """
        return min(self.lease, 1.0)

    async def run(self, entry: _Entry, slot: float) -> None:
        """
        Claim one slot; if won, publish (or run) it and commit it.
        """
        entry.busy.add(slot)
        try:
            await self._claim_and_run(entry, slot)
        finally:
            entry.busy.discard(slot)

    def _try_again(self, entry: _Entry, slot: float, what: str, error: Exception) -> None:
        """
        A slot's claim or publish failed: try it again in a second, until
        the next slot comes due.  With ``"once"`` one failed slot stands for
        the whole gap (the latest); with ``"skip"``, during a gap (a slot
        was missed already) a failed slot is missed at once.
        """
        self.failures += 1
        if entry.in_gap and entry.catch_up != "once":
            log.warn(
                "{name} at {slot} {what}: {error}; missed (catch-up policy {policy})",
                name=entry.name,
                slot=_iso(slot),
                what=what,
                error=error,
                policy=entry.catch_up,
            )
            return
        log.warn(
            "{name} at {slot} {what}: {error}; trying again",
            name=entry.name,
            slot=_iso(slot),
            what=what,
            error=error,
        )
        if entry.catch_up == "once" and entry.retry:
            slot = max(slot, *entry.retry)
            entry.retry.clear()
        entry.retry[slot] = self.time.monotonic() + self.retry_interval

    async def _claim_and_run(self, entry: _Entry, slot: float) -> None:
        key = slot_task_id(entry.name, slot)
        if slot in entry.unsure:
            # A claim of this daemon's may hold the slot unknown to it (its
            # answer was lost): let it go first, so the slot is not taken
            # for a daemon that is not going to run it.  The release is
            # owner-checked: another daemon's claim stays.
            try:
                await self.store.release_slot(key, self.owner)
            except Exception as error:
                self._try_again(entry, slot, "not claimed", error)
                return
        asked = self.time.monotonic()
        # A slot asked for once missed was chosen as such (the catch-up of a
        # start, a late tick): only its answer's lateness can make it missed.
        missed_when_asked = _is_missed(entry, slot, self.time.current())
        try:
            claim = await self.store.claim_slot(key, self.owner, self.lease)
        except Exception as error:
            entry.unsure.add(slot)
            self._try_again(entry, slot, "not claimed", error)
            return
        if await self._runs(entry, slot, key, claim, missed_when_asked, asked):
            await self._run_won(entry, slot, key)

    async def _runs(
        self,
        entry: _Entry,
        slot: float,
        key: str,
        claim: SlotClaim,
        missed_when_asked: bool,
        asked: float,
    ) -> bool:
        """
        Act on a slot's claim; whether this daemon runs the slot now (it won
        the claim, and the slot was not missed meanwhile).
        """
        maybe_mine = slot in entry.unsure
        if claim is SlotClaim.DONE:
            entry.unsure.discard(slot)
            entry.held.pop(slot, None)
            _ran(entry)
            return False
        now = self.time.current()
        if claim is SlotClaim.HELD:
            # Perhaps by this daemon's own claim whose answer was lost: then
            # it stays unsure, and is released before the next look.
            entry.held.setdefault(slot, _is_missed(entry, slot, now))
            entry.recheck[slot] = self.time.monotonic() + self.retry_interval
            return False
        entry.unsure.discard(slot)
        missed_when_held = entry.held.pop(slot, None)
        if missed_when_held is not None and not maybe_mine:
            if now - slot < 0.8 * self.lease:
                # Given up before its lease could lapse: the daemon that
                # held it could not publish it, and keeps it under the
                # catch-up policy.  (A lapsed lease means it died: run it.)
                await self._release(key)
                return False
            if missed_when_held:
                # Found held only once missed: part of a gap, whoever held
                # it (a claim answered too late, or taken by a call whose
                # answer was lost, then let go or lapsed).
                await self._missed_won(entry, slot, key)
                return False
        elif (not missed_when_asked and _is_missed(entry, slot, now)) or (
            entry.in_gap
            and entry.catch_up != "once"
            and self.time.monotonic() - asked > self.retry_interval
        ):
            # Won, but answered only after the next slot came due (the
            # store held the claim through an outage), or, under "skip",
            # during a gap and later than a failed claim would have been
            # tried again: missed, like a slot whose claim failed.
            await self._missed_won(entry, slot, key)
            return False
        return True

    async def _run_won(self, entry: _Entry, slot: float, key: str) -> None:
        """
        Run (or publish) a slot whose claim this daemon won, then record it.
        """
        if entry.job is not None:
            try:
                await entry.job.run()
            except Exception:
                # Counted as run: a failing job waits for its next slot.
                self.failures += 1
                log.failure("{name} at {slot} failed", name=entry.name, slot=_iso(slot))
        else:
            try:
                message = _message(entry, key)
                publishing = _as_deferred(self.publish(message, entry.queue))
                entry.publishing[slot] = publishing
                try:
                    await publishing
                finally:
                    entry.publishing.pop(slot, None)
            except defer.CancelledError:
                self._try_again(entry, slot, "not published before its next slot", Missed())
                await self._release(key)
                return
            except Exception as error:
                self._try_again(entry, slot, "not published", error)
                await self._release(key)
                return
        self.published += 1
        _ran(entry)
        if entry.definition is not None and entry.definition.one_off:
            await self._pause_one_off(entry)
        next_run_at = entry.schedule.next_slot(slot)
        for attempt in range(3):
            try:
                await self.store.commit_slot(key, entry.name, slot, next_run_at, self.keep)
                return
            except Exception as error:
                log.warn(
                    "{name} at {slot} published but not recorded: {error}",
                    name=entry.name,
                    slot=_iso(slot),
                    error=error,
                )
                if attempt < 2:
                    await _sleep(self.clock, 2**attempt)

    async def _pause_one_off(self, entry: _Entry) -> None:
        """
        Pause a one-off task whose slot ran (its window holds that slot
        only, so it runs once whether or not the pause is stored).
        """
        entry.enabled = False
        try:
            await self.store.set_periodic_enabled(entry.name, False)
        except Exception as error:
            log.warn("One-off {name} ran but is not paused: {error}", name=entry.name, error=error)

    async def _release(self, key: str) -> None:
        """
        Let a slot's claim go, so that the slot can be claimed again.
        """
        try:
            await self.store.release_slot(key, self.owner)
        except Exception:
            pass  # the lease lapses by itself

    async def _missed_won(self, entry: _Entry, slot: float, key: str) -> None:
        """
        A slot was claimed after it was missed: it does not run, and its
        claim is let go.  (Under ``"once"`` the latest slot due stands for
        the gap: every daemon claims it when due, or tries it again while
        its claim fails, so it runs once.)
        """
        _enter_gap(entry, slot)
        log.info(
            "{name} at {slot} claimed only once missed (the store answered late); not "
            "run (catch-up policy {policy})",
            name=entry.name,
            slot=_iso(slot),
            policy=entry.catch_up,
        )
        await self._release(key)


def _defined_entry(definition: PeriodicDefinition, previous: _Entry | None) -> _Entry:
    """
    The entry of a defined task; a changed one goes on from where its
    previous entry was.
    """
    entry = _Entry(
        definition.name,
        definition.schedule,
        definition.catch_up,
        queue=definition.queue,
        enabled=definition.enabled,
        definition=definition,
    )
    if previous is not None:
        entry.cursor = previous.cursor
    return entry


def _allows(entry: _Entry, slot: float) -> bool:
    return entry.definition is None or entry.definition.allows(slot)


def _message(entry: _Entry, key: str) -> TaskMessage:
    """
    The task message of one slot: its id is the slot's.
    """
    definition = entry.definition
    if definition is None:
        return TaskMessage(
            id=key, task=entry.name, args=(), kwargs={}, ignore_result=entry.ignore_result
        )
    return TaskMessage(
        id=key, task=definition.task, args=definition.args, kwargs=dict(definition.kwargs)
    )


def _is_missed(entry: _Entry, slot: float, now: float) -> bool:
    """
    Whether the slot's next slot came due by ``now``.
    """
    return entry.schedule.last_slot(now) > slot


def _enter_gap(entry: _Entry, slot: float) -> None:
    if not entry.in_gap:
        entry.in_gap = True
        log.warn(
            "{name}: its slot of {slot} was missed; missed slots follow its catch-up "
            "policy ({policy})",
            name=entry.name,
            slot=_iso(slot),
            policy=entry.catch_up,
        )


def _ran(entry: _Entry) -> None:
    """
    One of the entry's slots ran (here or elsewhere): a gap is over.
    """
    if entry.in_gap:
        entry.in_gap = False
        log.info("{name} runs on its schedule again", name=entry.name)


class Missed(Exception):
    """
    A slot's publish did not end before the next slot came due; it was
    given up.
    """

    def __str__(self) -> str:
        return "given up (the broker did not confirm it in time)"


def _as_deferred(awaitable: Awaitable[Any]) -> defer.Deferred[Any]:
    if isinstance(awaitable, defer.Deferred):
        return awaitable
    return defer.ensureDeferred(cast(Coroutine[Any, Any, Any], awaitable))


def _sleep(clock: Any, seconds: float) -> defer.Deferred[None]:
    d: defer.Deferred[None] = defer.Deferred()
    clock.callLater(seconds, d.callback, None)
    return d


def _iso(slot: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(slot, datetime.timezone.utc).isoformat()
