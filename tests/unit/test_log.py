"""
Tests for :py:obj:`twistedq.log`: the task logger of
:py:obj:`twistedq.log.setup_logger` and the daemon's seed-format log of
:py:obj:`twistedq.log.format_seed_event` and
:py:obj:`twistedq.log.use_seed_format`.
"""

import io
import json
import logging
import multiprocessing
import os
import re
import sys
import time

from twisted.application.app import AppLogger
from twisted.logger import (
    FilteringLogObserver,
    LimitedHistoryLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    LogPublisher,
    jsonFileLogObserver,
    textFileLogObserver,
)
from twisted.python import log as legacy_log
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twistedq.log import (
    SEED_FORMAT,
    SEED_LINE,
    TASK_LOGGER_NAME,
    LevelFilter,
    LogLevelService,
    SeedLogFormatService,
    format_seed_event,
    setup_logger,
    use_log_level,
    use_seed_format,
)

# 2009-04-23 17:44:05.115 UTC, the time of the celery 0.2.0 README's example.
FROZEN = 1240508645.115

# A whole seed line, as logging writes it from the daemon's own process.
MAIN_LINE = re.compile(
    r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}: (?P<level>[A-Z]+)/MainProcess\] (?P<text>.*)\n$"
)


def _stamp(when):
    """
    ``when`` as the seed format writes it: local time with milliseconds.
    """
    millis = int((when - int(when)) * 1000)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when)) + f",{millis:03d}"


def _make_failure():
    """
    A :py:obj:`Failure` of a :py:obj:`ZeroDivisionError`, with a traceback.
    """
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        return Failure()


class ListHandler(logging.Handler):
    """
    Keeps the records it handles.
    """

    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


class LoggerTestCase(SynchronousTestCase):
    """
    Restores the task logger after each test, closing the handlers
    :py:obj:`setup_logger` left on it.
    """

    def setUp(self):
        logger = logging.getLogger(TASK_LOGGER_NAME)
        handlers = list(logger.handlers)
        level = logger.level
        propagate = logger.propagate

        def restore():
            for handler in list(logger.handlers):
                if handler not in handlers:
                    logger.removeHandler(handler)
                    handler.close()
            logger.setLevel(level)
            logger.propagate = propagate

        self.addCleanup(restore)


