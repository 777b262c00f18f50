"""
Exceptions a task's caller may see in its result, importable on both sides.
"""

from __future__ import annotations

__all__ = ["SoftTimeLimitExceeded", "TimeLimitExceeded", "WorkerLostError"]


class SoftTimeLimitExceeded(Exception):
    """
    Raised inside a task when it runs past its soft time limit, so it can
    clean up; a task that lets it propagate fails with it.
    """


class TimeLimitExceeded(Exception):
    """
    The outcome of a task that ran past its hard time limit: the child
    running it was killed.
    """


class WorkerLostError(Exception):
    """
    The outcome of a task whose child process died while running it (a
    signal, a segfault, ``os._exit``, out of memory) on every attempt.
    """
