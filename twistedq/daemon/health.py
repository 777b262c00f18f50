"""
Store health: while the result store fails, no new task starts (its
outcome could not be stored); a read of a key nobody writes, with a
doubling pause, tells when it is back.  While the daemon runs, the same
read every :py:data:`WATCH_PERIOD` seconds in which the store was not
otherwise heard from finds an outage even when no task arrives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from twistedq.backends.base import IResultBackend
from twistedq.daemon.backoff import FIRST_PAUSE, persist
from twistedq.daemon.events import EventKind, Events
from twistedq.daemon.inflight import InFlight

__all__ = [
    "NOT_CONSUMING_LIMIT",
    "STORE_PROBE_ID",
    "WATCH_PERIOD",
    "ConsumingWatch",
    "StoreHealth",
]

#: The key read to learn whether an unavailable store is back (no task has it).
STORE_PROBE_ID = "00000000-0000-0000-0000-000000000000"

#: How often an idle daemon reads the store to learn whether it answers;
#: a read that takes longer counts as a failure.
WATCH_PERIOD = 2.0

#: How long (seconds) a daemon may go without consuming its queues (from
#: its start, or since it last consumed them all) before the health check
#: ``/`` calls it unhealthy: longer than a broker node's restart or a
#: reconnection's pauses, shorter than a queue refused for good.
NOT_CONSUMING_LIMIT = 60.0

log = Logger()


class NotConsuming(Protocol):
    def not_consuming_since(self, started: float) -> float | None:
        """
        Since when some queue has not been consumed (``started`` for one
        never consumed), or None while all are.
        """


class StoreHealth:
    """
    Whether the result store answers, as the last read or write found.

    :ivar down_since: when the store was found unavailable (clock
        seconds), or None while it answers.
    """

    def __init__(
        self,
        backend: IResultBackend,
        clock: IReactorTime,
        events: Events,
        in_flight: InFlight,
        on_back: Callable[[], None],
    ) -> None:
        self.backend = backend
        self.clock = clock
        self.events = events
        self.in_flight = in_flight
        self.on_back = on_back
        self.down_since: float | None = None
        self._probe: defer.Deferred[Any] | None = None
        self._heard_at = float("-inf")
        self._watch = LoopingCall(self._look)
        self._watch.clock = clock
        self._period = WATCH_PERIOD
        self._looking = False

    def watch(self, period: float = WATCH_PERIOD) -> None:
        """
        From now on, read the store every ``period`` seconds in which
        nothing was heard from it, at once first.
        """
        if not self._watch.running:
            self._period = period
            self._watch.start(period, now=True)

    def stop_watching(self) -> None:
        if self._watch.running:
            self._watch.stop()

    def _look(self) -> None:
        period = self._period
        if (
            self.down_since is not None  # the probe is at it
            or self._looking
            or self.clock.seconds() - self._heard_at < period
        ):
            return
        self._looking = True
        d = defer.maybeDeferred(self.backend.get_result, STORE_PROBE_ID)
        d.addTimeout(period, self.clock)

        def unanswered(failure: Failure) -> None:
            if failure.check(defer.TimeoutError):
                why = f"no answer within {period} s"
            else:
                why = failure.getErrorMessage() or repr(failure.value)
            log.warn("The result store did not answer a health read: {why}", why=why)
            self.failed()

        def done(_: Any) -> None:
            self._looking = False

        d.addCallbacks(lambda _: self.answered(), unanswered).addBoth(done)

    @property
    def available(self) -> bool:
        return self.down_since is None

    def failed(self) -> None:
        """
        The store failed a read or a write: start no new task until it
        answers again (a write retried or a probe read succeeds).
        """
        if self.down_since is not None or self.in_flight.stopping:
            return
        self.down_since = self.clock.seconds()
        self.events.report(EventKind.STORE_DOWN)
        log.warn("The result store is unavailable: no new task starts until it is back")

        def again(failure: Failure, pause: float) -> bool:
            return self.down_since is not None and not self.in_flight.stopping

        def read() -> defer.Deferred[Any]:
            return self.backend.get_result(STORE_PROBE_ID)

        first = deferLater(self.clock, FIRST_PAUSE, lambda: None)
        probe = first.addCallback(lambda _: persist(self.clock, read, again, 2 * FIRST_PAUSE))
        probe.addCallbacks(lambda _: self.answered(), lambda f: None)
        self._probe = probe
        self.in_flight.track(probe)

    def answered(self) -> None:
        """
        The store answered a read or a write.
        """
        self._heard_at = self.clock.seconds()
        if self.down_since is None:
            return
        log.info(
            "The result store is back after {seconds:.1f} s: starting tasks again",
            seconds=self.clock.seconds() - self.down_since,
        )
        self.down_since = None
        self.stop_probing()
        self.events.report(EventKind.STORE_UP)
        self.on_back()

    def stop_probing(self) -> None:
        probe, self._probe = self._probe, None
        if probe is not None:
            probe.cancel()  # a no-op once it has its result


class ConsumingWatch:
    """
    Whether the daemon has been consuming its queues lately:
    :py:meth:`problem` says what is wrong once some queue has not been
    consumed for more than ``limit`` seconds, counted from the watch's
    creation (the daemon's start) for a queue never consumed.  Nothing is
    done per task: the consumer notes when a queue stops being consumed.

    :param consumer: the daemon's consumer
        (:py:meth:`twistedq.amqp.consumer.Consumer.not_consuming_since`).
    """

    def __init__(
        self,
        consumer: NotConsuming,
        clock: IReactorTime,
        limit: float = NOT_CONSUMING_LIMIT,
    ) -> None:
        self.consumer = consumer
        self.clock = clock
        self.limit = limit
        self.started = clock.seconds()

    def problem(self) -> str | None:
        """
        Why the daemon is unhealthy (a queue not consumed for more than the
        limit), or None.
        """
        since = self.consumer.not_consuming_since(self.started)
        if since is None:
            return None
        idle = self.clock.seconds() - since
        if idle <= self.limit:
            return None
        return f"not consuming its queues for {idle:.0f} s"
