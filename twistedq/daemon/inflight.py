"""
What the daemon must finish before it has drained, and whether it is
stopping: shared by every stage.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

__all__ = ["InFlight"]

log = Logger()


class InFlight:
    """
    The Deferreds of work under way (runs, store writes and reads,
    publishes), and the daemon's stopping flag.

    :ivar stopping: set once when the daemon drains: stages then give
        deliveries back instead of starting anything.
    """

    def __init__(self) -> None:
        self.stopping = False
        self._under_way: set[defer.Deferred[Any]] = set()

    def __len__(self) -> int:
        return len(self._under_way)

    def track(self, d: defer.Deferred[Any]) -> None:
        """
        Wait for ``d`` before the daemon has drained; an error it ends
        with is logged (each stage handles the errors it expects).
        """
        self._under_way.add(d)

        def done(result: Any) -> Any:
            self._under_way.discard(d)
            return result

        d.addBoth(done)
        d.addErrback(lambda f: log.failure("Unexpected error in the daemon's core", f))

    def settled(self) -> defer.Deferred[Any]:
        """
        Fire once all work under way now is done.
        """
        return defer.DeferredList(list(self._under_way))
