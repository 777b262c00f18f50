"""
The feeder: due jobs wait in one queue and go to idle children in batches
(several tasks per AMP call when there is a backlog), or to the reactor
for reactor tasks.  None starts while the result store is unavailable.

Only tasks known to be quick share a batch: the feeder keeps, per task
name, a moving average of its run time (a batch's time from its start to
its outcomes, divided over its tasks); a task never seen, or whose average
is over :py:data:`QUICK_TASK` seconds, runs alone, as does a task with a
time limit.  A batch takes tasks while their averages add up to at most
:py:data:`QUICK_TASK`, up to ``max_batch``: sixty-four no-op tasks share
one AMP call, tasks of 5 ms four.  So a task whose average is slow never
waits in a child's batch behind another (STARTED means running) and
terminating it kills no other task.  (The averages are per task name: a
name whose run times vary widely may still share a batch.)

Child-death triage: the tasks of a batch whose child died run again one by
one, so the one that kills children is found; a task whose child dies on
each of ``max_attempts`` runs fails with WorkerLostError and is
dead-lettered, and one killed at its hard limit fails with
TimeLimitExceeded.  A child killed to terminate a revoked task
(:py:meth:`Feeder.terminate`) is no such death: that task ends REVOKED,
the others of its batch run again as they were.

With several queues (``--queues a,b``) the due jobs wait in one lane per
queue and the children take from the lanes in turn (:py:class:`Lanes`), so
a backlog of one queue never stops another.  A task over its rate limit
waits for its slot before it is queued (:py:class:`~twistedq.ratelimit.RateLimits`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from twistedq.daemon.backoff import FIRST_PAUSE
from twistedq.daemon.events import EventKind, Events
from twistedq.daemon.health import StoreHealth
from twistedq.daemon.inflight import InFlight
from twistedq.daemon.job import Job, JobState
from twistedq.daemon.leases import LeaseKeeper
from twistedq.exceptions import TimeLimitExceeded, WorkerLostError

if TYPE_CHECKING:
    from twistedq.daemon.gate import Gate
    from twistedq.daemon.settlement import Settlement
    from twistedq.daemon.timing import Timing
    from twistedq.ratelimit import RateLimits
    from twistedq.worker.reactor_tasks import ReactorTaskRunner

__all__ = ["QUICK_TASK", "REACTOR", "Feeder", "Lanes", "Pool"]

log = Logger()

#: The child name of a task that runs on the daemon's reactor.
REACTOR = "reactor"

#: The longest average run time, in seconds, of a task that may share a
#: batch with others, and the most a batch's tasks are expected to take
#: together.
QUICK_TASK = 0.020

#: The weight of a batch's run time in the moving average of its tasks'.
RUN_TIME_WEIGHT = 0.25


class Pool(Protocol):
    """
    What the feeder needs of the process pool.
    """

    @property
    def idle_count(self) -> int: ...

    @property
    def task_limits(self) -> dict[str, tuple[float | None, float | None]]: ...

    @property
    def last_child(self) -> str | None:
        """
        The name of the child the latest :py:meth:`run_batch` went to.
        """

    def run_batch(
        self, bodies: list[bytes], time_limit: float | None = None
    ) -> defer.Deferred[list[bytes]]: ...

    def terminate(self, body: bytes) -> str | None:
        """
        Kill the child running the message ``body``; its name, or None.
        """


def priority_of(job: Job) -> int:
    """
    The AMQP priority of a job's message, 0 when it has none.
    """
    properties = getattr(job.delivery, "properties", None)
    priority = properties.get("priority") if properties else None
    return priority if type(priority) is int else 0


def ahead_of_lower(lane: deque[Job], job: Job, priority: int) -> None:
    """
    Put ``job`` of ``priority`` before the first job of ``lane`` with a
    lower priority (after those of its own or higher, in order).
    """
    for index, other in enumerate(lane):
        if priority_of(other) < priority:
            lane.insert(index, job)
            return
    lane.append(job)


class PriorityDeque(deque[Job]):
    """
    The due jobs of one queue, first in first out, except that a job with
    a priority goes ahead of those with a lower one: the daemon runs what
    it already holds by priority too, not only the broker.
    """

    def append_by_priority(self, job: Job, priority: int) -> None:
        ahead_of_lower(self, job, priority)


class Lanes:
    """
    The due jobs of several queues, one first-in first-out lane per queue,
    taken from in turn: the deque operations the feeder uses, where the
    head is the head of the lane whose turn it is.  A job put back at the
    head (:py:meth:`appendleft`) makes its lane's turn come first.

    :ivar queue_of: the queue a job came from.
    """

    def __init__(self, queue_of: Callable[[Job], str | None]) -> None:
        self.queue_of = queue_of
        self._lanes: dict[str | None, deque[Job]] = {}
        self._turn: deque[deque[Job]] = deque()  # the non-empty lanes, next first
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def __iter__(self) -> Iterator[Job]:
        for lane in list(self._turn):
            yield from list(lane)

    def __getitem__(self, index: int) -> Job:
        if index != 0 or not self._turn:
            raise IndexError(index)
        return self._turn[0][0]

    def _lane(self, job: Job) -> deque[Job]:
        queue = self.queue_of(job)
        lane = self._lanes.get(queue)
        if lane is None:
            lane = self._lanes[queue] = deque()
        return lane

    def append(self, job: Job) -> None:
        lane = self._lane(job)
        if not lane:
            self._turn.append(lane)
        lane.append(job)
        self._count += 1

    def append_by_priority(self, job: Job, priority: int) -> None:
        lane = self._lane(job)
        if not lane:
            self._turn.append(lane)
        ahead_of_lower(lane, job, priority)
        self._count += 1

    def appendleft(self, job: Job) -> None:
        lane = self._lane(job)
        if lane:
            self._turn.remove(lane)
        self._turn.appendleft(lane)
        lane.appendleft(job)
        self._count += 1

    def popleft(self) -> Job:
        turn = self._turn
        lane = turn.popleft()
        job = lane.popleft()
        if lane:
            turn.append(lane)  # the next lane's turn
        self._count -= 1
        return job

    def remove(self, job: Job) -> None:
        lane = self._lane(job)
        lane.remove(job)
        self._count -= 1
        if not lane:
            self._turn.remove(lane)

    def clear(self) -> None:
        for lane in self._lanes.values():
            lane.clear()
        self._turn.clear()
        self._count = 0


class Feeder:
    """
    Hands due jobs to the pool's idle children and triages their deaths.

    :ivar max_batch: the most tasks sent to one child in one call.
    :ivar time_limit: the hard time limit of tasks that set none.
    :ivar max_attempts: how many child deaths a task may cause.
    :ivar run_times: per task name, the moving average of its run time in
        seconds, measured on the batches that ran it (tasks with no entry
        were never run here, and run alone).
    :ivar rate_limits: the tasks' rate limits, or None: no task is limited.
    :ivar pending: the due jobs waiting for a child: a deque, or
        :py:class:`Lanes` with several queues.
    """

    def __init__(
        self,
        pool: Pool,
        clock: IReactorTime,
        health: StoreHealth,
        leases: LeaseKeeper,
        gate: Gate,
        timing: Timing,
        settlement: Settlement,
        events: Events,
        in_flight: InFlight,
        runner: ReactorTaskRunner | None = None,
        max_batch: int = 64,
        time_limit: float | None = None,
        max_attempts: int = 3,
        rate_limits: RateLimits | None = None,
        lanes: Lanes | None = None,
    ) -> None:
        self.pool = pool
        self.clock = clock
        self.health = health
        self.leases = leases
        self.gate = gate
        self.timing = timing
        self.settlement = settlement
        self.events = events
        self.in_flight = in_flight
        self.runner = runner
        self.max_batch = max_batch
        self.time_limit = time_limit
        self.max_attempts = max_attempts
        self.pending: PriorityDeque | Lanes = lanes if lanes is not None else PriorityDeque()
        self.rate_limits = rate_limits
        if rate_limits is not None:
            rate_limits.wait = self._wait_for_slot
            rate_limits.track = in_flight.track
        #: Tasks given back while stopping because their child was killed.
        self.returned_running = 0
        #: Running jobs whose child was killed to terminate them.
        self.terminating: set[Job] = set()
        self.run_times: dict[str, float] = {}

    def queue(self, job: Job) -> None:
        """
        Run a job that is due: on the reactor if it is a reactor task, else
        on the next idle child.
        """
        limits = self.rate_limits
        if limits is not None and limits.hold_back(job):
            return
        self._due(job)

    def _wait_for_slot(self, job: Job, delay: float) -> None:
        """
        Hold a job over its rate limit until its slot (``delay`` seconds),
        unacknowledged, then run it.
        """
        limits = self.rate_limits

        def slot(job: Job) -> None:
            if limits is not None:
                limits.release(job)
            if job.expired(self.clock.seconds()):
                self.timing.revoke_expired(job)
            elif limits is not None and limits.cluster is not None:
                limits.after_slot(job, self._due_unless_stopping)
            else:
                self._due(job)

        self.timing.wait(job, delay, then=slot)

    def _due_unless_stopping(self, job: Job) -> None:
        """
        Run a job whose cluster-wide slot was claimed, unless the daemon
        began to stop meanwhile: it then goes back to the queue.
        """
        if self.in_flight.stopping:
            job.give_back()
        else:
            self._due(job)

    def _due(self, job: Job) -> None:
        runner = self.runner
        if runner is not None and runner.handles(job.message.task):
            if not self.health.available:
                # As for children: nothing starts while the store is down.
                self.timing.wait(job, FIRST_PAUSE, then=self._due)
            elif not self._set_aside(job):
                self._started([job], REACTOR)
                d = runner.run_message(job.message)
                d.addCallback(lambda outcome: self.settlement.ran([outcome], [job]))
                self.in_flight.track(d)
            return
        job.state = JobState.QUEUED
        priority = priority_of(job)
        if priority:
            self.pending.append_by_priority(job, priority)
        else:
            self.pending.append(job)
        self.pump()

    def pump(self) -> None:
        """
        Hand queued jobs to idle children, spread evenly over them; none
        while the result store is unavailable (their outcomes could not be
        stored: they wait, unacknowledged, until it is back).
        """
        pending = self.pending
        while pending and self.health.available:
            idle = self.pool.idle_count
            if idle <= 0:
                return
            if self._set_aside(pending[0]):
                pending.popleft()
                continue
            limit = self._time_limit(pending[0])
            if limit is not None or self._alone(pending[0]):
                # Alone: its time limit is its batch's, it may be the one
                # that killed a child, or it is not known to be quick.
                self._run([pending.popleft()], limit)
                continue
            size = min(self.max_batch, -(-len(pending) // idle))
            batch: list[Job] = []
            room = QUICK_TASK  # the batch's expected run time stays within it
            run_times = self.run_times
            while pending and len(batch) < size:
                head = pending[0]
                if self._set_aside(head):
                    pending.popleft()
                    continue
                if self._time_limit(head) is not None or self._alone(head):
                    break
                expected = run_times[head.message.task]  # known: not alone
                if batch and expected > room:
                    break
                room -= expected
                batch.append(pending.popleft())
            if batch:
                self._run(batch, None)

    def withdraw(self, job: Job) -> None:
        """
        Take a queued job out: it is not run here.
        """
        self.pending.remove(job)

    def give_back_all(self) -> list[Job]:
        """
        On stopping: return the queued jobs to the queue.
        """
        jobs = list(self.pending)
        self.pending.clear()
        for job in jobs:
            job.give_back()
        return jobs

    def handles(self, task: str) -> bool:
        """
        Whether a task of that name was registered by a child or runs on
        the reactor.
        """
        return task in self.pool.task_limits or (
            self.runner is not None and self.runner.handles(task)
        )

    def registered(self) -> list[str]:
        """
        The names of the tasks the children registered and of the reactor
        tasks, sorted.
        """
        names = set(self.pool.task_limits)
        runner = self.runner
        if runner is not None:
            names.update(name for name in runner.registry.get_all() if runner.handles(name))
        return sorted(names)

    def terminate(self, job: Job) -> bool:
        """
        Kill the child running ``job``: the job ends REVOKED, its claim
        committed, its message acked; the other tasks of its batch run
        again.  False when no child runs it now (it finished, or it runs on
        the reactor, which cannot be interrupted).
        """
        if job.state is not JobState.RUNNING or job in self.terminating:
            return False
        if self.pool.terminate(job.delivery.body) is None:
            return False
        self.terminating.add(job)
        return True

    def _set_aside(self, job: Job) -> bool:
        """
        Whether a queued job must not start now: it expired (it is
        revoked), or its claim may have lapsed while it waited: it is
        claimed again first, so it never starts after another attempt
        committed it.
        """
        if job.expired(self.clock.seconds()):
            self.timing.revoke_expired(job)
            return True
        if self.leases.lease_holds(job):
            return False
        log.info("The claim on task {id} may have lapsed: claiming it again", id=job.task_id)
        self.leases.release([job])
        self.gate.check(job)
        return True

    def _alone(self, job: Job) -> bool:
        """
        Whether ``job`` must run alone in its child's batch: it may have
        killed a child, or it is not known to be quick.
        """
        return job.suspect or self.run_times.get(job.message.task, QUICK_TASK + 1) > QUICK_TASK

    def _measure(self, batch: list[Job], started: float) -> None:
        """
        Count a batch that started at ``started`` and just returned in the
        moving averages of its tasks' run times.
        """
        run_time = (self.clock.seconds() - started) / len(batch)
        run_times = self.run_times
        last = None
        for job in batch:
            name = job.message.task
            if name == last:
                continue
            last = name
            average = run_times.get(name)
            if average is None:
                run_times[name] = run_time
            else:
                run_times[name] = average + RUN_TIME_WEIGHT * (run_time - average)

    def _time_limit(self, job: Job) -> float | None:
        hard = self.pool.task_limits.get(job.message.task, (None, None))[1]
        return hard or self.time_limit

    def _started(self, batch: list[Job], child: str | None) -> float:
        """
        Mark ``batch`` as running in ``child``, reported STARTED; return
        the time.
        """
        now = self.clock.seconds()
        report = self.events.report
        for job in batch:
            job.state = JobState.RUNNING
            job.child = child
            job.started_at = now
            report(EventKind.STARTED, job.task_id, job.message.task, child=child, job=job)
        return now

    def _run(self, batch: list[Job], limit: float | None) -> None:
        pool = self.pool
        d = pool.run_batch([job.delivery.body for job in batch], limit)
        started = self._started(batch, pool.last_child)
        d.addCallbacks(self._ran, self._lost, callbackArgs=(batch, started), errbackArgs=(batch,))
        self.in_flight.track(d)

    def _ran(self, outcomes: list[bytes], batch: list[Job], started: float) -> defer.Deferred[None]:
        self._measure(batch, started)
        if self.terminating:  # the batch ended before its child was killed
            self.terminating.difference_update(batch)
        return self.settlement.ran(outcomes, batch)

    def _terminated(self, batch: list[Job]) -> bool:
        """
        Settle a batch whose child was killed to terminate some of its
        tasks: those end REVOKED (stored under their claims, then acked);
        the others run again, as if their batch had not started (or go
        back to the queue while stopping).  False if none was terminated.
        """
        revoked = [job for job in batch if job in self.terminating]
        if not revoked:
            return False
        self.terminating.difference_update(revoked)
        for job in revoked:
            self.settlement.revoke(job, "terminated by remote control")
        others = [job for job in batch if job not in revoked]
        if others and self.in_flight.stopping:
            self.settlement.give_back(others)
        elif others:
            for job in reversed(others):
                job.state = JobState.QUEUED
                self.pending.appendleft(job)
            self.pump()
        return True

    def _lost(self, failure: Failure, batch: list[Job]) -> defer.Deferred[None] | None:
        """
        A child died running ``batch``.  Killed at its time limit: the task
        fails with TimeLimitExceeded.  Otherwise the tasks run again, each
        alone on the next idle child; after ``max_attempts`` deaths a task
        fails with WorkerLostError and its message is dead-lettered.
        """
        lost: Any = failure.value
        reason = getattr(lost, "reason", str(lost))
        if self.terminating and self._terminated(batch):
            return None
        if self.in_flight.stopping:
            log.warn(
                "{count} tasks that were running go back to the queue: {why}",
                count=len(batch),
                why=str(lost),
            )
            self.returned_running += len(batch)
            self.settlement.give_back(batch)
            return None
        if reason == "time-limit" and len(batch) == 1:
            job = batch[0]
            error: Exception = TimeLimitExceeded(
                f"task {job.message.task} ran past its time limit of {lost.time_limit} s"
            )
            return self.settlement.fail(job, error, dead_letter=False)
        if len(batch) > 1:
            log.warn("{count} tasks run again one by one: {why}", count=len(batch), why=str(lost))
            self._again(batch)
            return None
        job = batch[0]
        job.deaths += 1
        if job.deaths >= self.max_attempts:
            error = WorkerLostError(
                f"the child running task {job.message.task} died ({reason}) "
                f"on each of {job.deaths} attempts"
            )
            return self.settlement.fail(job, error, dead_letter=True)
        log.warn(
            "Task {task}[{id}] killed its child ({why}); attempt {n} of {most} next",
            task=job.message.task,
            id=job.task_id,
            why=reason,
            n=job.deaths + 1,
            most=self.max_attempts,
        )
        self._again(batch)
        return None

    def _again(self, batch: list[Job]) -> None:
        for job in reversed(batch):
            job.suspect = True
            job.state = JobState.QUEUED
            self.pending.appendleft(job)
        self.pump()