class SetupLoggerTests(LoggerTestCase):
    """
    Tests for :py:obj:`setup_logger`.
    """

    def test_stream(self):
        """
        The logger writes seed-format lines to a stream it is given, with the
        process name, and returns the logger named ``twistedq.task``.
        """
        out = io.StringIO()
        logger = setup_logger(logfile=out)
        logger.info("Did something: %s", "foo bar baz")
        self.assertEqual(logger.name, "twistedq.task")
        match = MAIN_LINE.match(out.getvalue())
        self.assertIsNotNone(match, out.getvalue())
        self.assertEqual(match.group("level"), "INFO")
        self.assertEqual(match.group("text"), "Did something: foo bar baz")

    def test_process_name(self):
        """
        The process name in the line is the current process's name, which a
        child sets to ``Process-N``.
        """
        process = multiprocessing.current_process()
        self.patch(process, "name", "Process-3")
        out = io.StringIO()
        setup_logger(logfile=out).warning("careful")
        self.assertRegex(out.getvalue(), r"^\[[^\]]+: WARNING/Process-3\] careful\n$")

    def test_task_keywords(self):
        """
        The keyword arguments a task receives (``task_id``, ``task_name``,
        ``logfile``, ``loglevel``) can be passed on as they are; the unknown
        ones are ignored.
        """
        out = io.StringIO()
        kwargs = {
            "task_id": "0b0c8a34",
            "task_name": "tasks.do_something",
            "logfile": out,
            "loglevel": logging.INFO,
        }
        setup_logger(**kwargs).info("hello")
        self.assertTrue(out.getvalue().endswith("INFO/MainProcess] hello\n"))

    def test_path(self):
        """
        A path names a file the lines are appended to.
        """
        path = self.mktemp()
        with open(path, "w") as existing:
            existing.write("earlier\n")
        setup_logger(logfile=path).info("Did something: %s", "foo")
        with open(path) as written:
            lines = written.readlines()
        self.assertEqual(lines[0], "earlier\n")
        self.assertEqual(len(lines), 2)
        match = MAIN_LINE.match(lines[1])
        self.assertIsNotNone(match, lines[1])
        self.assertEqual(match.group("text"), "Did something: foo")

    def test_standard_error(self):
        """
        Without a logfile the lines go to the standard error stream.
        """
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        setup_logger().info("to stderr")
        self.assertTrue(err.getvalue().endswith("INFO/MainProcess] to stderr\n"))

    def test_repeated_calls_add_no_handlers(self):
        """
        Calling it once per task run keeps a single handler: after 100 calls
        a message is written once.
        """
        logger = logging.getLogger(TASK_LOGGER_NAME)
        before = len(logger.handlers)
        out = io.StringIO()
        for _ in range(100):
            setup_logger(logfile=out, loglevel="INFO", task_id="x")
        self.assertEqual(len(logger.handlers), before + 1)
        logger.info("once")
        self.assertEqual(len(out.getvalue().splitlines()), 1)

    def test_repeated_calls_with_default_and_path(self):
        """
        Repeated calls keep a single handler for standard error and for a
        path too.
        """
        logger = logging.getLogger(TASK_LOGGER_NAME)
        before = len(logger.handlers)
        self.patch(sys, "stderr", io.StringIO())
        for _ in range(100):
            setup_logger()
        self.assertEqual(len(logger.handlers), before + 1)
        path = self.mktemp()
        for _ in range(100):
            setup_logger(logfile=path)
        self.assertEqual(len(logger.handlers), before + 1)

    def test_level_by_name(self):
        """
        The level may be given by name, in any case.
        """
        out = io.StringIO()
        logger = setup_logger(loglevel="warning", logfile=out)
        logger.info("hidden")
        logger.warning("shown")
        self.assertEqual(logger.level, logging.WARNING)
        self.assertNotIn("hidden", out.getvalue())
        self.assertIn("WARNING/MainProcess] shown", out.getvalue())
        self.assertEqual(setup_logger(loglevel="DEBUG", logfile=out).level, logging.DEBUG)

    def test_level_by_number(self):
        """
        The level may be given as a number; each call replaces the level.
        """
        out = io.StringIO()
        logger = setup_logger(loglevel=logging.ERROR, logfile=out)
        logger.warning("hidden")
        logger = setup_logger(loglevel=logging.DEBUG, logfile=out)
        logger.debug("shown")
        self.assertNotIn("hidden", out.getvalue())
        self.assertIn("DEBUG/MainProcess] shown", out.getvalue())

    def test_default_level(self):
        """
        Without a level the logger logs at ``INFO``, even after a call that
        chose another level.
        """
        out = io.StringIO()
        setup_logger(loglevel="DEBUG", logfile=out)
        logger = setup_logger(logfile=out)
        logger.debug("hidden")
        logger.info("shown")
        self.assertEqual(logger.level, logging.INFO)
        self.assertNotIn("hidden", out.getvalue())
        self.assertIn("shown", out.getvalue())

    def test_unknown_level(self):
        """
        An unknown level name is a :py:obj:`ValueError`.
        """
        self.assertRaises(ValueError, setup_logger, loglevel="LOUD", logfile=io.StringIO())

    def test_switch_stream(self):
        """
        A call with another logfile moves the lines there, with one handler,
        and does not close the stream it was given before.
        """
        logger = logging.getLogger(TASK_LOGGER_NAME)
        before = len(logger.handlers)
        first, second = io.StringIO(), io.StringIO()
        setup_logger(logfile=first).info("one")
        setup_logger(logfile=second).info("two")
        self.assertEqual(len(logger.handlers), before + 1)
        self.assertIn("one", first.getvalue())
        self.assertNotIn("two", first.getvalue())
        self.assertNotIn("one", second.getvalue())
        self.assertIn("two", second.getvalue())
        self.assertFalse(first.closed)

    def test_switch_from_path_closes_file(self):
        """
        Leaving a path closes the file the logger opened for it.
        """
        logger = logging.getLogger(TASK_LOGGER_NAME)
        before = set(logger.handlers)
        path = self.mktemp()
        setup_logger(logfile=path).info("to file")
        (handler,) = set(logger.handlers) - before
        opened = handler.stream
        out = io.StringIO()
        setup_logger(logfile=out).info("to stream")
        self.assertTrue(opened.closed)
        self.assertNotIn(handler, logger.handlers)
        with open(path) as written:
            self.assertNotIn("to stream", written.read())
        self.assertIn("to stream", out.getvalue())

    def test_format(self):
        """
        Another format can be given.
        """
        out = io.StringIO()
        setup_logger(logfile=out, format="%(levelname)s %(message)s").info("plain")
        self.assertEqual(out.getvalue(), "INFO plain\n")
        setup_logger(logfile=out, format=SEED_FORMAT).info("seed")
        self.assertIsNotNone(SEED_LINE.match(out.getvalue().splitlines()[1]))

    def test_no_propagation(self):
        """
        The lines do not reach the root logger, so a configured root logger
        does not print them a second time.
        """
        root = logging.getLogger()
        recorder = ListHandler()
        root.addHandler(recorder)
        self.addCleanup(root.removeHandler, recorder)
        out = io.StringIO()
        logger = setup_logger(logfile=out)
        logger.propagate = True
        setup_logger(logfile=out).info("only once")
        self.assertFalse(logger.propagate)
        self.assertEqual(recorder.records, [])
        self.assertEqual(len(out.getvalue().splitlines()), 1)

    def test_foreign_handlers_kept(self):
        """
        Handlers others added to the logger are neither removed nor counted
        as the logger's own.
        """
        logger = logging.getLogger(TASK_LOGGER_NAME)
        recorder = ListHandler()
        logger.addHandler(recorder)
        self.addCleanup(logger.removeHandler, recorder)
        setup_logger(logfile=io.StringIO())
        setup_logger(logfile=io.StringIO()).info("seen")
        self.assertIn(recorder, logger.handlers)
        self.assertEqual([r.getMessage() for r in recorder.records], ["seen"])


