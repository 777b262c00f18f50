"""
The dispatcher: the thin coordinator of the daemon's stages.  It builds
them around one :py:class:`~twistedq.daemon.job.Job` per delivery, takes
deliveries from the consumer, and answers :py:meth:`Dispatcher.drain` and
:py:meth:`Dispatcher.stats`.

One delivery's path::

    intake (verify, decode, refuse)
      -> gate (one store call per reactor turn: done already? claimed?)
      -> timing (ETA held or sent to a delay queue; expired: revoked)
      -> feeder (batches to idle children; child-death triage)
      -> settlement (store, fenced by the claim; then ack; retries; dead letters)

beside the lease keeper (claims, renewal, parking, recovery) and store
health (nothing starts while the store is down).  ``doc/architecture.rst``
says which stage keeps which guarantee.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from twistedq.backends.base import IClaimStore, IResultBackend
from twistedq.conf import DEFAULT_MAX_MESSAGE_SIZE
from twistedq.daemon.events import EventKind, Events
from twistedq.daemon.feeder import Feeder, Lanes, Pool, priority_of
from twistedq.daemon.gate import Gate
from twistedq.daemon.health import StoreHealth
from twistedq.daemon.inflight import InFlight
from twistedq.daemon.intake import Intake
from twistedq.daemon.job import BrokerDelivery, Job, JobState, args_preview
from twistedq.daemon.leases import DEFAULT_PARK_AFTER, LeaseKeeper
from twistedq.daemon.overdue import DEFAULT_GIVE_BACK_AFTER, OverdueDeliveries
from twistedq.daemon.settlement import Settlement
from twistedq.daemon.timing import DEFAULT_HOLD_ETA, PublishLater, Timing
from twistedq.message import TaskMessage
from twistedq.ratelimit import RateLimits
from twistedq.signing import SigningKeys

if TYPE_CHECKING:
    from twistedq.worker.reactor_tasks import ReactorTaskRunner

__all__ = ["DispatchSettings", "Dispatcher"]

log = Logger()


@dataclass(frozen=True)
class DispatchSettings:
    """
    The figures of the daemon's core.

    :ivar max_batch: the most tasks sent to one child in one call.
    :ivar max_body_size: the largest message body taken, in bytes.
    :ivar time_limit: the hard time limit of tasks that set none.
    :ivar max_attempts: how many child deaths a task may cause.
    :ivar check_duplicates: check each task against the store before it
        runs; with a store that has claims, run each under a claim.
    :ivar claim_lease: how long a claim holds without renewal (seconds).
    :ivar hold_eta: tasks due within this many seconds are held in memory.
    :ivar park_after: seconds after which a claimed task's message is
        parked in the store and acknowledged (None: never).
    :ivar give_back_after: seconds after which a delivery that could not
        be parked goes back to the queue (None: never); see
        :py:mod:`twistedq.daemon.overdue`.
    :ivar home_queue: the queue this daemon consumes.
    """

    max_batch: int = 64
    max_body_size: int = DEFAULT_MAX_MESSAGE_SIZE
    time_limit: float | None = None
    max_attempts: int = 3
    check_duplicates: bool = False
    claim_lease: float = 15.0
    hold_eta: float = DEFAULT_HOLD_ETA
    park_after: float | None = DEFAULT_PARK_AFTER
    give_back_after: float | None = DEFAULT_GIVE_BACK_AFTER
    home_queue: str = "celery"


class Dispatcher:
    """
    Feeds the pool from the deliveries and settles each delivery after its
    outcome is stored.

    :param settings: the core's figures (the defaults if None).
    :param signing: the keys a message must be signed with, or None.
    :param publish_later: publishes a task message to come back after about
        the given seconds (:py:meth:`twistedq.amqp.broker.Publisher.publish_later`),
        or None: ETAs are held in memory and a task that retries fails.
    :param republish: publishes an orphaned parked message to its queue.
    :param reactor_runner: runs the reactor tasks, if any.
    :param events: the seam every stage reports to (a new one if None).
    :param rate_limits: the tasks' rate limits (a new
        :py:class:`~twistedq.ratelimit.RateLimits` without limits of its
        own if None: it applies the limits messages carry).
    :param publish_later_to: with several queues, queue name to the
        ``publish_later`` of that queue: a task retries, waits for its ETA
        or its rate limit in its own queue's delay queues, and the due
        tasks of the queues take turns (:py:class:`~twistedq.daemon.feeder.Lanes`).
    """

    def __init__(
        self,
        pool: Pool,
        backend: IResultBackend,
        clock: IReactorTime,
        settings: DispatchSettings | None = None,
        *,
        signing: SigningKeys | None = None,
        publish_later: PublishLater | None = None,
        republish: Callable[[TaskMessage, str | None], Awaitable[None]] | None = None,
        reactor_runner: ReactorTaskRunner | None = None,
        events: Events | None = None,
        rate_limits: RateLimits | None = None,
        publish_later_to: Mapping[str, PublishLater] | None = None,
    ) -> None:
        config = self.settings = settings if settings is not None else DispatchSettings()
        self.clock = clock
        self.events = events if events is not None else Events()
        self.in_flight = flight = InFlight()
        publish_later = self.publishes_later = self._publisher(publish_later, publish_later_to)
        self.rate_limits = limits = self._limits(rate_limits or RateLimits(clock))
        claims: IClaimStore | None = None
        if config.check_duplicates and IClaimStore.providedBy(backend):
            claims = IClaimStore(backend)
        self.health = StoreHealth(backend, clock, self.events, flight, self.pump)
        self.leases = LeaseKeeper(
            backend, claims, clock, self.events, config.claim_lease, config.park_after,
            config.home_queue, republish, config.max_body_size,
        )  # fmt: skip
        self.settlement = Settlement(
            backend, self.leases, self.health, clock, self.events, flight,
            lambda task: self.feeder.handles(task), publish_later, config.hold_eta,
        )  # fmt: skip
        self.timing = Timing(
            clock, self.events, flight, queue=lambda job: self.feeder.queue(job),
            recheck=(lambda job: self.gate.check(job)) if config.check_duplicates else None,
            revoke=self.settlement.revoke, publish_later=publish_later, hold_eta=config.hold_eta,
        )  # fmt: skip
        self.gate = Gate(
            backend, self.leases, self.health, clock, self.events, flight,
            self.timing.admit, config.check_duplicates,
        )  # fmt: skip
        self.feeder = Feeder(
            pool, clock, self.health, self.leases, self.gate, self.timing, self.settlement,
            self.events, flight, reactor_runner,
            config.max_batch, config.time_limit, config.max_attempts,
            limits, Lanes(self.queue_of) if len(self.publish_later_to) > 1 else None,
        )  # fmt: skip
        self._settled_before_drain = 0
        self._unstored_before_drain = 0
        self.returned_on_drain = 0
        self._take_deliveries(backend, signing)

    def _take_deliveries(self, backend: IResultBackend, signing: SigningKeys | None) -> None:
        """
        Build the intake, which turns deliveries into jobs for the gate,
        and the watch that gives back deliveries held here too long.
        """
        config = self.settings
        self.intake = Intake(
            backend, self.events, self.in_flight, self.gate.take, config.max_body_size, signing
        )
        self.overdue = OverdueDeliveries(
            self.clock, self.events, config.give_back_after,
            [
                (self.gate.holding, self.gate.withdraw),
                (lambda: self.timing.waiting, self.timing.withdraw),
                (lambda: self.feeder.pending, self.feeder.withdraw),
            ],
            jobs=lambda: self.gate.taken, release=self.leases.release,
        )  # fmt: skip

    @property
    def claims(self) -> IClaimStore | None:
        """
        The store's claims, when tasks run under them.
        """
        return self.leases.claims

    @property
    def store_available(self) -> bool:
        return self.health.available

    def _publisher(
        self, publish_later: PublishLater | None, to: Mapping[str, PublishLater] | None
    ) -> PublishLater | None:
        """
        What publishes a task to come back later: ``publish_later`` (with
        several queues, the one of the task's own queue), with the
        priority its message was delivered with.
        """
        self.publish_later_to = dict(to or {})
        if len(self.publish_later_to) <= 1 and publish_later is None:
            return None
        self._publish_later = publish_later
        return self._publish_later_as_delivered

    def _limits(self, limits: RateLimits) -> RateLimits:
        """
        The rate limits, sending tasks to delay queues through this
        dispatcher when it can publish.
        """
        if self.publishes_later is not None:
            limits.send_later = self._send_later
        return limits

    @staticmethod
    def queue_of(job: Job) -> str | None:
        """
        The queue ``job`` was delivered from, when its delivery says.
        """
        return getattr(job.delivery, "queue", None)

    def _held_job(self, task_id: str) -> Job | None:
        """
        The job of ``task_id`` held here, if any.
        """
        for job in list(self.gate.taken):
            if job.task_id == task_id and job.state is not JobState.SETTLED:
                return job
        return None

    def _publish_later_as_delivered(
        self, message: TaskMessage, delay: float, *, priority: int | None = None, hop: bool = False
    ) -> defer.Deferred[None]:
        """
        Publish ``message`` to come back after ``delay`` seconds: with
        several queues to the queue its job came from (the first queue
        when that is not known), and with the AMQP priority its job's
        message had, so that a retry, an ETA or a rate limit's wait does
        not lose it (unless ``priority`` is given).  The message its job
        was delivered with (an ETA, a rate limit; not a retry, a new
        message) goes as a hop: not received again when it comes back.
        """
        job = self._held_job(message.id)
        publishers = self.publish_later_to
        if len(publishers) > 1:
            queue = self.queue_of(job) if job is not None else None
            publish = publishers.get(queue or "") or next(iter(publishers.values()))
        else:
            publish = self._publish_later or next(iter(publishers.values()))
        if priority is None:
            priority = priority_of(job) if job is not None else 0
        options: dict[str, Any] = {}
        if priority:
            options["priority"] = priority
        if hop or (job is not None and job.message is message):
            options["hop"] = True
        return defer.ensureDeferred(publish(message, delay, **options))

    def _send_later(self, job: Job, delay: float) -> defer.Deferred[bool]:
        """
        Send a job over its rate limit to a delay queue for about
        ``delay`` seconds: its message is published again, then its claim
        released and its delivery acknowledged.  Fires with False (the job
        untouched) when the publish failed or the daemon is stopping.
        """
        publish = self.publishes_later
        assert publish is not None
        job.state = JobState.DELAYING
        d: defer.Deferred[None] = defer.ensureDeferred(publish(job.message, delay))

        def sent(_: object) -> bool:
            self.leases.release([job])
            job.ack()
            return True

        def not_sent(failure: Failure) -> bool:
            if self.in_flight.stopping:
                job.give_back()
                return True
            log.warn(
                "Could not send task {task}[{id}] to a delay queue for its rate limit: {why}",
                task=job.message.task,
                id=job.task_id,
                why=str(failure.value) or type(failure.value).__name__,
            )
            return False

        settled = d.addCallbacks(sent, not_sent)
        self.in_flight.track(settled)
        return settled

    def deliver(self, delivery: BrokerDelivery) -> None:
        """
        Take one delivery from the consumer.
        """
        self.overdue.start()
        self.intake.take(delivery)

    def pump(self) -> None:
        """
        Hand queued tasks to idle children (the pool calls it whenever a
        child becomes idle).
        """
        self.feeder.pump()

    async def recover_parked(self) -> None:
        """
        Publish again the parked messages of daemons that died.
        """
        await self.leases.recover_parked()

    @property
    def held(self) -> int:
        """
        The deliveries held unacknowledged: running, waiting for a child or
        their ETA, being stored.
        """
        return sum(1 for job in list(self.gate.taken) if job.state is not JobState.SETTLED)

    def stats(self) -> dict[str, Any]:
        """
        The dispatcher's figures for the status resource.
        """
        count = self.events.counts
        return {
            "completed": count[EventKind.SUCCEEDED] + count[EventKind.FAILED],
            "failed": count[EventKind.FAILED],
            "rejected": count[EventKind.REJECTED],
            "dead_lettered": count[EventKind.DEAD_LETTERED],
            "revoked": count[EventKind.REVOKED],
            "retried": count[EventKind.RETRIED],
            "delayed": count[EventKind.DELAYED],
            "pending": len(self.feeder.pending),
            "held": self.held,
            "held_for_eta": len(self.timing.waiting),
            "in_flight": len(self.in_flight),
            "retrying": sum(1 for job in self.feeder.pending if job.suspect),
            "store_retries": count[EventKind.STORE_RETRY],
            "store_refused": count[EventKind.STORE_REFUSED],
            "store_available": self.health.available,
            "duplicates_suppressed": count[EventKind.DUPLICATE],
            "claimed": len(self.leases),
            "parked": count[EventKind.PARKED],
            "recovered": count[EventKind.RECOVERED],
            "held_elsewhere": count[EventKind.HELD_ELSEWHERE],
            "fenced_off": count[EventKind.FENCED_OFF],
            "given_back": count[EventKind.GIVEN_BACK],
            "rate_limits": self.rate_limits.stats(),
        }

    def jobs(self) -> list[Job]:
        """
        Every job taken and not yet settled.
        """
        return [job for job in self.gate.taken if job.state is not JobState.SETTLED]

    def active(self) -> list[dict[str, Any]]:
        """
        The tasks running now (``inspect.active``): id, name, an argument
        preview, seconds run so far, the child running it, and when it
        started (seconds since the epoch).
        """
        now = self.clock.seconds()
        return [
            {
                "id": job.task_id,
                "name": job.message.task,
                "args": args_preview(job.message),
                "runtime": round(now - job.started_at, 3),
                "child": job.child,
                "started": job.started_at,
            }
            for job in sorted(self.jobs(), key=lambda job: (job.started_at, job.task_id))
            if job.state is JobState.RUNNING
        ]

    def reserved(self) -> list[dict[str, Any]]:
        """
        The tasks taken but not running (``inspect.reserved``): being
        checked, held for a claim, waiting (not for a later ETA: see
        :py:meth:`scheduled`) or queued for a child.
        """
        now = self.clock.seconds()
        taken = (JobState.RECEIVED, JobState.CHECKING, JobState.HELD, JobState.QUEUED)
        return [
            {"id": job.task_id, "name": job.message.task, "state": job.state.value}
            for job in sorted(self.jobs(), key=lambda job: (job.delivered_at, job.task_id))
            if job.state in taken or (job.state is JobState.WAITING and not job.early(now))
        ]

    def scheduled(self) -> list[dict[str, Any]]:
        """
        The tasks held here for a later ETA (``inspect.scheduled``), the
        soonest first.
        """
        now = self.clock.seconds()
        return [
            {"id": job.task_id, "name": job.message.task, "eta": job.message.eta}
            for job in sorted(self.jobs(), key=lambda job: (job.eta or 0.0, job.task_id))
            if job.state is JobState.WAITING and job.early(now)
        ]

    def revoke(self, task_ids: list[str], terminate: bool = False) -> dict[str, list[str]]:
        """
        Revoke the tasks of these ids that are here: one not running yet
        (checked, held, waiting, queued) is dropped with a REVOKED outcome
        and acked, never run; a running one, with ``terminate``, has its
        child killed and ends REVOKED (:py:meth:`Feeder.terminate`),
        without it runs to its end.

        :return: ``revoked``: the ids revoked here; ``terminated``: those
            whose child was killed; ``running``: those left running.
        """
        here = {job.task_id: job for job in self.jobs()}
        revoked: list[str] = []
        terminated: list[str] = []
        running: list[str] = []
        holding = set(self.gate.holding())
        for task_id in dict.fromkeys(task_ids):
            job = here.get(task_id)
            if job is None:
                continue
            if job.state is JobState.RUNNING:
                if terminate and self.feeder.terminate(job):
                    terminated.append(job.task_id)
                    revoked.append(job.task_id)
                else:
                    running.append(job.task_id)
            elif self._withdraw(job, holding):
                self.settlement.revoke(job, "revoked by remote control")
                revoked.append(job.task_id)
        return {"revoked": revoked, "terminated": terminated, "running": running}

    def _withdraw(self, job: Job, holding: set[Job]) -> bool:
        """
        Take a job that has not started out of the stage that keeps it;
        False when no stage can let it go now (its store call is under
        way, it is being stored or published).
        """
        if job in holding:
            self.gate.withdraw(job)
        elif job.state is JobState.WAITING and job in self.timing.waiting:
            self.timing.withdraw(job)
        elif job.state is JobState.QUEUED and job in self.feeder.pending:
            self.feeder.withdraw(job)
        else:
            return False
        return True

    def _settled_count(self) -> int:
        count = self.events.counts
        settled = (
            EventKind.SUCCEEDED,
            EventKind.FAILED,
            EventKind.REVOKED,
            EventKind.RETRIED,
            EventKind.DEAD_LETTERED,
            EventKind.DUPLICATE,
        )
        return sum(count[kind] for kind in settled)

    def drain_summary(self) -> str:
        """
        What the drain did, in a sentence, once it has fired: how many
        tasks were stored and settled meanwhile, how many went back to the
        queue unstarted, and how many outcomes could not be stored (their
        messages went back to the queue too).
        """
        finished = self._settled_count() - self._settled_before_drain
        parts = [f"{finished} tasks settled while draining (stored, then acknowledged)"]
        parts.append(f"{self.returned_on_drain} not started went back to the queue")
        killed = self.feeder.returned_running
        if killed:
            parts.append(
                f"{killed} were running when their children were killed: their messages "
                "went back to the queue"
            )
        unstored = self.settlement.returned_unstored - self._unstored_before_drain
        if unstored:
            parts.append(
                f"{unstored} ran but their outcomes could not be stored: their messages "
                "went back to the queue"
            )
        return "; ".join(parts)

    def drain(self) -> defer.Deferred[None]:
        """
        Fire when every batch handed out so far is stored and settled.
        Tasks not yet running here are returned to the broker, and their
        claims released so that another daemon runs them at once.
        """
        self.in_flight.stopping = True
        self._settled_before_drain = self._settled_count()
        self._unstored_before_drain = self.settlement.returned_unstored
        self.health.stop_probing()
        self.health.stop_watching()
        self.overdue.stop()
        self.returned_on_drain = len(self.gate.holding())
        self.gate.give_back_all()  # copies held here own no claim
        returned = self.feeder.give_back_all() + self.timing.give_back_all()
        self.returned_on_drain += len(returned)
        self.leases.release([job for job in returned if job.token is not None])
        renewal = self.leases.renewal
        if renewal.running and not len(self.leases):
            renewal.stop()

        def stopped(_: Any) -> None:
            if renewal.running:
                renewal.stop()

        return self.in_flight.settled().addCallback(stopped)
