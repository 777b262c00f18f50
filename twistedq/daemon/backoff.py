"""
The one back-off of the daemon's core: do a thing again after a pause that
doubles, up to a minute, while it fails and may be tried again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

__all__ = ["FIRST_PAUSE", "LONGEST_PAUSE", "persist"]

#: The first and the longest pause before doing a failed thing again.
FIRST_PAUSE = 0.5
LONGEST_PAUSE = 60.0

T = TypeVar("T")


def persist(
    clock: IReactorTime,
    attempt: Callable[[], defer.Deferred[T]],
    again: Callable[[Failure, float], bool],
    first: float = FIRST_PAUSE,
) -> defer.Deferred[T]:
    """
    Call ``attempt`` until it succeeds.  After each failure ``again(failure,
    pause)`` decides: True waits ``pause`` seconds and tries again (the
    pause doubles each time, up to :py:data:`LONGEST_PAUSE`); False ends
    with that failure.  Cancelling the result cancels the pause or attempt
    under way.
    """

    def run(pause: float) -> defer.Deferred[T]:
        def failed(failure: Failure) -> Any:
            if not again(failure, pause):
                return failure
            return deferLater(clock, pause, run, min(pause * 2, LONGEST_PAUSE))

        return defer.maybeDeferred(attempt).addErrback(failed)

    return run(first)