class SeedLineTests(LoggerTestCase):
    """
    Tests for :py:obj:`SEED_LINE`.
    """

    def test_matches_produced_line(self):
        """
        A line written by :py:obj:`setup_logger`'s logger matches.
        """
        out = io.StringIO()
        self.patch(multiprocessing.current_process(), "name", "Process-1")
        setup_logger(logfile=out).info("Did something: foo bar baz")
        self.assertIsNotNone(SEED_LINE.match(out.getvalue()))

    def test_matches_readme_lines(self):
        """
        The lines of the celery 0.2.0 README match.
        """
        for line in [
            "[2009-04-23 17:44:05,115: INFO/Process-1] Did something: foo bar baz",
            "[2009-04-23 17:44:05,118: INFO/MainProcess] Waiting for queue.",
        ]:
            self.assertIsNotNone(SEED_LINE.match(line), line)

    def test_ordinary_lines(self):
        """
        Lines in other formats do not match.
        """
        for line in [
            "Did something: foo bar baz",
            "2009-04-23T17:44:05+0000 [-] Loaded.",
            "[2009-04-23 17:44:05: INFO/Process-1] no milliseconds",
            "[2009-04-23 17:44:05,115: info/Process-1] lower case level",
            "  [2009-04-23 17:44:05,115: INFO/Process-1] indented",
            "Traceback (most recent call last):",
        ]:
            self.assertIsNone(SEED_LINE.match(line), line)


