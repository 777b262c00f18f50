"""
Interval and crontab schedules: their slots over month ends, leap days and
daylight-saving changes.
"""

import datetime
import itertools

from twisted.trial.unittest import SynchronousTestCase

from twistedq.schedules import Crontab, Interval, crontab, schedule_from_spec, slots_between

UTC = datetime.timezone.utc


def at(*fields, tz=UTC):
    return datetime.datetime(*fields, tzinfo=tz).timestamp()


def utc(moment):
    return datetime.datetime.fromtimestamp(moment, UTC).replace(tzinfo=None)


def run(schedule, start, count):
    """
    The first ``count`` slots after ``start``, as naive UTC datetimes.
    """
    slots, slot = [], start
    for _ in range(count):
        slot = schedule.next_slot(slot)
        slots.append(utc(slot))
    return slots


class IntervalTests(SynchronousTestCase):
    def test_slots_counted_from_epoch(self):
        """
        A 30-second interval has slots at :00 and :30 of every minute,
        whoever computes them and whenever.
        """
        schedule = Interval(30)
        self.assertEqual(
            run(schedule, at(2026, 1, 1, 12, 0, 10), 3),
            [
                datetime.datetime(2026, 1, 1, 12, 0, 30),
                datetime.datetime(2026, 1, 1, 12, 1, 0),
                datetime.datetime(2026, 1, 1, 12, 1, 30),
            ],
        )

    def test_slot_itself_is_not_next(self):
        """
        The next slot after a slot is the one after it; the last slot at a
        slot is itself, even for periods that are not whole seconds.
        """
        schedule = Interval(0.1)
        slot = schedule.next_slot(1_700_000_000.05)
        self.assertLess(abs(slot - 1_700_000_000.1), 1e-6)
        self.assertLess(abs(schedule.next_slot(slot) - 1_700_000_000.2), 1e-6)
        self.assertEqual(schedule.last_slot(slot), slot)

    def test_timedelta(self):
        """
        A timedelta is its number of seconds; a daily interval runs at
        midnight UTC, across a leap day and a month end.
        """
        schedule = Interval(datetime.timedelta(days=1))
        self.assertEqual(
            run(schedule, at(2028, 2, 28, 8), 3),
            [
                datetime.datetime(2028, 2, 29),
                datetime.datetime(2028, 3, 1),
                datetime.datetime(2028, 3, 2),
            ],
        )

    def test_invalid(self):
        """
        Zero, negative, infinite and non-numeric periods are refused.
        """
        for period in (0, -1, float("inf"), "5", None, True):
            self.assertRaises(ValueError, Interval, period)

    def test_slots_between(self):
        """
        ``slots_between`` excludes its start and includes its end.
        """
        self.assertEqual(list(slots_between(Interval(10), 100, 130)), [110, 120, 130])
        self.assertEqual(list(slots_between(Interval(10), 100, 109)), [])


class CrontabFieldTests(SynchronousTestCase):
    def test_patterns(self):
        """
        Stars, steps, ranges, lists and names.
        """
        schedule = crontab(minute="*/15", hour="9-17/4", day_of_week="mon-fri")
        self.assertEqual(schedule.minutes, [0, 15, 30, 45])
        self.assertEqual(schedule.hours, [9, 13, 17])
        self.assertEqual(schedule.weekdays, frozenset({1, 2, 3, 4, 5}))
        self.assertEqual(crontab(month_of_year="jan,jul").months, frozenset({1, 7}))
        self.assertEqual(crontab(minute=[5, 10]).minutes, [5, 10])
        self.assertEqual(crontab(day_of_week=7).weekdays, frozenset({0}))
        self.assertEqual(crontab(minute="50/5").minutes, [50, 55])

    def test_bad_fields(self):
        """
        Numbers out of range, unreadable text, backward ranges, zero steps,
        unknown zones and impossible dates are refused when the schedule
        is made, not when it first runs.
        """
        for fields in (
            {"minute": 60},
            {"hour": "24"},
            {"minute": "x"},
            {"minute": "10-5"},
            {"minute": "*/0"},
            {"day_of_month": 0},
            {"day_of_week": "funday"},
            {"tz": "Mars/Olympus_Mons"},
            {"day_of_month": 31, "month_of_year": "feb"},
            {"minute": True},
        ):
            self.assertRaises(ValueError, Crontab, **fields)

    def test_spec_round_trip(self):
        """
        A crontab's spec gives back an equal crontab; a zone-less one takes
        the default zone, one with a zone keeps its own.
        """
        schedule = crontab(minute=[0, 30], hour="2", day_of_week="sun")
        self.assertEqual(schedule_from_spec(schedule.spec()), schedule)
        self.assertEqual(schedule_from_spec(schedule.spec(), "Asia/Tokyo").tz, "Asia/Tokyo")
        paris = crontab(hour=2, tz="Europe/Paris")
        self.assertEqual(schedule_from_spec(paris.spec(), "Asia/Tokyo").tz, "Europe/Paris")
        self.assertEqual(schedule_from_spec({"every": 5}), Interval(5))
        self.assertRaises(ValueError, schedule_from_spec, {"at": "noon"})


