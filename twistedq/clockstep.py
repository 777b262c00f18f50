"""
Keeps the reactor's timers on time when the wall clock steps back.

Twisted's reactor times ``callLater`` by the wall clock
(:py:func:`time.time`): after the clock steps back an hour (a wrong NTP
server corrected, a virtual machine restored), every pending timer fires
an hour late, the scheduler's tick and heartbeats included.
:py:class:`ClockStepGuard` compares the wall clock with the monotonic
clock from a thread of its own, which a step does not stall, and when the
wall clock went back it moves every pending timer earlier by the step.  A
step forward is left alone: timers then fire early, which the scheduler
handles by its catch-up policy (:py:mod:`twistedq.scheduler`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.logger import Logger

__all__ = ["ClockStepGuard"]

log = Logger()


class ClockStepGuard(Service):
    """
    Moves the reactor's pending timers back by the size of a backward step
    of the wall clock.

    :param reactor: provides ``seconds``, ``getDelayedCalls`` and
        ``callFromThread``.
    :param interval: seconds between comparisons of the two clocks.
    :param tolerance: a disagreement smaller than this, in seconds, is not
        a step.
    """

    name = "clock-step-guard"

    def __init__(
        self,
        reactor: Any,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        interval: float = 1.0,
        tolerance: float = 1.0,
    ) -> None:
        self.reactor = reactor
        self.wall = wall
        self.monotonic = monotonic
        self.interval = interval
        self.tolerance = tolerance
        self.steps = 0
        self._last: tuple[float, float] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> float:
        """
        Compare the clocks (in the reactor thread); if the wall clock
        stepped back, move every pending timer earlier by the step.
        Returns the step found, negative for a step back, 0.0 for none.
        """
        wall, mono = self.wall(), self.monotonic()
        last, self._last = self._last, (wall, mono)
        if last is None:
            return 0.0
        step = (wall - last[0]) - (mono - last[1])
        if abs(step) <= self.tolerance:
            return 0.0
        self.steps += 1
        if step > 0:
            log.warn("The wall clock stepped forward {step:.1f} s", step=step)
            return step
        now = self.reactor.seconds()
        moved = 0
        for call in self.reactor.getDelayedCalls():
            if call.active():
                call.reset(max(0.0, call.getTime() + step - now))
                moved += 1
        log.warn(
            "The wall clock stepped back {step:.1f} s; {moved} timers moved back with it",
            step=-step,
            moved=moved,
        )
        return step

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.reactor.callFromThread(self.check)

    def startService(self) -> None:
        Service.startService(self)
        self.check()
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="clock-step-guard", daemon=True)
        self._thread.start()

    def stopService(self) -> None:
        Service.stopService(self)
        self._stop.set()
        self._thread = None