class FormatSeedEventTests(SynchronousTestCase):
    """
    Tests for :py:obj:`format_seed_event`.
    """

    def assert_main_line(self, event, level, text):
        """
        ``event`` formats to one seed line of the main process with ``level``
        and ``text``, stamped with the event's time.
        """
        self.assertEqual(
            format_seed_event(event),
            f"[{_stamp(event['log_time'])}: {level}/MainProcess] {text}\n",
        )

    def test_levels(self):
        """
        Each :py:obj:`LogLevel` becomes the matching :py:mod:`logging` name.
        """
        for level, name in [
            (LogLevel.debug, "DEBUG"),
            (LogLevel.info, "INFO"),
            (LogLevel.warn, "WARNING"),
            (LogLevel.error, "ERROR"),
            (LogLevel.critical, "CRITICAL"),
        ]:
            event = {
                "log_format": "Waiting for {what}.",
                "what": "queue",
                "log_level": level,
                "log_namespace": "twistedq.worker",
                "log_time": FROZEN,
            }
            self.assert_main_line(event, name, "Waiting for queue.")

    def test_logger_event(self):
        """
        An event emitted by a :py:obj:`twisted.logger.Logger` is formatted.
        """
        events = []
        Logger(namespace="twistedq", observer=events.append).warn("low on {thing}", thing="disk")
        (event,) = events
        self.assert_main_line(event, "WARNING", "low on disk")

    def test_frozen_time(self):
        """
        The time is the event's ``log_time`` in local time, with
        milliseconds, in :py:mod:`logging`'s default form.
        """
        old = os.environ.get("TZ")

        def restore():
            if old is None:
                os.environ.pop("TZ", None)
            else:
                os.environ["TZ"] = old
            time.tzset()

        self.addCleanup(restore)
        os.environ["TZ"] = "TQT-03"
        time.tzset()
        event = {"log_format": "Waiting for queue.", "log_level": LogLevel.info}
        event["log_time"] = FROZEN
        self.assertEqual(
            format_seed_event(event),
            "[2009-04-23 20:44:05,115: INFO/MainProcess] Waiting for queue.\n",
        )

    def test_legacy_msg(self):
        """
        A legacy ``twisted.python.log.msg`` is ``INFO``.
        """
        events = []
        publisher = legacy_log.LogPublisher(publishPublisher=LogPublisher(events.append))
        publisher.msg("hello", "world")
        (event,) = events
        self.assert_main_line(event, "INFO", "hello world")

    def test_legacy_error(self):
        """
        A legacy ``twisted.python.log.err`` is ``ERROR``, with its traceback
        once.
        """
        failure = _make_failure()
        events = []
        publisher = legacy_log.LogPublisher(publishPublisher=LogPublisher(events.append))
        publisher.msg(failure=failure, why="boom", isError=1)
        (event,) = events
        text = format_seed_event(event)
        self.assertRegex(text, r"^\[[^\]]+: ERROR/MainProcess\] boom\nTraceback ")
        self.assertEqual(text.count("Traceback (most recent call last)"), 1)
        self.assertTrue(text.endswith("ZeroDivisionError: division by zero\n"))

    def test_no_level(self):
        """
        An event without ``log_level`` is ``INFO``; one marked ``isError``
        is ``ERROR``.
        """
        self.assert_main_line({"log_format": "plain", "log_time": FROZEN}, "INFO", "plain")
        self.assert_main_line(
            {"log_format": "bad", "log_time": FROZEN, "isError": 1}, "ERROR", "bad"
        )

    def test_failure(self):
        """
        The traceback of an event's ``log_failure`` follows on the next
        lines.
        """
        failure = _make_failure()
        events = []
        Logger(namespace="twistedq", observer=events.append).failure("task failed", failure)
        (event,) = events
        text = format_seed_event(event)
        first, rest = text.split("\n", 1)
        self.assertRegex(first, r"^\[[^\]]+: CRITICAL/MainProcess\] task failed$")
        self.assertTrue(rest.startswith("Traceback (most recent call last):\n"))
        self.assertIn("_make_failure", rest)
        self.assertTrue(rest.endswith("ZeroDivisionError: division by zero\n"))
        self.assertFalse(rest.endswith("\n\n"))

    def test_multi_line(self):
        """
        A text of many lines is kept as it is, with one trailing newline.
        """
        event = {"log_format": "first\nsecond\n\n", "log_level": LogLevel.info}
        event["log_time"] = FROZEN
        self.assert_main_line(event, "INFO", "first\nsecond")

    def test_nothing_to_format(self):
        """
        An event without text formats to ``None``.
        """
        self.assertIsNone(format_seed_event({"log_time": FROZEN, "log_level": LogLevel.info}))

    def test_child_line(self):
        """
        A line a child wrote in the seed format is passed on unchanged,
        whatever else the event says.
        """
        line = "[2009-04-23 17:44:05,115: INFO/Process-1] Did something: foo bar baz"
        event = {
            "log_format": "{child} {stream}: {line}",
            "child": "Process-1",
            "stream": "stderr",
            "line": line,
            "log_level": LogLevel.info,
            "log_time": FROZEN + 60,
            "twistedq_child_line": line,
        }
        self.assertEqual(format_seed_event(event), line + "\n")

    def test_child_stdout(self):
        """
        Another line a child printed on its standard output is ``INFO`` of
        that child.
        """
        event = {
            "log_format": "{twistedq_child} {twistedq_stream}: {twistedq_child_output}",
            "log_level": LogLevel.info,
            "log_time": FROZEN,
            "twistedq_child": "Process-2",
            "twistedq_stream": "stdout",
            "twistedq_child_output": "printed by a task",
        }
        self.assertEqual(
            format_seed_event(event), f"[{_stamp(FROZEN)}: INFO/Process-2] printed by a task\n"
        )

    def test_child_stderr(self):
        """
        Another line a child wrote on its standard error is ``WARNING`` of
        that child.
        """
        event = {
            "log_format": "{twistedq_child} {twistedq_stream}: {twistedq_child_output}",
            "log_level": LogLevel.info,
            "log_time": FROZEN,
            "twistedq_child": "Process-2",
            "twistedq_stream": "stderr",
            "twistedq_child_output": "Traceback (most recent call last):",
        }
        self.assertEqual(
            format_seed_event(event),
            f"[{_stamp(FROZEN)}: WARNING/Process-2] Traceback (most recent call last):\n",
        )