class CrontabSlotTests(SynchronousTestCase):
    def test_month_end(self):
        """
        The 31st runs only in months that have one; the 1st after a month
        end comes next.
        """
        schedule = crontab(minute=0, hour=0, day_of_month="1,31")
        self.assertEqual(
            run(schedule, at(2026, 3, 30), 4),
            [
                datetime.datetime(2026, 3, 31),
                datetime.datetime(2026, 4, 1),
                datetime.datetime(2026, 5, 1),
                datetime.datetime(2026, 5, 31),
            ],
        )

    def test_leap_day(self):
        """
        29 February runs in leap years only.
        """
        schedule = crontab(minute=0, hour=12, day_of_month=29, month_of_year=2)
        self.assertEqual(
            run(schedule, at(2026, 1, 1), 2),
            [datetime.datetime(2028, 2, 29, 12), datetime.datetime(2032, 2, 29, 12)],
        )
        self.assertEqual(
            utc(schedule.last_slot(at(2031, 1, 1))), datetime.datetime(2028, 2, 29, 12)
        )

    def test_day_of_month_or_day_of_week(self):
        """
        As in cron, a day matches when either restricted day field does.
        """
        schedule = crontab(minute=0, hour=0, day_of_month=13, day_of_week="fri")
        days = [slot.date() for slot in run(schedule, at(2026, 2, 1), 5)]
        self.assertEqual(
            days,
            [
                datetime.date(2026, 2, 6),
                datetime.date(2026, 2, 13),
                datetime.date(2026, 2, 20),
                datetime.date(2026, 2, 27),
                datetime.date(2026, 3, 6),
            ],
        )
        self.assertEqual(
            run(crontab(minute=0, hour=0, day_of_week="mon"), at(2026, 2, 1), 1),
            [datetime.datetime(2026, 2, 2)],
        )
        # A field starting with "*" is unrestricted, as in cron: both must match.
        every_other = crontab(minute=0, hour=0, day_of_month=13, day_of_week="*/2")
        self.assertEqual(
            [slot.date() for slot in run(every_other, at(2026, 1, 1), 2)],
            [datetime.date(2026, 1, 13), datetime.date(2026, 6, 13)],
        )

    def test_utc_by_default(self):
        """
        Without a zone the fields are UTC.
        """
        self.assertEqual(
            run(crontab(minute=30, hour=2), at(2026, 7, 1), 1),
            [datetime.datetime(2026, 7, 1, 2, 30)],
        )

    def test_zone_follows_summer_time(self):
        """
        02:30 in Paris is 01:30 UTC in winter and 00:30 UTC in summer.
        """
        schedule = crontab(minute=30, hour=2, tz="Europe/Paris")
        self.assertEqual(run(schedule, at(2026, 1, 10), 1), [datetime.datetime(2026, 1, 10, 1, 30)])
        self.assertEqual(run(schedule, at(2026, 7, 10), 1), [datetime.datetime(2026, 7, 10, 0, 30)])

    def test_spring_forward_gap(self):
        """
        On 29 March 2026 Paris skips 02:00-03:00: the 02:30 run still
        happens once that day, at 03:30 local (01:30 UTC), and the days
        around it keep their own slot.
        """
        schedule = crontab(minute=30, hour=2, tz="Europe/Paris")
        self.assertEqual(
            run(schedule, at(2026, 3, 28, 12), 3),
            [
                datetime.datetime(2026, 3, 29, 1, 30),
                datetime.datetime(2026, 3, 30, 0, 30),
                datetime.datetime(2026, 3, 31, 0, 30),
            ],
        )

    def test_fall_back_repeat(self):
        """
        On 25 October 2026 Paris lives 02:00-03:00 twice: the 02:30 run
        happens once, at the first 02:30 (00:30 UTC).
        """
        schedule = crontab(minute=30, hour=2, tz="Europe/Paris")
        self.assertEqual(
            run(schedule, at(2026, 10, 24, 12), 2),
            [datetime.datetime(2026, 10, 25, 0, 30), datetime.datetime(2026, 10, 26, 1, 30)],
        )

    def test_every_minute_through_fall_back(self):
        """
        Every minute through New York's repeated hour: 120 distinct,
        increasing slots over the two real hours from 01:00 EDT, none
        twice; the repeated local minutes run once.
        """
        schedule = crontab(tz="America/New_York")
        start = at(2026, 11, 1, 4, 59, 30)  # 00:59:30 EDT
        slots = list(slots_between(schedule, start, start + 2 * 3600 + 60))
        self.assertEqual(len(slots), len(set(slots)))
        self.assertEqual(slots, sorted(slots))
        self.assertEqual(utc(slots[0]), datetime.datetime(2026, 11, 1, 5, 0))
        # 01:00-01:59 EDT run, then 01:00-01:59 EST are skipped as repeats,
        # then 02:00 EST onwards.
        self.assertEqual(len(slots), 60 + 1)
        self.assertEqual(utc(slots[60]), datetime.datetime(2026, 11, 1, 7, 0))

    def test_every_minute_through_spring_forward(self):
        """
        Every minute through New York's skipped hour: the slots keep going
        with no gap of real time longer than a minute.
        """
        schedule = crontab(tz="America/New_York")
        start = at(2026, 3, 8, 6, 30)  # 01:30 EST
        slots = list(slots_between(schedule, start, start + 3600))
        self.assertEqual(len(slots), 60)
        gaps = {b - a for a, b in itertools.pairwise(slots)}
        self.assertEqual(gaps, {60.0})

    def test_last_slot(self):
        """
        ``last_slot`` is the latest slot at or before the moment.
        """
        schedule = crontab(minute=0, hour="*/6")
        self.assertEqual(
            utc(schedule.last_slot(at(2026, 5, 5, 13, 20))), datetime.datetime(2026, 5, 5, 12)
        )
        self.assertEqual(
            utc(schedule.last_slot(at(2026, 5, 5, 12))), datetime.datetime(2026, 5, 5, 12)
        )
        self.assertEqual(utc(schedule.last_slot(at(2026, 5, 1, 3))), datetime.datetime(2026, 5, 1))
