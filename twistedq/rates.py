"""
The one rule for a task's rate limit, wherever it is written: a
:py:class:`~twistedq.task.Task`'s ``rate_limit``, ``@task(rate_limit=...)``,
``apply_async(rate_limit=...)``, a message's ``"rate_limit"`` field and
``twistd twistedq --rate-limit``.

A rate is a string ``"10/s"``, ``"600/m"``, ``"36000/h"`` or ``"10"`` (per
second), or a number of tasks per second (``10``, ``0.5``), between one a
day (:py:data:`MIN_RATE`) and a million a second (:py:data:`MAX_RATE`).
A string has at most seven digits before its point and six after it, and
no spaces.  Zero is refused everywhere: leave the rate out (``None``) for
no limit.

This module imports nothing of twistedq: the client, the daemon and the
message decoder share it.
"""

from __future__ import annotations

import math
import re

__all__ = ["MAX_RATE", "MIN_RATE", "RateValue", "parse_rate"]

#: The slowest rate: one task a day (tasks per second).
MIN_RATE = 1.0 / 86400.0
#: The fastest rate: a million tasks a second.
MAX_RATE = 1e6

#: What a rate may be written as.
RateValue = str | int | float

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"(\d{1,7}(?:\.\d{1,6})?)(?:/([smh]))?")


def parse_rate(value: object) -> float:
    """
    Tasks per second of a rate written ``"100/s"``, ``"10/m"``, ``"5/h"``,
    ``"2.5"`` or as a number per second (``10``, ``0.5``).

    :raises ValueError: it is not such a rate, or it is outside one a day
        to a million a second (zero included).
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        rate = float(value)
    elif isinstance(value, str):
        match = _RATE.fullmatch(value)
        if match is None:
            raise ValueError(
                f"{_quote(value)} is not a rate such as 10/s, 600/m, 36000/h or 10 "
                "(per second; no spaces, at most 6 decimals)"
            )
        rate = float(match.group(1)) / _UNITS[match.group(2) or "s"]
    else:
        raise ValueError(f"{_quote(value)} is not a rate such as 10/s or a number per second")
    if math.isnan(rate) or not MIN_RATE <= rate <= MAX_RATE:
        raise ValueError(
            f"the rate {_quote(value)} is outside 1 a day to 1000000/s (leave it out for no limit)"
        )
    return rate


def _quote(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