class UseSeedFormatTests(SynchronousTestCase):
    """
    Tests for :py:obj:`use_seed_format`.
    """

    def test_filtered_file_observer(self):
        """
        A text file observer wrapped in a filtering observer is switched, and
        later events are written in the seed format.
        """
        out = io.StringIO()
        publisher = LogPublisher(
            FilteringLogObserver(textFileLogObserver(out), [LogLevelFilterPredicate()])
        )
        self.assertEqual(use_seed_format(publisher), 1)
        Logger(namespace="twistedq", observer=publisher).info("Waiting for {q}.", q="queue")
        match = MAIN_LINE.match(out.getvalue())
        self.assertIsNotNone(match, out.getvalue())
        self.assertEqual(match.group("level"), "INFO")
        self.assertEqual(match.group("text"), "Waiting for queue.")

    def test_nested_publishers(self):
        """
        File observers of publishers nested in the publisher are switched;
        other observers still see the events.
        """
        out = io.StringIO()
        events = []
        inner = LogPublisher(textFileLogObserver(out), LimitedHistoryLogObserver())
        publisher = LogPublisher(events.append, inner)
        self.assertEqual(use_seed_format(publisher), 1)
        Logger(observer=publisher).error("broken")
        self.assertTrue(out.getvalue().endswith("ERROR/MainProcess] broken\n"))
        self.assertEqual(len(events), 1)

    def test_twistd_observer(self):
        """
        The observer ``twistd --logfile`` makes is switched.
        """
        path = self.mktemp()
        observer = AppLogger({"logfile": path})._getLogObserver()
        self.addCleanup(observer._outFile.close)
        publisher = LogPublisher(observer)
        self.assertEqual(use_seed_format(publisher), 1)
        Logger(observer=publisher).info("Waiting for queue.")
        observer._outFile.flush()
        with open(path) as written:
            self.assertTrue(written.read().endswith("INFO/MainProcess] Waiting for queue.\n"))

    def test_nothing_to_switch(self):
        """
        Without a text file observer nothing is switched and ``0`` is
        returned.
        """
        events = []
        publisher = LogPublisher(events.append, LimitedHistoryLogObserver())
        self.assertEqual(use_seed_format(publisher), 0)
        self.assertEqual(use_seed_format(LogPublisher()), 0)

    def test_json_observer_untouched(self):
        """
        A JSON file observer keeps writing JSON.
        """
        out = io.StringIO()
        publisher = LogPublisher(jsonFileLogObserver(out))
        self.assertEqual(use_seed_format(publisher), 0)
        Logger(observer=publisher).info("hello")
        record = json.loads(out.getvalue().lstrip("\x1e"))
        self.assertEqual(record["log_format"], "hello")

    def test_second_call(self):
        """
        A second call counts nothing more, and the lines stay in the seed
        format.
        """
        out = io.StringIO()
        publisher = LogPublisher(textFileLogObserver(out))
        self.assertEqual(use_seed_format(publisher), 1)
        self.assertEqual(use_seed_format(publisher), 0)
        Logger(observer=publisher).info("hello")
        self.assertIsNotNone(MAIN_LINE.match(out.getvalue()), out.getvalue())


