"""
Store health: while the result store fails, no new task starts (its
outcome could not be stored); a read of a key nobody writes, with a
doubling pause, tells when it is back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from twistedq.backends.base import IResultBackend
from twistedq.daemon.backoff import FIRST_PAUSE, persist
from twistedq.daemon.events import EventKind, Events
from twistedq.daemon.inflight import InFlight

__all__ = ["STORE_PROBE_ID", "StoreHealth"]

#: The key read to learn whether an unavailable store is back (no task has it).
STORE_PROBE_ID = "00000000-0000-0000-0000-000000000000"

log = Logger()


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
