"""
``twistedq-deadletter`` (or ``python -m twistedq.deadletter``): the old
name of ``twistedq deadletter``, kept as an alias.  It lists, shows,
republishes and purges the messages in a task queue's dead-letter queue
(see :py:mod:`twistedq.cli.deadletters`); the options come before the
command, as they always did::

    twistedq-deadletter --queue orders list
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from twistedq.cli.deadletters import SHOW_BYTES, add_commands, list_line, show_text
from twistedq.cli.main import common_options, run

__all__ = ["SHOW_BYTES", "list_line", "main", "parser", "show_text"]

#: The old command's timeout: a republish waits this long for each confirm.
TIMEOUT = 30.0


def parser() -> argparse.ArgumentParser:
    """
    The command line of ``twistedq-deadletter``.
    """
    top = argparse.ArgumentParser(
        prog="twistedq-deadletter",
        parents=[common_options()],
        description="List, show, republish or purge the dead letters of a twistedq queue "
        "(the same as: twistedq deadletter).",
    )
    top.set_defaults(command="deadletter", prog="twistedq-deadletter", timeout=TIMEOUT)
    add_commands(top, "letter_command")
    return top


def main(argv: Sequence[str] | None = None) -> None:
    """
    The console entry point: parse ``argv`` (by default the command line),
    run the command and exit with its status.
    """
    raise SystemExit(run(argv, sys.stdout, sys.stderr, build=parser))


if __name__ == "__main__":
    main()
