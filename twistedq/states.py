"""
Task states.
"""

from __future__ import annotations

__all__ = [
    "ALL_STATES",
    "FAILURE",
    "PENDING",
    "READY_STATES",
    "RECEIVED",
    "RETRY",
    "REVOKED",
    "STARTED",
    "SUCCESS",
]

#: Unknown to the result store: not yet run, or an id that was never sent.
PENDING = "PENDING"
#: Taken from the queue by a daemon.
RECEIVED = "RECEIVED"
#: Running in a child process.
STARTED = "STARTED"
#: Failed and waiting for another attempt.
RETRY = "RETRY"
#: Returned a value.
SUCCESS = "SUCCESS"
#: Raised an exception (or could not be run at all).
FAILURE = "FAILURE"
#: Cancelled before it ran.
REVOKED = "REVOKED"

#: States after which nothing more happens to a task.
READY_STATES = frozenset((SUCCESS, FAILURE, REVOKED))
ALL_STATES = frozenset((PENDING, RECEIVED, STARTED, RETRY, SUCCESS, FAILURE, REVOKED))
