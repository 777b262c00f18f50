"""
The daemon's own periodic jobs, run by the scheduler like periodic tasks
(once per slot across daemons) but on the reactor.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from twisted.logger import Logger

from twistedq.backends.base import IResultBackend
from twistedq.scheduler import LocalJob
from twistedq.schedules import Interval

__all__ = ["CLEANUP_JOB", "RECOVERY_INTERVAL", "RECOVERY_JOB", "cleanup_job", "recovery_job"]

#: The name of the periodic job that removes expired results.
CLEANUP_JOB = "twistedq.cleanup_expired_results"
#: The name of the periodic job that publishes again the parked messages of
#: daemons that died, and how often it runs (seconds).
RECOVERY_JOB = "twistedq.recover_parked_tasks"
RECOVERY_INTERVAL = 10.0

log = Logger()


def cleanup_job(backend: IResultBackend, interval: float) -> LocalJob | None:
    """
    The periodic job removing expired results from a store that does not
    expire them by itself (SQLite, the Django database: those with
    ``delete_expired``), or None for the others.  A failed cleanup is
    logged; the next slot runs as usual.
    """
    delete_expired = getattr(backend, "delete_expired", None)
    if delete_expired is None:
        return None

    async def clean() -> None:
        removed = await delete_expired()
        if removed:
            log.info("Removed {count} expired results", count=removed)

    return LocalJob(CLEANUP_JOB, Interval(interval), clean)


def recovery_job(recover: Callable[[], Awaitable[None]]) -> LocalJob:
    """
    The periodic job publishing again the parked messages of daemons that
    died (:py:meth:`twistedq.daemon.leases.LeaseKeeper.recover_parked`).
    """
    return LocalJob(RECOVERY_JOB, Interval(RECOVERY_INTERVAL), recover)
