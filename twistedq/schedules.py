"""
When periodic tasks run: fixed intervals and crontab-style schedules.

A schedule is a set of *slots*, instants on the UTC time line given as
seconds since the epoch.  Every daemon computes the same slots from the same
schedule, so a slot names one run of a periodic task wherever it is
computed (:py:mod:`twistedq.scheduler` claims each slot once in the result
store).

- :py:class:`Interval` slots are the multiples of the period counted from
  the epoch (midnight UTC, 1 January 1970): a 30-second task runs at :00
  and :30 of every minute, a daily one at midnight UTC.
- :py:class:`Crontab` slots are the minutes whose fields match, computed in
  UTC unless the schedule is given a time zone.  In a zone with daylight
  saving time, a local time that does not exist (the hour skipped in
  spring) runs at the instant the clock jumps to, shifted by the gap as
  :py:mod:`zoneinfo` maps it, and a local time that occurs twice (the hour
  repeated in autumn) runs once, at its first occurrence.  As in cron, when
  both ``day_of_month`` and ``day_of_week`` are restricted a day matches
  if either does.

A schedule travels from the children to the daemon as a JSON object,
:py:meth:`Interval.spec` or :py:meth:`Crontab.spec`, read back by
:py:func:`schedule_from_spec`.
"""

from __future__ import annotations

import datetime
import functools
import math
from collections.abc import Iterator
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "CATCH_UP_POLICIES",
    "Crontab",
    "Interval",
    "Schedule",
    "crontab",
    "schedule_from_spec",
    "slots_between",
]

#: What the scheduler does with the slots that passed while no daemon ran:
#: ``"once"`` runs the task once for all of them, ``"skip"`` runs none.
CATCH_UP_POLICIES = ("once", "skip")

_UTC = datetime.timezone.utc
#: How many years ahead a crontab is searched for its next slot (a 29
#: February that must also be a Monday comes back within 28 years).
_SEARCH_YEARS = 29


class Schedule(Protocol):
    """
    The slots of a periodic task.
    """

    def next_slot(self, after: float) -> float:
        """
        The first slot strictly later than ``after`` (seconds since the epoch).
        """

    def last_slot(self, at_or_before: float) -> float:
        """
        The latest slot at or before ``at_or_before``.
        """

    def spec(self) -> dict[str, Any]:
        """
        This schedule as a JSON object, for :py:func:`schedule_from_spec`.
        """


class Interval:
    """
    A slot every ``period`` seconds, counted from the epoch.

    :raises ValueError: the period is not positive.
    """

    def __init__(self, period: float | datetime.timedelta) -> None:
        if isinstance(period, datetime.timedelta):
            period = period.total_seconds()
        if isinstance(period, bool) or not isinstance(period, (int, float)):
            raise ValueError(f"an interval needs seconds or a timedelta, not {period!r}")
        if not period > 0 or math.isinf(period):
            raise ValueError(f"an interval must be positive and finite, not {period!r}")
        self.period = float(period)

    def __repr__(self) -> str:
        return f"Interval({self.period!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Interval) and other.period == self.period

    def __hash__(self) -> int:
        return hash(("interval", self.period))

    def _index(self, moment: float) -> int:
        # Round before flooring so that a slot computed as k * period and
        # given back is recognised as slot k despite float error.
        return math.floor(round(moment / self.period, 9))

    def next_slot(self, after: float) -> float:
        return (self._index(after) + 1) * self.period

    def last_slot(self, at_or_before: float) -> float:
        return self._index(at_or_before) * self.period

    def spec(self) -> dict[str, Any]:
        return {"every": self.period}


