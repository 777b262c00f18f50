"""
``manage.py twistedq -n`` writes no pid file unless ``--pidfile`` names
one, so two daemons in the foreground can run from one folder.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from twistedq.contrib.django.management.launch import (
    daemon_argv,
    foreground_without_pidfile,
    split_command_line,
)


def pidfile_of(arguments: list[str]) -> str:
    """
    The pid file twistd reads from ``manage.py twistedq <arguments>``.
    """
    from twisted.scripts.twistd import ServerOptions

    from twistedq import tap

    line = split_command_line(arguments)
    line.twistd = foreground_without_pidfile(line.twistd)
    config = ServerOptions()
    original = tap.Options.postOptions
    tap.Options.postOptions = lambda options: None  # type: ignore[method-assign]
    try:
        config.parseOptions(daemon_argv(line, "mysite.settings", None))
    finally:
        tap.Options.postOptions = original  # type: ignore[method-assign]
    pidfile: str = config["pidfile"]
    return pidfile


class ForegroundPidfileTests(SynchronousTestCase):
    def test_foreground_writes_none(self) -> None:
        """
        ``-n`` and ``--nodaemon`` alone mean no pid file.
        """
        self.assertEqual(pidfile_of(["-n"]), "")
        self.assertEqual(pidfile_of(["--nodaemon", "-c", "2"]), "")

    def test_given_pidfile_kept(self) -> None:
        """
        A pid file given is written, in the foreground too; in the
        background twistd's default stays.
        """
        # twistd makes the path absolute.
        self.assertEqual(os.path.basename(pidfile_of(["-n", "--pidfile", "a.pid"])), "a.pid")
        self.assertEqual(os.path.basename(pidfile_of(["-n", "--pidfile=b.pid"])), "b.pid")
        self.assertEqual(os.path.basename(pidfile_of([])), "twistd.pid")
