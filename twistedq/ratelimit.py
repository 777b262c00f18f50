"""
Rate limits of tasks: ``rate_limit="100/s"`` (or ``"10/m"``, ``"5/h"``).

A daemon keeps one :py:class:`TokenBucket` per limited task name and gives
each of its tasks a start slot: slots are ``1 / rate`` seconds apart (a
bucket of one token, as Celery's), so a task limited to 10/s starts at
most ten times a second in that daemon, however many wait.  A task over
its limit waits in the daemon, unacknowledged, without holding up any
other task (:py:class:`RateLimits`); past a bound it goes to a delay queue
of the broker instead, so one limited task never fills the prefetch
window.  Its slot stays reserved for it meanwhile: when it comes back it
starts at that slot, so a backlog of limited tasks passes through the
delay queues a few times each (about ``log2`` of its wait, as each hop
waits the longest power of two under what is left), not once a second.

A rate carried by messages (``apply_async(rate_limit=...)``) spaces a
message only from the earlier ones of its name carrying the same rate: a
message at 1/h waits an hour after the last 1/h one, and never holds up
the 10/s ones.  The daemon's own limit (``--rate-limit``) is one bucket
per name, whatever the messages carry.

With ``cluster`` (``twistd twistedq --cluster-rate-limits``) a limit holds
across every daemon sharing the result store: time is cut into intervals
of ``1 / rate`` seconds (by each daemon's clock), and a task starts only
once its daemon claimed its interval in the store
(:py:meth:`~twistedq.backends.base.IScheduleStore.claim_slot`, the atomic,
expiring claim the periodic scheduler uses, which every store has); a
daemon that finds the interval taken tries again at its next local slot.
A claim expires after two intervals, or the result expiry if sooner.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from twistedq.backends.base import IScheduleStore, SlotClaim
from twistedq.rates import parse_rate

if TYPE_CHECKING:
    from twistedq.daemon.job import Job

__all__ = [
    "DEFAULT_HOLD",
    "RateLimits",
    "TokenBucket",
    "parse_rate",
    "parse_rate_limits",
]

log = Logger()

#: How long after its slot a task sent to a delay queue keeps it reserved
#: (seconds): one that comes back later takes the next free slot.
RESERVED_FOR = 60.0

#: The most buckets of rates kept before the idle ones are forgotten.
MAX_BUCKETS = 4096

#: A task whose start slot is further than this many seconds ahead goes to
#: a delay queue of the broker rather than wait in the daemon.
DEFAULT_HOLD = 10.0


def parse_rate_limits(text: str) -> dict[str, float]:
    """
    The limits of ``name=rate,name=rate`` (``twistd twistedq
    --rate-limit``): task name to tasks per second.

    :raises ValueError: an entry is empty or not ``name=rate``, its rate
        is bad, or a name comes twice.
    """
    limits: dict[str, float] = {}
    for entry in text.split(","):
        if not entry.strip():
            raise ValueError(f"{text!r} has an empty entry")
        name, equals, rate = entry.rpartition("=")
        name = name.strip()
        if not equals or not name:
            raise ValueError(f"{entry.strip()!r} is not name=rate (add=10/s)")
        if name in limits:
            raise ValueError(f"{name!r} is named twice")
        limits[name] = parse_rate(rate.strip())
    return limits


class TokenBucket:
    """
    Start slots ``1 / rate`` seconds apart, ``burst`` of them at once
    (the generic cell rate algorithm: one number, the theoretical time of
    the next slot).

    :ivar rate: slots per second.
    :ivar burst: how many slots may fall at the same time.
    """

    __slots__ = ("_next", "burst", "rate")

    def __init__(self, rate: float, burst: int = 1) -> None:
        self.rate = rate
        self.burst = burst
        self._next = -math.inf

    def delay(self, now: float) -> float:
        """
        Seconds from ``now`` to the next free slot, without taking it.
        """
        tolerance = (self.burst - 1) / self.rate
        return max(0.0, self._next - tolerance - now)

    def reserve(self, now: float) -> float:
        """
        Take the next free slot; return the seconds from ``now`` to it.
        """
        wait = self.delay(now)
        self._next = max(self._next, now) + 1.0 / self.rate
        return wait


class RateLimits:
    """
    The rate limits of one daemon's tasks, applied as the feeder queues
    them: :py:meth:`hold_back` holds a task over its limit until its slot.

    A task waits in the daemon (its message unacknowledged, its claim
    renewed) while its slot is at most ``hold`` seconds ahead and fewer
    than ``max_held`` limited tasks wait there; otherwise its message is
    published again into a delay queue of the broker (``send_later``, at
    least a second ahead) and acknowledged, and it comes back later, to be
    held or sent on again.  So limited tasks never occupy more than
    ``max_held`` of the prefetch window: the others keep arriving.

    :ivar limits: task name to tasks per second, the daemon's own
        (``--rate-limit``): they win over the limit a message carries.
        Without one, a message's rate spaces it only from the messages of
        its name carrying the same rate.
    :ivar max_claim: the longest a cluster-wide claim stays in the store
        (seconds; the result expiry), or None.
    :ivar held: the jobs waiting here for their slot.
    """

    def __init__(
        self,
        clock: IReactorTime,
        limits: Mapping[str, float] | None = None,
        *,
        max_held: int = 16,
        hold: float = DEFAULT_HOLD,
        cluster: IScheduleStore | None = None,
        owner: str = "",
        max_claim: float | None = None,
    ) -> None:
        self.clock = clock
        self.cluster = cluster
        self.owner = owner
        self.max_claim = max_claim
        self.limits = dict(limits or {})
        self.max_held = max_held
        self.hold = hold
        self.held: set[Job] = set()
        #: Task id to the slot reserved for it while it is in a delay queue.
        self.reserved: dict[str, float] = {}
        #: (name, None) for a limit of the daemon's, (name, rate) for a
        #: rate messages carry: each rate has its own slots.
        self._buckets: dict[tuple[str, float | None], TokenBucket] = {}
        #: Waits the job (seconds), then passes it on; from the feeder.
        self.wait: Callable[[Job, float], None] | None = None
        #: Publishes the job to come back after about the seconds given
        #: and acknowledges it; fires with False if it could not.
        self.send_later: Callable[[Job, float], defer.Deferred[bool]] | None = None
        #: Tracks a store call until it is answered; from the feeder.
        self.track: Callable[[defer.Deferred[Any]], None] | None = None
        #: How many tasks went to a delay queue for their rate limit.
        self.sent_later = 0
        #: How many cluster slots were found taken by another daemon.
        self.contended = 0
        self._store_failing = False

    def __bool__(self) -> bool:
        """
        True even with no limit of its own: it applies those messages carry.
        """
        return True

    def bucket(self, name: str, carried: str | float | None = None) -> TokenBucket | None:
        """
        The bucket of task ``name``: the daemon's limit for it, else the
        bucket of the rate its message carries (``carried``), shared only
        with the messages of that name carrying the same rate, so that a
        slow one never holds up faster ones; None when it has no limit.
        """
        rate = self.limits.get(name)
        key: tuple[str, float | None]
        if rate is not None:
            key = (name, None)
        else:
            if carried is None:
                return None
            try:
                rate = parse_rate(carried)
            except ValueError:
                return None
            key = (name, rate)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._forget_idle()
            bucket = self._buckets[key] = TokenBucket(rate)
        return bucket

    def _forget_idle(self) -> None:
        """
        Drop the buckets of carried rates with no slot ahead (a free slot
        is all a new bucket has too).
        """
        now = self.clock.seconds()
        self._buckets = {
            key: bucket
            for key, bucket in self._buckets.items()
            if key[1] is None or bucket.delay(now) > 0.0
        }

    def hold_back(self, job: Job) -> bool:
        """
        Whether ``job`` must wait for its slot: it is then held here (and
        passed to :py:attr:`wait`) or sent to a delay queue.  False when
        it may start now (its slot is taken).
        """
        carried = job.message.rate_limit
        if carried is None and not self.limits:
            return False  # the idle path: one attribute and one length read
        bucket = self.bucket(job.message.task, carried)
        if bucket is None:
            return False
        now = self.clock.seconds()
        slot = self.reserved.pop(job.task_id, None)
        if slot is None:  # its slot, the next free one, is taken now
            slot = now + bucket.reserve(now)
        delay = max(0.0, slot - now)
        if delay <= 0.0 and self.cluster is None:
            return False
        if len(self.held) >= self.max_held:
            self._prune()
        held = self.held
        if (
            delay >= 1.0
            and self.send_later is not None
            and (delay > self.hold or len(held) >= self.max_held)
        ):
            self._send_later(job, slot)
            return True
        held.add(job)
        assert self.wait is not None
        self.wait(job, delay)
        return True

    def after_slot(self, job: Job, run: Callable[[Job], None]) -> None:
        """
        ``job`` reached its local slot: ``run`` it, at once without a
        cluster-wide limit, else once its daemon claimed the current
        interval of its task in the store; when another daemon holds it,
        the job waits for its next local slot and tries again.  While the
        store fails, the local limit alone applies (nothing starts while
        the store is down anyway).
        """
        cluster = self.cluster
        bucket = self.bucket(job.message.task, job.message.rate_limit)
        if cluster is None or bucket is None:
            run(job)
            return
        from twistedq.daemon.job import JobState

        rate = bucket.rate
        interval = int(self.clock.seconds() * rate)
        key = f"rate:{job.message.task}:{interval}"
        job.state = JobState.CHECKING
        claiming = defer.maybeDeferred(
            cluster.claim_slot, key, f"{self.owner}:{job.task_id}", self._claim_ttl(rate)
        )

        def claimed(found: SlotClaim) -> None:
            self._store_failing = False
            if found is SlotClaim.WON:
                run(job)
                return
            self.contended += 1
            self.held.add(job)
            assert self.wait is not None
            self.wait(job, bucket.reserve(self.clock.seconds()))

        def failed(failure: Failure) -> None:
            if not self._store_failing:
                log.warn(
                    "Could not claim a rate limit slot in the store ({why}): "
                    "limiting in this daemon alone until it answers",
                    why=str(failure.value) or type(failure.value).__name__,
                )
            self._store_failing = True
            run(job)

        claiming.addCallbacks(claimed, failed)
        if self.track is not None:
            self.track(claiming)

    def _claim_ttl(self, rate: float) -> float:
        """
        How long a claim of an interval lasts in the store: two intervals
        and a second, at most :py:attr:`max_claim` (the result expiry).
        """
        ttl = 2.0 / rate + 1.0
        return ttl if self.max_claim is None else min(ttl, self.max_claim)

    def release(self, job: Job) -> None:
        """
        ``job`` reached its slot (or left): it no longer counts as held.
        """
        self.held.discard(job)

    def _prune(self) -> None:
        from twistedq.daemon.job import JobState

        self.held = {job for job in self.held if job.state is JobState.WAITING}

    def _send_later(self, job: Job, slot: float) -> None:
        """
        Send ``job`` to a delay queue until about ``slot``, which stays
        reserved for it: when it comes back, here, it starts at that slot
        (or is sent on again, for what is left of the wait).
        """
        assert self.send_later is not None
        self.sent_later += 1
        reserved = self.reserved
        reserved[job.task_id] = slot
        if len(reserved) % 1024 == 0:  # forget the slots of tasks never back
            stale = self.clock.seconds() - RESERVED_FOR
            self.reserved = {key: at for key, at in reserved.items() if at > stale}
        d = self.send_later(job, slot - self.clock.seconds())

        def sent(ok: bool) -> None:
            if not ok:  # it waits here after all, past the bound
                self.reserved.pop(job.task_id, None)
                self.held.add(job)
                assert self.wait is not None
                self.wait(job, max(0.0, slot - self.clock.seconds()))

        d.addCallback(sent)

    def stats(self) -> dict[str, Any]:
        """
        The figures of ``/stats``: the limits in force (tasks per second;
        the fastest of a name whose messages carry several),
        how many tasks wait here for their slot, how many went to a delay
        queue for their limit.
        """
        return {
            "limits": {
                name: bucket.rate
                for (name, _), bucket in sorted(
                    self._buckets.items(), key=lambda item: (item[0][0], item[1].rate)
                )
            },
            "held": sum(1 for job in self.held if job.state.value == "waiting"),
            "sent_later": self.sent_later,
            "cluster": self.cluster is not None,
            "contended": self.contended,
        }