def _parse_field(
    value: str | int | list[int] | tuple[int, ...] | set[int] | frozenset[int],
    low: int,
    high: int,
    what: str,
    names: dict[str, int] | None = None,
) -> frozenset[int]:
    """
    The numbers a crontab field matches: ``*``, ``5``, ``1-5``, ``*/15``,
    ``10-40/10``, lists of those separated by commas, names where the field
    has them (``mon``, ``jan``), or a collection of numbers.
    """
    if isinstance(value, bool):
        raise ValueError(f"crontab {what}: {value!r} is not a number or pattern")
    if isinstance(value, int):
        items: list[int] = [value]
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = [int(item) for item in value]
    elif isinstance(value, str):
        items = []
        for part in value.lower().replace(" ", "").split(","):
            items.extend(_parse_part(part, low, high, what, names or {}))
    else:
        raise ValueError(f"crontab {what}: {value!r} is not a number or pattern")
    matched = frozenset(items)
    if not matched:
        raise ValueError(f"crontab {what}: {value!r} matches nothing")
    outside = sorted(item for item in matched if not low <= item <= high)
    if outside:
        raise ValueError(f"crontab {what}: {outside} outside {low}-{high}")
    return matched


def _parse_part(part: str, low: int, high: int, what: str, names: dict[str, int]) -> list[int]:
    def number(text: str) -> int:
        if text in names:
            return names[text]
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"crontab {what}: cannot read {text!r}") from None

    span, _, step_text = part.partition("/")
    step = number(step_text) if step_text else 1
    if step < 1:
        raise ValueError(f"crontab {what}: step {step_text!r} must be at least 1")
    if span == "*":
        start, end = low, high
    elif "-" in span:
        first, _, last = span.partition("-")
        start, end = number(first), number(last)
        if end < start:
            raise ValueError(f"crontab {what}: range {span!r} runs backwards")
    else:
        start = number(span)
        end = high if step_text else start
    return list(range(start, end + 1, step))


_WEEKDAYS = {name: number for number, name in enumerate("sun mon tue wed thu fri sat".split())}
_MONTHS = {
    name: number
    for number, name in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)
}


class Crontab:
    """
    Slots at the minutes whose fields all match, like a line of a crontab.
    Each field is a pattern (``"*"``, ``"*/15"``, ``"1-5"``, ``"mon-fri"``,
    ``"0,30"``), a number or a collection of numbers.

    :param minute: 0-59.
    :param hour: 0-23.
    :param day_of_week: 0-7 or ``sun``-``sat``; 0 and 7 are Sunday.
    :param day_of_month: 1-31.
    :param month_of_year: 1-12 or ``jan``-``dec``.
    :param tz: the IANA time zone the fields are read in (``"Europe/Paris"``);
        None means the daemon's ``--timezone``, UTC unless given.
    :raises ValueError: a field or the time zone cannot be read, or no day
        ever matches (31 February).
    """

    _FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")

    def __init__(
        self,
        minute: Any = "*",
        hour: Any = "*",
        day_of_week: Any = "*",
        day_of_month: Any = "*",
        month_of_year: Any = "*",
        tz: str | None = None,
    ) -> None:
        self.fields = {
            "minute": minute,
            "hour": hour,
            "day_of_week": day_of_week,
            "day_of_month": day_of_month,
            "month_of_year": month_of_year,
        }
        self.minutes = sorted(_parse_field(minute, 0, 59, "minute"))
        self.hours = sorted(_parse_field(hour, 0, 23, "hour"))
        weekdays = _parse_field(day_of_week, 0, 7, "day_of_week", _WEEKDAYS)
        self.weekdays = frozenset(day % 7 for day in weekdays)
        self.days = _parse_field(day_of_month, 1, 31, "day_of_month")
        self.months = _parse_field(month_of_year, 1, 12, "month_of_year", _MONTHS)
        # As cron: a field is unrestricted when it starts with "*".
        self._any_weekday = _starred(day_of_week)
        self._any_day = _starred(day_of_month)
        self.tz = tz
        self.zone = _zone(tz)
        if not any(day <= _MONTH_DAYS[month] for month in self.months for day in self.days):
            if self._any_weekday:
                raise ValueError(f"crontab never runs: day {sorted(self.days)} of {self.months}")
        self._instants = functools.lru_cache(maxsize=16)(self._instants_on)

    def with_zone(self, tz: str) -> Crontab:
        """
        This schedule read in ``tz`` if it names no zone of its own.
        """
        if self.tz is not None:
            return self
        return Crontab(**self.fields, tz=tz)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in self.fields.items())
        return f"Crontab({fields}, tz={self.tz!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Crontab) and other.spec() == self.spec()

    def __hash__(self) -> int:
        return hash(repr(self.spec()))

    def _day_matches(self, day: datetime.date) -> bool:
        if day.month not in self.months:
            return False
        weekday = day.isoweekday() % 7  # Sunday 0
        if self._any_day or self._any_weekday:
            return day.day in self.days and weekday in self.weekdays
        return day.day in self.days or weekday in self.weekdays

    def _instants_on(self, day: datetime.date) -> tuple[float, ...]:
        """
        The slots of one local day, as sorted UTC instants.
        """
        if not self._day_matches(day):
            return ()
        instants = set()
        for hour in self.hours:
            for minute in self.minutes:
                local = datetime.datetime(day.year, day.month, day.day, hour, minute)
                instants.add(local.replace(tzinfo=self.zone, fold=0).timestamp())
        return tuple(sorted(instants))

    def _local_day(self, moment: float) -> datetime.date:
        return datetime.datetime.fromtimestamp(moment, self.zone).date()

    def next_slot(self, after: float) -> float:
        day = self._local_day(after) - datetime.timedelta(days=1)
        for _ in range(366 * _SEARCH_YEARS):
            for instant in self._instants(day):
                if instant > after:
                    return instant
            day += datetime.timedelta(days=1)
        raise ValueError(f"{self!r} has no slot after {after}")

    def last_slot(self, at_or_before: float) -> float:
        day = self._local_day(at_or_before) + datetime.timedelta(days=1)
        for _ in range(366 * _SEARCH_YEARS):
            for instant in reversed(self._instants(day)):
                if instant <= at_or_before:
                    return instant
            day -= datetime.timedelta(days=1)
        raise ValueError(f"{self!r} has no slot before {at_or_before}")

    def spec(self) -> dict[str, Any]:
        fields = {
            name: value if isinstance(value, (str, int)) else sorted(value)
            for name, value in self.fields.items()
        }
        return {"crontab": fields, "tz": self.tz}


