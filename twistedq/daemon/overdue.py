"""
The sweep that keeps every delivery under the broker's consumer timeout:
RabbitMQ closes the channel of a delivery left unacknowledged for longer
(30 minutes by default), and with it every other delivery of the channel.

A claimed task held long is parked by the lease keeper at ``park_after``
and acknowledged.  What cannot be parked (the store is down, the claim is
held by another attempt, the job has no claim) is given back to the queue
once it has been here ``give_back_after`` seconds:

- a job held, waiting or queued is settled by the give-back, its claim
  released;
- a job in any other state (its claim asked for, running, its outcome
  being stored) goes on: only its delivery goes back, and its claim keeps
  the copy the broker delivers again from running twice.  Without claims
  nothing can, so a job running unclaimed keeps its delivery.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from twistedq.daemon.events import EventKind, Events
from twistedq.daemon.job import Job, JobState, few

__all__ = ["DEFAULT_GIVE_BACK_AFTER", "OverdueDeliveries"]

#: Seconds after which a delivery that could not be parked is given back:
#: after the default ``park_after`` (20 min), under RabbitMQ's default
#: consumer timeout (30 min).
DEFAULT_GIVE_BACK_AFTER = 25 * 60.0

#: The sweep runs this often, at most (more often for a short limit).
LONGEST_SWEEP_PERIOD = 30.0

log = Logger()


class OverdueDeliveries:
    """
    Finds the jobs whose delivery has been unacknowledged here for
    ``limit`` seconds and gives their delivery back.

    :param holders: for each stage that holds jobs, a call that returns
        them and one that takes one of them out (``withdraw``).
    :param jobs: every job taken (settled ones too).
    :param release: gives up the claims of jobs given back.
    """

    def __init__(
        self,
        clock: IReactorTime,
        events: Events,
        limit: float | None,
        holders: Iterable[tuple[Callable[[], Iterable[Job]], Callable[[Job], None]]],
        jobs: Callable[[], Iterable[Job]],
        release: Callable[[list[Job]], None],
    ) -> None:
        self.clock = clock
        self.events = events
        self.limit = limit
        self.holders = list(holders)
        self.jobs = jobs
        self.release = release
        self._sweep = LoopingCall(self.sweep)
        self._sweep.clock = clock

    @property
    def running(self) -> bool:
        """
        Whether the sweep is scheduled.
        """
        return self._sweep.running

    def start(self) -> None:
        """
        Sweep from now on (once, however often called), while a limit is set.
        """
        if self.limit is None or self._sweep.running:
            return
        self._sweep.start(min(max(self.limit / 10, 0.25), LONGEST_SWEEP_PERIOD), now=False)

    def stop(self) -> None:
        if self._sweep.running:
            self._sweep.stop()

    def sweep(self) -> None:
        """
        Give back every delivery here for ``limit`` seconds or more, and
        say so in one line for each kind.
        """
        assert self.limit is not None
        cutoff = self.clock.seconds() - self.limit
        returned: list[Job] = []
        for jobs, withdraw in self.holders:
            for job in [job for job in jobs() if overdue(job, cutoff)]:
                withdraw(job)
                job.give_back()
                returned.append(job)
        self.release([job for job in returned if job.token is not None])
        going_on: list[Job] = []
        for job in list(self.jobs()):
            if not overdue(job, cutoff):
                continue
            if job.token is None and job.state in (JobState.RUNNING, JobState.STORING):
                continue  # unclaimed: a copy delivered again would run twice
            job.release_delivery()
            going_on.append(job)
        for job in returned + going_on:
            self.events.report(EventKind.GIVEN_BACK, job.task_id, job.message.task, job=job)
        if returned:
            self._log(returned, "they are given back to the queue")
        if going_on:
            self._log(
                going_on,
                "their messages go back to the queue while they go on; their claims keep "
                "the copies from running twice",
            )

    def _log(self, jobs: list[Job], what: str) -> None:
        log.warn(
            "{count} tasks unacknowledged for {limit:g} s could not be parked: {what}, "
            "under the broker's consumer timeout ({tasks})",
            count=len(jobs),
            limit=self.limit,
            what=what,
            tasks=few(jobs),
        )


def overdue(job: Job, cutoff: float) -> bool:
    """
    Whether ``job`` holds a delivery unacknowledged since before ``cutoff``.
    """
    return (
        job.state is not JobState.SETTLED
        and not job.parked
        and not job.released
        and job.delivered_at <= cutoff
    )
