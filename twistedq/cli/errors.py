"""
The exit statuses of the ``twistedq`` command and the errors that choose
them.
"""

from __future__ import annotations

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "CommandError",
    "CommandFailed",
    "Unreachable",
    "UsageError",
]

#: Done.
EXIT_OK = 0
#: What was asked about failed, was not found, or no daemon answered.
EXIT_FAILED = 1
#: The command line (or a setting) is wrong.
EXIT_USAGE = 2
#: The broker or the result store cannot be reached.
EXIT_UNREACHABLE = 3
#: Interrupted (Ctrl-C) before it finished.
EXIT_INTERRUPTED = 130


class CommandError(Exception):
    """
    The command cannot do what was asked; its text is one line for the
    user, and :py:attr:`status` the exit status.
    """

    status = EXIT_FAILED


class CommandFailed(CommandError):
    """
    What was asked about failed, was not found, or no daemon answered.
    """

    status = EXIT_FAILED


class UsageError(CommandError):
    """
    The command line or a setting is wrong.
    """

    status = EXIT_USAGE


class Unreachable(CommandError):
    """
    The broker or the result store did not answer in time; the text names
    its URL (without a password).
    """

    status = EXIT_UNREACHABLE
