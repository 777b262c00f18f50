"""
How ``manage.py twistedq`` splits its command line between twistd, the
daemon and the operations command, and the ``twistd`` command line it
runs.
"""

from twisted.trial.unittest import SynchronousTestCase

from twistedq.contrib.django.management.launch import (
    CommandLine,
    LaunchError,
    daemon_argv,
    split_command_line,
    without_django_options,
)


class SplitTests(SynchronousTestCase):
    def test_long_options(self) -> None:
        """
        twistd's long options go to twistd, with their values (given apart
        or after ``=``), ``--pidfile`` and ``--logfile`` included; the
        daemon's go to the daemon, in the order given.
        """
        line = split_command_line(
            [
                "--concurrency",
                "2",
                "--nodaemon",
                "--pidfile=",
                "--queue=jobs",
                "--logfile",
                "/tmp/t.log",
                "--status-tracebacks",
                "--umask",
                "022",
            ]
        )
        self.assertEqual(
            line.twistd, ["--nodaemon", "--pidfile=", "--logfile", "/tmp/t.log", "--umask", "022"]
        )
        self.assertEqual(line.daemon, ["--concurrency", "2", "--queue=jobs", "--status-tracebacks"])
        self.assertIsNone(line.subcommand)

    def test_short_options(self) -> None:
        """
        A letter both know is the daemon's (``-l`` the log level, ``-b``
        the broker, ``-s`` the status endpoint, ``-r`` the store); twistd's
        own letters (``-n``, ``-u``) are twistd's; letters run together
        are split, a value taking the rest of the word.
        """
        line = split_command_line(
            ["-n", "-l", "DEBUG", "-b", "amqp://h/", "-c4", "-s", "none", "-u", "1000", "-nr", "x"]
        )
        self.assertEqual(line.twistd, ["-n", "-u", "1000", "-n"])
        self.assertEqual(
            line.daemon, ["-l", "DEBUG", "-b", "amqp://h/", "-c", "4", "-s", "none", "-r", "x"]
        )

    def test_celeryd_letters(self) -> None:
        """
        celeryd's ``-p``, ``-f`` (with their file) and ``-d`` are refused,
        naming the option to use.
        """
        for given, hint in (
            (["-p", "x.pid"], "--pidfile"),
            (["-px.pid"], "--pidfile"),
            (["-f", "x.log"], "--logfile"),
            (["-d", "-n"], "-n"),
        ):
            with self.assertRaises(LaunchError) as caught:
                split_command_line(["-c", "2", *given])
            self.assertIn(hint, str(caught.exception))

    def test_missing_value(self) -> None:
        """
        An option that needs a value, last, is refused.
        """
        self.assertRaises(LaunchError, split_command_line, ["--concurrency"])
        self.assertRaises(LaunchError, split_command_line, ["-n", "-c"])

    def test_subcommand(self) -> None:
        """
        A word that is no option's value makes the whole line the
        operations command's, options before it included.
        """
        for argv in (
            ["deadletter", "list"],
            ["inspect", "active", "--json"],
            ["--broker", "amqp://h/", "--timeout", "2", "ping"],
            ["-d", "host:1", "ping"],
        ):
            line = split_command_line(argv)
            self.assertEqual(line.subcommand, argv)

    def test_django_options_removed(self) -> None:
        """
        ``--settings`` and ``--pythonpath``, which ``manage.py`` applied,
        are taken out with their values.
        """
        self.assertEqual(
            without_django_options(
                ["--settings", "a.b", "-n", "--pythonpath=/x", "--queue", "q", "--settings=c"]
            ),
            ["-n", "--queue", "q"],
        )


class DaemonArgvTests(SynchronousTestCase):
    def test_defaults_first(self) -> None:
        """
        The settings module and, unless configured, ``--status none`` come
        first after ``twistedq``, so that the daemon's own options given
        win over them.
        """
        line = CommandLine(twistd=["-n"], daemon=["--status", "tcp:0"])
        self.assertEqual(
            daemon_argv(line, "mysite.settings", None),
            [
                "-n",
                "twistedq",
                "--django-settings",
                "mysite.settings",
                "--status",
                "none",
                "--status",
                "tcp:0",
            ],
        )

    def test_configured_endpoint(self) -> None:
        """
        With ``TWISTEDQ_STATUS_ENDPOINT`` set, the daemon reads it itself.
        """
        self.assertEqual(
            daemon_argv(CommandLine(), "mysite.settings", "tcp:8022"),
            ["twistedq", "--django-settings", "mysite.settings"],
        )

    def test_parsed_by_twistd(self) -> None:
        """
        twistd parses the line made: ``--status none`` is the daemon's
        status option unless it is given again.
        """
        from twisted.scripts.twistd import ServerOptions

        from twistedq import tap

        parsed = []
        self.patch(tap.Options, "postOptions", lambda options: parsed.append(options))
        for given, status in ((["-c", "2"], "none"), (["-s", "tcp:0"], "tcp:0")):
            line = split_command_line(["-n", "--pidfile=", *given])
            config = ServerOptions()
            config.parseOptions(daemon_argv(line, "mysite.settings", None))
            self.assertTrue(config["nodaemon"])
            self.assertEqual(config["pidfile"], "")
            self.assertEqual(parsed[-1]["status"], status)
            self.assertEqual(parsed[-1]["django-settings"], "mysite.settings")


class OperationsCommandTests(SynchronousTestCase):
    def test_reaches_cli_main(self) -> None:
        """
        A subcommand line goes whole to ``twistedq.cli.main``, with the
        project's settings module in the environment; Django's own
        ``--settings`` is taken out; main's exit status is the command's.
        """
        import os
        import sys
        import types

        from twistedq.contrib.django.management.commands.twistedq import Command

        calls = []

        def main(argv: list[str]) -> None:
            calls.append((argv, os.environ.get("DJANGO_SETTINGS_MODULE")))
            raise SystemExit(3)

        self.patch(
            sys, "modules", dict(sys.modules, **{"twistedq.cli": types.SimpleNamespace(main=main)})
        )
        self.patch(os, "environ", dict(os.environ, DJANGO_SETTINGS_MODULE="mysite.settings"))
        with self.assertRaises(SystemExit) as exited:
            Command().run_from_argv(
                ["manage.py", "twistedq", "--settings", "mysite.settings", "deadletter", "list"]
            )
        self.assertEqual(exited.exception.code, 3)
        self.assertEqual(calls, [(["deadletter", "list"], "mysite.settings")])