def _starred(field: Any) -> bool:
    return isinstance(field, str) and field.strip().startswith("*")


_MONTH_DAYS = {
    1: 31,
    2: 29,
    3: 31,
    4: 30,
    5: 31,
    6: 30,
    7: 31,
    8: 31,
    9: 30,
    10: 31,
    11: 30,
    12: 31,
}


def _zone(tz: str | None) -> datetime.tzinfo:
    if tz is None or tz.upper() == "UTC":
        return _UTC
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {tz!r}") from None


def crontab(
    minute: Any = "*",
    hour: Any = "*",
    day_of_week: Any = "*",
    day_of_month: Any = "*",
    month_of_year: Any = "*",
    tz: str | None = None,
) -> Crontab:
    """
    A :py:class:`Crontab`, spelled as Celery spells it::

        class Nightly(PeriodicTask):
            name = "reports.nightly"
            run_every = crontab(minute=30, hour=2, tz="Europe/Paris")
    """
    return Crontab(minute, hour, day_of_week, day_of_month, month_of_year, tz)


def schedule_from_spec(spec: dict[str, Any], default_tz: str | None = None) -> Interval | Crontab:
    """
    The schedule a :py:meth:`~Interval.spec` or :py:meth:`~Crontab.spec`
    describes; a crontab without a zone of its own is read in ``default_tz``.

    :raises ValueError: the object describes no schedule.
    """
    if "every" in spec:
        return Interval(spec["every"])
    if "crontab" in spec:
        schedule = Crontab(**spec["crontab"], tz=spec.get("tz"))
        return schedule.with_zone(default_tz) if default_tz else schedule
    raise ValueError(f"not a schedule: {spec!r}")


def slots_between(schedule: Schedule, start: float, end: float) -> Iterator[float]:
    """
    The slots later than ``start`` and at or before ``end``, in order.
    """
    slot = schedule.next_slot(start)
    while slot <= end:
        yield slot
        slot = schedule.next_slot(slot)
