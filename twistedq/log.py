"""
Logging in the seed format of celery 0.2.0.

Every line the daemon and its children write looks like::

    [2009-04-23 17:44:05,115: INFO/Process-1] Did something: foo bar baz
    [2009-04-23 17:44:05,118: INFO/MainProcess] Waiting for queue.

Two halves produce it:

* in a child, a task that accepts ``**kwargs`` calls :py:obj:`setup_logger`
  and logs through the standard :py:mod:`logging` logger it returns, whose
  lines go to the child's standard error;
* in the daemon, :py:obj:`use_seed_format` makes the text log file that
  ``twistd`` opened format :py:mod:`twisted.logger` events with
  :py:obj:`format_seed_event`, which also passes on the lines the children
  printed.

``twistd twistedq --loglevel`` keeps the lines of the daemon's log from a
level up (:py:obj:`LevelFilter`), in either format.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO, TypeGuard

from twisted.application.service import Service
from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    LogLevel,
    LogPublisher,
    formatEvent,
    formatEventAsClassicLogText,
    globalLogPublisher,
)

__all__ = [
    "LOG_LEVELS",
    "SEED_FORMAT",
    "SEED_LINE",
    "TASK_LOGGER_NAME",
    "LevelFilter",
    "LogLevelService",
    "SeedLogFormatService",
    "format_seed_event",
    "setup_logger",
    "use_log_level",
    "use_seed_format",
]

#: The :py:mod:`logging` format of a seed line; ``asctime`` keeps logging's
#: default ``2009-04-23 17:44:05,115`` form.
SEED_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"

#: Matches the start of a line that is already in the seed format.
SEED_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}: [A-Z]+/[^\]]+\] ")

#: The name of the logger :py:obj:`setup_logger` configures.
TASK_LOGGER_NAME = "twistedq.task"

#: The process name of the daemon in its own seed lines.
MAIN_PROCESS_NAME = "MainProcess"

_LEVEL_NAMES = {
    LogLevel.debug: "DEBUG",
    LogLevel.info: "INFO",
    LogLevel.warn: "WARNING",
    LogLevel.error: "ERROR",
    LogLevel.critical: "CRITICAL",
}

_STREAM_LEVEL_NAMES = {"stdout": "INFO", "stderr": "WARNING"}

#: The levels of the daemon's log, lowest first, and their numbers.
LOG_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}

# The level name of a line already in the seed format.
_SEED_LEVEL = re.compile(r"^\[[^\]]*?: ([A-Z]+)/")

#: What a :py:obj:`twisted.logger.FileLogObserver` formats events with.
Formatter = Callable[[dict[str, Any]], str | None]

# The first line of a traceback Python printed.
_TRACEBACK_START = "Traceback (most recent call last):"

# The marker attribute of the one handler setup_logger owns on its logger.
_DESTINATION = "_twistedq_destination"

_setup_lock = threading.Lock()


class _SeedHandler(logging.StreamHandler):
    """
    The handler :py:obj:`setup_logger` puts on its logger when the destination
    is an open stream; it never closes that stream.
    """


class _SeedFileHandler(logging.FileHandler):
    """
    The handler :py:obj:`setup_logger` puts on its logger when the destination
    is a path; it closes the file it opened when it is replaced.
    """


def _level_number(loglevel: int | str | None) -> int:
    """
    The :py:mod:`logging` level number of ``loglevel``.

    :param loglevel: a level number, a level name in any case (``"INFO"``,
        ``"info"``), a number written as a string, or ``None`` for
        ``logging.INFO``.
    :raises ValueError: if ``loglevel`` is a name :py:mod:`logging` does not
        know.
    :raises TypeError: if ``loglevel`` is neither a number nor a string.
    """
    if loglevel is None:
        return logging.INFO
    if isinstance(loglevel, bool) or not isinstance(loglevel, (int, str)):
        raise TypeError(f"a log level is a number or a name, not {loglevel!r}")
    if isinstance(loglevel, int):
        return loglevel
    name = loglevel.strip()
    if name.isdigit():
        return int(name)
    number = logging.getLevelName(name.upper())
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {loglevel!r}")
    return number


def _same_destination(handler: logging.Handler, destination: str | TextIO) -> bool:
    """
    Whether ``handler`` already writes to ``destination``: the same absolute
    path, or the very same stream object.
    """
    current = getattr(handler, _DESTINATION)
    if isinstance(destination, str):
        return isinstance(current, str) and current == destination
    return current is destination


def setup_logger(
    loglevel: int | str | None = None,
    logfile: str | TextIO | None = None,
    format: str = SEED_FORMAT,
    **kwargs: Any,
) -> logging.Logger:
    """
    The task logger, writing seed-format lines to ``logfile`` at ``loglevel``.

    Meant to be called by a task with the keyword arguments it was given,
    once per run::

        def do_something(some_arg, **kwargs):
            logger = setup_logger(**kwargs)
            logger.info("Did something: %s", some_arg)

    The logger is the :py:mod:`logging` logger named
    :py:obj:`TASK_LOGGER_NAME` (``"twistedq.task"``).  It does not propagate
    to the root logger, so a configured root logger does not print its lines
    a second time.

    Every call keeps exactly one handler of its own on the logger: a call
    with the destination the handler already writes to only replaces the
    level and the format; a call with another destination replaces the
    handler, closing the file the old one opened (a stream that was passed
    in is never closed).  Handlers added by others are left alone.

    :param loglevel: the level, as a number or a name such as ``"INFO"`` or
        ``"info"``; ``None`` means ``logging.INFO``.
    :param logfile: a path to append to, an open text stream, or ``None``
        for the standard error stream current at the time of the call.
    :param format: the :py:mod:`logging` format of the lines, by default
        :py:obj:`SEED_FORMAT`.
    :param kwargs: the other keyword arguments a task receives
        (``task_id``, ``task_name``, ...); ignored.
    :raises ValueError: if ``loglevel`` is an unknown level name.
    :raises TypeError: if ``loglevel`` is neither a number nor a string.
    :raises OSError: if ``logfile`` is a path that cannot be opened.
    :return: the configured logger.
    """
    level = _level_number(loglevel)
    destination = _destination(logfile)
    logger = logging.getLogger(TASK_LOGGER_NAME)
    with _setup_lock:
        handler = _own_handler(logger, destination)
        handler.setFormatter(logging.Formatter(format))
        handler.setLevel(logging.NOTSET)
        logger.setLevel(level)
        logger.propagate = False
    return logger


def _destination(logfile: str | os.PathLike[str] | TextIO | None) -> str | TextIO:
    """
    Where :py:obj:`setup_logger` writes: an absolute path, or a stream
    (the standard error stream current now for ``None``).
    """
    if logfile is None:
        return sys.stderr
    if isinstance(logfile, (str, os.PathLike)):
        return os.path.abspath(os.fspath(logfile))
    return logfile


def _own_handler(logger: logging.Logger, destination: str | TextIO) -> logging.Handler:
    """
    The one handler of :py:obj:`setup_logger` on ``logger``, writing to
    ``destination``: kept if it already writes there, else replaced (the
    file the old one opened is closed).  Handlers added by others are left
    alone.
    """
    ours = [h for h in logger.handlers if hasattr(h, _DESTINATION)]
    keep = next((h for h in ours if _same_destination(h, destination)), None)
    if keep is None:
        handler: logging.Handler
        if isinstance(destination, str):
            handler = _SeedFileHandler(destination, mode="a", encoding="utf-8")
        else:
            handler = _SeedHandler(destination)
        setattr(handler, _DESTINATION, destination)
        logger.addHandler(handler)
        keep = handler
    for old in ours:
        if old is not keep:
            logger.removeHandler(old)
            old.close()
    return keep


def _format_time(when: float | None) -> str:
    """
    ``when`` (seconds since the epoch; ``None`` for now) as local time in
    :py:mod:`logging`'s default ``2009-04-23 17:44:05,115`` form.
    """
    if when is None:
        when = time.time()
    millis = int((when - int(when)) * 1000)
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(when))},{millis:03d}"


def _seed_line(when: float | None, level: str, process: str, text: str) -> str:
    """
    One seed-format entry ending in exactly one newline.
    """
    text = text.rstrip("\n")
    return f"[{_format_time(when)}: {level}/{process}] {text}\n"


def _event_level(event: dict[str, Any]) -> str:
    """
    The :py:mod:`logging` level name of a :py:mod:`twisted.logger` event.

    An error logged through the legacy ``twisted.python.log.err`` (an
    ``isError`` event of the ``log_legacy`` namespace, or one without a
    ``log_level``) is ``ERROR``; otherwise ``log_level`` decides, and an event
    without one (a legacy ``twisted.python.log.msg``) is ``INFO``.
    """
    level = event.get("log_level")
    legacy = level is None or event.get("log_namespace") == "log_legacy"
    if legacy and event.get("isError"):
        return "ERROR"
    return _LEVEL_NAMES.get(level, "INFO")


def format_seed_event(event: dict[str, Any]) -> str | None:
    """
    Format a :py:mod:`twisted.logger` event as a seed-format entry of the
    daemon's log, for :py:obj:`twisted.logger.FileLogObserver`.

    An ordinary event gives
    ``[<log_time as local time>: <level>/MainProcess] <formatEvent(event)>``,
    where the level comes from ``log_level`` (``LogLevel.warn`` is
    ``WARNING``, and so on); an event without ``log_level`` (a legacy
    ``twisted.python.log.msg``) is ``INFO`` and a legacy error
    (``twisted.python.log.err``, marked ``isError``) is ``ERROR``.
    The traceback of a ``log_failure`` follows on the next lines.
    Multi-line texts are kept as they are.

    Two kinds of event carry what a child printed:

    * ``twistedq_child_line``: a line the child already wrote in the seed
      format (see :py:obj:`SEED_LINE`); it is passed on unchanged;
    * ``twistedq_child_output``: any other line, with the child's name in
      ``twistedq_child`` (``"Process-2"``) and the stream in
      ``twistedq_stream``; it becomes
      ``[<log_time>: INFO/Process-2] <line>`` for ``"stdout"`` and
      ``WARNING`` for ``"stderr"``.

    :param event: the event.
    :return: the entry, ending in exactly one newline, or ``None`` for an
        event that formats to no text (which the observer then skips).
    """
    when = event.get("log_time")
    child_line = event.get("twistedq_child_line")
    if isinstance(child_line, str):
        if not child_line.strip():
            return None
        return child_line.rstrip("\n") + "\n"

    child_output = event.get("twistedq_child_output")
    if isinstance(child_output, str):
        level = _STREAM_LEVEL_NAMES.get(event.get("twistedq_stream", "stdout"), "WARNING")
        process = str(event.get("twistedq_child") or "child")
        return _seed_line(when, level, process, child_output)

    text = formatEvent(event)
    failure = event.get("log_failure")
    if failure is not None:
        try:
            traceback = failure.getTraceback()
        except BaseException:
            traceback = "(UNABLE TO OBTAIN TRACEBACK FROM EVENT)\n"
        text = f"{text}\n{traceback}" if text else traceback
    if not text:
        return None
    return _seed_line(when, _event_level(event), MAIN_PROCESS_NAME, text)


class LevelFilter:
    """
    A formatter for :py:obj:`twisted.logger.FileLogObserver` that passes the
    events at or above ``level`` to ``formatter`` and answers ``None`` (the
    observer writes nothing) for the others.

    An event's level is:

    * for the daemon's own events, their ``log_level`` (as in
      :py:obj:`format_seed_event`: a legacy message is ``INFO``, a legacy
      error ``ERROR``);
    * for a line a child wrote in the seed format, the level it names;
    * for a line a child printed that starts a Python traceback, ``ERROR``;
    * for any other line a child wrote: the level of the last of those
      lines on the same stream of the same child, when there was one, so
      that a traceback stays whole with the log line it belongs to;
      otherwise ``INFO`` from standard output and ``WARNING`` from standard
      error.

    :param formatter: the formatter of the kept events.
    :param level: one of :py:data:`LOG_LEVELS` (any case).
    :raises ValueError: for another level.
    """

    def __init__(self, formatter: Formatter, level: str) -> None:
        number = LOG_LEVELS.get(level.upper())
        if number is None:
            raise ValueError(f"unknown log level {level!r}: one of {', '.join(LOG_LEVELS)}")
        self.formatter = formatter
        self.level = number
        # (child, stream) -> whether its last log line was kept.
        self._kept: dict[tuple[str, str], bool] = {}

    def __call__(self, event: dict[str, Any]) -> str | None:
        return self.formatter(event) if self.keeps(event) else None

    def keeps(self, event: dict[str, Any]) -> bool:
        """
        Whether ``event`` is written.
        """
        line = event.get("twistedq_child_line")
        output = event.get("twistedq_child_output")
        if not isinstance(line, str) and not isinstance(output, str):
            return LOG_LEVELS.get(_event_level(event), LOG_LEVELS["INFO"]) >= self.level
        stream = str(event.get("twistedq_stream") or event.get("stream") or "stderr")
        key = (str(event.get("twistedq_child") or event.get("child") or ""), stream)
        if isinstance(line, str):
            match = _SEED_LEVEL.match(line)
            number = logging.getLevelName(match.group(1)) if match else logging.INFO
            kept = (number if isinstance(number, int) else logging.INFO) >= self.level
            self._kept[key] = kept
            return kept
        assert isinstance(output, str)
        if output.startswith(_TRACEBACK_START):
            kept = LOG_LEVELS["ERROR"] >= self.level
            self._kept[key] = kept
            return kept
        if key in self._kept:
            return self._kept[key]
        return LOG_LEVELS[_STREAM_LEVEL_NAMES.get(stream, "WARNING")] >= self.level


def _is_text_file_observer(observer: object) -> TypeGuard[FileLogObserver]:
    """
    Whether ``observer`` is a :py:obj:`twisted.logger.FileLogObserver` that
    writes classic text lines (as made by
    :py:obj:`twisted.logger.textFileLogObserver`, which ``twistd`` uses), and
    not, say, a JSON one.
    """
    if not isinstance(observer, FileLogObserver):
        return False
    formatter = getattr(observer, "formatEvent", None)
    if formatter is formatEventAsClassicLogText:
        return True
    return (
        getattr(formatter, "__module__", None) == "twisted.logger._file"
        and getattr(formatter, "__qualname__", None) == "textFileLogObserver.<locals>.formatEvent"
    )


def _children(observer: object) -> Iterable[object]:
    """
    The observers ``observer`` passes events on to, as far as they can be
    seen: those of a :py:obj:`twisted.logger.LogPublisher` (its
    ``_observers``) and the one a :py:obj:`twisted.logger.FilteringLogObserver`
    filters for (its ``_observer``).
    """
    if isinstance(observer, LogPublisher):
        return list(getattr(observer, "_observers", ()))
    if isinstance(observer, FilteringLogObserver):
        inner = getattr(observer, "_observer", None)
        return [] if inner is None else [inner]
    return []


def _switch(publisher: LogPublisher | None, formatter: Callable[[Formatter], Formatter]) -> int:
    """
    Give each text file observer of ``publisher`` (see
    :py:obj:`use_seed_format`) the formatter ``formatter`` makes of its own.
    """
    if publisher is None:
        publisher = globalLogPublisher
    switched = 0
    seen: set[int] = set()
    pending: list[object] = [publisher]
    while pending:
        observer = pending.pop()
        if id(observer) in seen:
            continue
        seen.add(id(observer))
        if _is_text_file_observer(observer):
            observer.formatEvent = formatter(observer.formatEvent)
            switched += 1
        else:
            pending.extend(_children(observer))
    return switched


def use_seed_format(publisher: LogPublisher | None = None, level: str | None = None) -> int:
    """
    Make the text log files of ``publisher`` write seed-format lines.

    Called by the daemon at startup: ``twistd --logfile`` (or ``-n`` without
    one, for standard output) adds a text
    :py:obj:`twisted.logger.FileLogObserver` to
    :py:obj:`twisted.logger.globalLogPublisher`; afterwards, every event it
    writes is formatted by :py:obj:`format_seed_event`.  Lines written before
    the call keep Twisted's format.

    ``twistd`` adds that observer after it has built the application (after
    ``makeService``) and before it starts the services, so the daemon must
    call this from a service's ``startService`` (or later), not from
    ``makeService``, where it would find nothing and return ``0``.

    The search walks the observers of ``publisher``, of publishers nested in
    it and of the observers a :py:obj:`twisted.logger.FilteringLogObserver`
    wraps.  Only text file observers (made by
    :py:obj:`twisted.logger.textFileLogObserver`, or formatting with
    :py:obj:`twisted.logger.formatEventAsClassicLogText`) are switched; JSON
    file observers and every other observer are left alone.

    It relies on two details of Twisted that are not public API: a
    :py:obj:`twisted.logger.LogPublisher` keeps its observers in the list
    ``_observers`` (and a filtering observer its observer in ``_observer``),
    and :py:obj:`twisted.logger.FileLogObserver` calls the formatter stored in
    its ``formatEvent`` attribute for each event.  Should either change, the
    observers are not found and the log keeps Twisted's format.

    :param publisher: the publisher to search; by default
        :py:obj:`twisted.logger.globalLogPublisher`.
    :param level: with a level of :py:data:`LOG_LEVELS`, only the events
        from that level up are written (see :py:obj:`LevelFilter`).
    :return: how many observers were switched; ``0`` if there were none
        (observers switched by an earlier call are not counted again).
    """
    if level is None:
        return _switch(publisher, lambda old: format_seed_event)
    LevelFilter(format_seed_event, level)  # an unknown level fails before anything changes
    return _switch(publisher, lambda old: LevelFilter(format_seed_event, level))


def use_log_level(level: str, publisher: LogPublisher | None = None) -> int:
    """
    Make the text log files of ``publisher`` (found as by
    :py:obj:`use_seed_format`) write only the events from ``level`` up, in
    the format they have (see :py:obj:`LevelFilter`).  For
    ``--log-format twisted``; call it once, from a service's
    ``startService``.

    :return: how many observers were changed.
    """
    LevelFilter(format_seed_event, level)  # an unknown level fails before anything changes
    return _switch(publisher, lambda old: LevelFilter(old, level))


class SeedLogFormatService(Service):
    """
    Switches twistd's log file to the seed's line format when the daemon
    starts (twistd adds its log observer after ``makeService``), from
    ``level`` up when one is given.
    """

    def __init__(self, level: str | None = None) -> None:
        self.level = level

    def startService(self) -> None:
        Service.startService(self)
        use_seed_format(level=self.level)


class LogLevelService(Service):
    """
    Keeps twistd's log file in Twisted's format and writes only the events
    from ``level`` up, from when the daemon starts.
    """

    def __init__(self, level: str) -> None:
        self.level = level

    def startService(self) -> None:
        Service.startService(self)
        use_log_level(self.level)