def _child_line(level, text, child="Process-1", stream="stderr"):
    """
    The event of a line a child wrote in the seed format.
    """
    line = f"[2009-04-23 17:44:05,115: {level}/{child}] {text}"
    return {"log_time": FROZEN, "child": child, "stream": stream, "twistedq_child_line": line}


def _child_output(text, child="Process-1", stream="stderr"):
    """
    The event of any other line a child wrote.
    """
    return {
        "log_time": FROZEN,
        "child": child,
        "stream": stream,
        "twistedq_child_output": text,
        "twistedq_child": child,
        "twistedq_stream": stream,
    }


def _daemon_event(level, text):
    return {"log_time": FROZEN, "log_level": level, "log_format": text, "log_namespace": "t"}


class LevelFilterTests(SynchronousTestCase):
    """
    :py:obj:`LevelFilter` passes the events at or above its level to the
    formatter it wraps, and answers ``None`` (the line is skipped) for the
    others.
    """

    def kept(self, level, events):
        keep = LevelFilter(format_seed_event, level)
        return [line.rstrip("\n").rsplit("] ", 1)[-1] for e in events if (line := keep(e))]

    def test_daemon_events(self):
        """
        The daemon's own events are kept from the level up.
        """
        events = [
            _daemon_event(LogLevel.debug, "d"),
            _daemon_event(LogLevel.info, "i"),
            _daemon_event(LogLevel.warn, "w"),
            _daemon_event(LogLevel.error, "e"),
            _daemon_event(LogLevel.critical, "c"),
            {"log_time": FROZEN, "message": ("legacy",), "log_format": "legacy"},
        ]
        self.assertEqual(self.kept("DEBUG", events), ["d", "i", "w", "e", "c", "legacy"])
        self.assertEqual(self.kept("INFO", events), ["i", "w", "e", "c", "legacy"])
        self.assertEqual(self.kept("WARNING", events), ["w", "e", "c"])
        self.assertEqual(self.kept("ERROR", events), ["e", "c"])
        self.assertEqual(self.kept("CRITICAL", events), ["c"])

    def test_child_lines_by_their_level(self):
        """
        A seed line a child wrote is kept by the level it names; a child's
        other output by its stream (standard output INFO, standard error
        WARNING).
        """
        events = [
            _child_line("INFO", "info line"),
            _child_line("ERROR", "error line", child="Process-2"),
            _child_output("printed", stream="stdout"),
            _child_output("warned", child="Process-3", stream="stderr"),
        ]
        self.assertEqual(
            self.kept("INFO", events), ["info line", "error line", "printed", "warned"]
        )
        self.assertEqual(self.kept("WARNING", events), ["error line", "warned"])
        self.assertEqual(self.kept("ERROR", events), ["error line"])

    def test_traceback_lines_follow_their_line(self):
        """
        The lines that follow a child's log line on the same stream (the
        traceback of ``logger.exception``) are kept or skipped with it, and
        a traceback the child printed itself counts as an error: nothing of
        an error is lost at ``ERROR``.
        """
        events = [
            _child_line("INFO", "fine"),
            _child_output("  continued"),
            _child_line("ERROR", "broke"),
            _child_output("Traceback (most recent call last):"),
            _child_output('  File "t.py", line 1'),
            _child_output("ZeroDivisionError: division by zero"),
            _child_output("Traceback (most recent call last):", child="Process-2"),
            _child_output("ModuleNotFoundError: No module named 'x'", child="Process-2"),
        ]
        self.assertEqual(
            self.kept("ERROR", events),
            [
                "broke",
                "Traceback (most recent call last):",
                '  File "t.py", line 1',
                "ZeroDivisionError: division by zero",
                "Traceback (most recent call last):",
                "ModuleNotFoundError: No module named 'x'",
            ],
        )
        self.assertEqual(self.kept("INFO", events)[:2], ["fine", "  continued"])

    def test_unknown_level(self):
        """
        A level that is not one of DEBUG, INFO, WARNING, ERROR or CRITICAL
        is refused.
        """
        self.assertRaises(ValueError, LevelFilter, format_seed_event, "LOUD")


