"""
Tasks of the rate limit, queue and hook tests
(``tests/integration/test_flow.py``).
"""

from __future__ import annotations

import time

from twistedq.task import task


@task(name="flow.limited")
def limited() -> float:
    """
    Return when it ran (limited by the daemon's --rate-limit).
    """
    return time.time()


@task(name="flow.quick")
def quick() -> float:
    """
    Return when it ran.
    """
    return time.time()


@task(name="flow.slow")
def slow(seconds: float) -> float:
    """
    Sleep ``seconds``; return when it ended.
    """
    time.sleep(seconds)
    return time.time()


@task(name="flow.hooked")
def hooked(value: int) -> int:
    return value * 2


@task(name="flow.fails")
def fails(text: str) -> None:
    raise ValueError(text)
