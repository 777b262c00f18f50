"""
What ``manage.py twistedq`` runs: the daemon (``twistd twistedq`` in this
process, with the project's settings) or, given a subcommand, the
operations command :py:func:`twistedq.cli.main`.

``manage.py twistedq`` takes twistd's options and the ``twistedq``
options mixed, in any order; each goes where it belongs:

* a long option twistd knows (``--nodaemon``, ``--pidfile``,
  ``--logfile``, ``--rundir``, ``--uid``...) is twistd's, even those
  ``twistd twistedq`` also accepts only to point at twistd's (``--pidfile``,
  ``--logfile``);
* any other option is the daemon's (``--concurrency``, ``--queue``,
  ``-l DEBUG``...), except the short options only twistd has (``-n``,
  ``-o``, ``-e``, ``-u``, ``-g``, ``-y``): a letter both have is the
  daemon's (``-l`` is ``--loglevel``, ``-b`` ``--broker``, ``-s``
  ``--status``, ``-r`` ``--result-backend``);
* celeryd's ``-p``/``-f``/``-d`` (pid file, log file, detach) are refused
  with the option to use instead, unless the line is a subcommand's.

The first word that is not an option, nor an option's value, makes the
whole command line the operations command's (``manage.py twistedq
inspect active``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from twisted.python import usage

__all__ = [
    "CommandLine",
    "LaunchError",
    "daemon_argv",
    "split_command_line",
    "without_django_options",
]


class LaunchError(ValueError):
    """
    The command line cannot be split: the message says what to give
    instead.
    """


#: The options ``manage.py`` itself reads, taken out before splitting.
_DJANGO_OPTIONS = ("--settings", "--pythonpath")

#: Letters of celeryd's options that the daemon refuses, and the option to
#: give ``manage.py twistedq`` instead.
_CELERYD_LETTERS = {
    "p": "the pid file is --pidfile FILE",
    "f": "the log file is --logfile FILE",
    "d": "the daemon runs in the background unless -n (--nodaemon) is given",
}


@dataclass
class _OptionTable:
    """
    The options a :py:class:`usage.Options` knows: long names and short
    letters, each with whether it takes a value.
    """

    long: dict[str, bool] = field(default_factory=dict)
    short: dict[str, bool] = field(default_factory=dict)

    @classmethod
    def of(cls, options: usage.Options) -> _OptionTable:
        table = cls()
        for name in options.longOpt:
            table.long[name.rstrip("=")] = name.endswith("=")
        letters = options.shortOpt
        for index, letter in enumerate(letters):
            if letter != ":":
                table.short[letter] = letters[index + 1 : index + 2] == ":"
        return table


@dataclass
class CommandLine:
    """
    A ``manage.py twistedq`` command line, split.

    :ivar twistd: twistd's options, in the order given.
    :ivar daemon: the ``twistedq`` options, in the order given.
    :ivar subcommand: the whole command line, for the operations command,
        when it names a subcommand; else :py:obj:`None`.
    """

    twistd: list[str] = field(default_factory=list)
    daemon: list[str] = field(default_factory=list)
    subcommand: list[str] | None = None


def without_django_options(arguments: Sequence[str]) -> list[str]:
    """
    ``arguments`` without ``--settings`` and ``--pythonpath`` (and their
    values), which ``manage.py`` has applied already.
    """
    kept: list[str] = []
    skip = False
    for argument in arguments:
        if skip:
            skip = False
        elif argument in _DJANGO_OPTIONS:
            skip = True
        elif not argument.startswith(tuple(f"{name}=" for name in _DJANGO_OPTIONS)):
            kept.append(argument)
    return kept


def _tables() -> tuple[_OptionTable, _OptionTable]:
    from twisted.scripts.twistd import ServerOptions

    from twistedq.tap import Options

    return _OptionTable.of(ServerOptions()), _OptionTable.of(Options())


def split_command_line(arguments: Sequence[str]) -> CommandLine:
    """
    Give each argument to twistd or to the daemon, or all of them to the
    operations command (see the module's rules).

    :raises LaunchError: a celeryd option the daemon refuses, or an option
        that needs a value at the end.
    """
    twistd, daemon = _tables()
    line = CommandLine()
    rest = list(arguments)
    refused: LaunchError | None = None  # unless the line is a subcommand's
    while rest:
        argument = rest.pop(0)
        if not argument.startswith("-") or argument == "-":
            line.subcommand = list(arguments)
            return line
        if argument.startswith("--"):
            name, has_value, _ = argument[2:].partition("=")
            if name in twistd.long:
                target, takes = line.twistd, twistd.long[name]
            else:
                target, takes = line.daemon, daemon.long.get(name, False)
            target.append(argument)
            if takes and not has_value:
                target.append(_value_of(argument, rest))
            continue
        try:
            _split_letters(argument[1:], rest, line, twistd, daemon)
        except LaunchError as e:
            refused = refused or e
    if refused is not None:
        raise refused
    return line


def _split_letters(
    letters: str,
    rest: list[str],
    line: CommandLine,
    twistd: _OptionTable,
    daemon: _OptionTable,
) -> None:
    """
    Give each letter of ``-abc`` to the daemon or twistd; a letter that
    takes a value takes the rest of the word, or the next argument.
    """
    for index, letter in enumerate(letters):
        if letter in _CELERYD_LETTERS:
            if letter in "pf" and not letters[index + 1 :] and rest:
                rest.pop(0)  # celeryd's pid or log file, not a subcommand
            raise LaunchError(f"-{letter}: {_CELERYD_LETTERS[letter]}")
        if letter in daemon.short:
            target, takes = line.daemon, daemon.short[letter]
        elif letter in twistd.short:
            target, takes = line.twistd, twistd.short[letter]
        else:
            target, takes = line.daemon, False  # the daemon says it does not know it
        if not takes:
            target.append(f"-{letter}")
            continue
        value = letters[index + 1 :] or _value_of(f"-{letter}", rest)
        target.extend([f"-{letter}", value])
        return


def _value_of(option: str, rest: list[str]) -> str:
    if not rest:
        raise LaunchError(f"option {option} needs a value")
    return rest.pop(0)


def daemon_argv(line: CommandLine, settings_module: str, status_endpoint: str | None) -> list[str]:
    """
    The ``twistd`` command line that runs the daemon of ``line`` with the
    project's settings: ``--django-settings`` is the settings module, and
    the status site is off (``--status none``) unless the project's
    ``TWISTEDQ_STATUS_ENDPOINT`` names one; an option of ``line`` wins
    over both, coming after them.
    """
    defaults = ["--django-settings", settings_module]
    if status_endpoint is None:
        defaults += ["--status", "none"]
    return [*line.twistd, "twistedq", *defaults, *line.daemon]