class UseLogLevelTests(SynchronousTestCase):
    """
    The daemon's log level on its text log file, in either format.
    """

    def test_seed_format_with_level(self):
        """
        ``use_seed_format(level=...)`` writes seed lines from that level up.
        """
        out = io.StringIO()
        publisher = LogPublisher(textFileLogObserver(out))
        self.assertEqual(use_seed_format(publisher, level="WARNING"), 1)
        log = Logger(observer=publisher)
        log.info("quiet")
        log.warn("loud")
        lines = out.getvalue().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(lines[0].endswith("WARNING/MainProcess] loud"), lines)

    def test_twisted_format_with_level(self):
        """
        ``use_log_level`` keeps Twisted's own format and skips the events
        below the level.
        """
        out = io.StringIO()
        publisher = LogPublisher(textFileLogObserver(out))
        self.assertEqual(use_log_level("ERROR", publisher), 1)
        log = Logger(namespace="ns", observer=publisher)
        log.warn("quiet")
        log.error("loud")
        lines = out.getvalue().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(lines[0].endswith("[ns#error] loud"), lines)

    def test_services(self):
        """
        The services apply their level to twistd's log when they start.
        """
        import twistedq.log

        calls = []
        self.patch(twistedq.log, "use_seed_format", lambda level=None: calls.append(("s", level)))
        self.patch(twistedq.log, "use_log_level", lambda level: calls.append(("t", level)))
        SeedLogFormatService().startService()
        SeedLogFormatService("ERROR").startService()
        LogLevelService("WARNING").startService()
        self.assertEqual(calls, [("s", None), ("s", "ERROR"), ("t", "WARNING")])
