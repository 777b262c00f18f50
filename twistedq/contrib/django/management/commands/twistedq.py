"""
``python manage.py twistedq [twistd and twistedq options]`` runs the
daemon with the project's settings; ``python manage.py twistedq
<subcommand> ...`` runs the operations command (``twistedq status``,
``twistedq inspect active``...) with them.  See
:py:mod:`twistedq.contrib.django.management.launch` for how the options
are split.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from django.core.management.base import BaseCommand, CommandError

from twistedq.contrib.django.management.launch import (
    LaunchError,
    daemon_argv,
    split_command_line,
    without_django_options,
)

USAGE = """\
usage: manage.py twistedq [twistd options] [twistedq options]
       manage.py twistedq <subcommand> [options]

Runs the twistedq daemon (twistd twistedq) with this project's settings
(--django-settings is the project's DJANGO_SETTINGS_MODULE), the working
directory first on the import path, and the status site off unless
--status or the setting TWISTEDQ_STATUS_ENDPOINT names an endpoint.
twistd's options (-n/--nodaemon, --pidfile, --logfile, --rundir, --uid,
--gid, --umask, --syslog...) and the daemon's may come in any order; -l is
--loglevel, -b --broker, -r --result-backend, -s --status.  Without -n the
daemon runs in the background, as twistd's.

With a subcommand (status, ping, inspect, events, revoke, result, purge,
deadletter...), runs the operations command `twistedq` with the project's
settings.

The daemon's options:
"""


class Command(BaseCommand):
    help = "Run the twistedq daemon, or an operations subcommand, with this project's settings."
    requires_system_checks: list[str] = []

    def run_from_argv(self, argv: list[str]) -> None:
        """
        Take the command line as it is (argparse knows neither twistd's
        options nor the daemon's) and run the daemon or the subcommand.
        """
        arguments = without_django_options(argv[2:])
        if arguments[:1] in (["-h"], ["--help"]):
            self.print_help(os.path.basename(argv[0]), argv[1])
            return
        try:
            line = split_command_line(arguments)
        except LaunchError as e:
            self._fail(str(e), 2)
        if line.subcommand is not None:
            self._operations(line.subcommand)
        self._daemon(daemon_argv(line, self._settings_module(), self._status_endpoint()))

    def print_help(self, prog_name: str, subcommand: str) -> None:
        from twistedq.tap import Options

        # Options' own first line is its synopsis, "[options]".
        options = str(Options()).split("\n", 1)[-1]
        self.stdout.write(USAGE + options)

    def handle(self, *args: Any, **options: Any) -> None:
        raise CommandError("manage.py twistedq is run through run_from_argv")  # pragma: no cover

    def _fail(self, message: str, code: int = 1) -> NoReturn:
        self.stderr.write(f"manage.py twistedq: {message}")
        sys.exit(code)

    def _settings_module(self) -> str:
        module = os.environ.get("DJANGO_SETTINGS_MODULE")
        if not module:
            self._fail(
                "DJANGO_SETTINGS_MODULE is not set: the daemon and its children read the "
                "project's settings from that module (manage.py sets it, or give --settings)"
            )
        return module

    def _status_endpoint(self) -> str | None:
        from django.core.exceptions import ImproperlyConfigured

        from twistedq.contrib.django.conf import settings_from_django

        try:
            endpoint: str | None = settings_from_django().get("status_endpoint")
        except ImproperlyConfigured as e:
            self._fail(str(e))
        return endpoint

    def _daemon(self, argv: list[str]) -> NoReturn:
        """
        Run ``twistd`` with ``argv`` in this process, as the ``twistd``
        script would; exit when it returns.
        """
        from twisted.python import usage
        from twisted.scripts.twistd import ServerOptions, runApp

        from twistedq.tap import working_directory_first

        working_directory_first(sys.path)
        config = ServerOptions()
        try:
            config.parseOptions(argv)
        except usage.UsageError as e:
            self._fail(str(e), 2)
        runApp(config)
        sys.exit(0)

    def _operations(self, argv: list[str]) -> NoReturn:
        """
        Run the operations command :py:func:`twistedq.cli.main` with
        ``argv``; it reads the project's settings (``DJANGO_SETTINGS_MODULE``
        is set in this process's environment).
        """
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", self._settings_module())
        try:
            cli = importlib.import_module("twistedq.cli")
        except ModuleNotFoundError as e:
            if e.name != "twistedq.cli":
                raise
            cli = None
        main: Callable[[list[str]], Any] | None = getattr(cli, "main", None)
        if main is None:
            self._fail(
                f"{argv[0]!r} is not a daemon option, and this twistedq has no operations "
                "command (twistedq.cli.main) to run it as a subcommand"
            )
        code = main(argv)
        sys.exit(code if isinstance(code, int) else 0)
