"""
Tests for :py:obj:`twistedq.tap`: the ``twistd twistedq`` options and the
service tree (built, never started).
"""

import os
import sys

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService
from twisted.internet import defer
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from twistedq import tap
from twistedq.amqp.broker import BrokerAddress, BrokerConnection
from twistedq.amqp.events import EventPublisher
from twistedq.backends.redis import RedisBackend
from twistedq.backends.service import StoreService
from twistedq.backends.sqlite import SQLiteBackend
from twistedq.clockstep import ClockStepGuard
from twistedq.conf import DEFAULT_BROKER_URL, Settings
from twistedq.control import ControlService
from twistedq.daemon.periodic import RECOVERY_JOB
from twistedq.daemon.service import ConsumerService
from twistedq.log import LogLevelService, SeedLogFormatService
from twistedq.scheduler import Scheduler
from twistedq.worker.pool import ProcessPool
from twistedq.worker.service import PoolService

VARIABLES = (
    "TWISTEDQ_BROKER_URL",
    "TWISTEDQ_RESULT_BACKEND",
    "TWISTEDQ_QUEUE",
    "TWISTEDQ_EXCHANGE",
)


def service_of(daemon, kind):
    """
    The one child of ``daemon`` of type ``kind``.
    """
    (service,) = [child for child in daemon if isinstance(child, kind)]
    return service


class TapTestCase(SynchronousTestCase):
    def setUp(self):
        saved = {name: os.environ.get(name) for name in VARIABLES}

        def restore():
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

        self.addCleanup(restore)
        for name in VARIABLES:
            os.environ.pop(name, None)
        self.patch(os, "cpu_count", lambda: 3)

    def parse(self, *argv):
        options = tap.Options()
        options.parseOptions(list(argv))
        return options


class OptionsTests(TapTestCase):
    """
    Parsing the command line.
    """

    def test_defaults(self):
        """
        Without options: one child per CPU, batch 64, prefetch
        concurrency * batch * 4, default settings and status endpoint.
        """
        options = self.parse()
        self.assertEqual(options["concurrency"], 3)
        self.assertEqual(options["batch"], 64)
        self.assertEqual(options["prefetch"], 768)
        self.assertEqual(options["tasks"], [])
        self.assertEqual(options["settings"], Settings())
        self.assertEqual(options["broker-address"], BrokerAddress.from_url(DEFAULT_BROKER_URL))
        self.assertEqual(options["status"], "tcp:8021:interface=127.0.0.1")

    def test_cpu_count_unknown(self):
        """
        When the CPU count is unknown the pool has one child.
        """
        self.patch(os, "cpu_count", lambda: None)
        options = self.parse()
        self.assertEqual((options["concurrency"], options["prefetch"]), (1, 256))

    def test_prefetch_follows_options(self):
        """
        The default prefetch follows ``--concurrency`` and ``--batch``; an
        explicit ``--prefetch`` wins.
        """
        options = self.parse("--concurrency", "5", "--batch", "2")
        self.assertEqual(
            (options["concurrency"], options["batch"], options["prefetch"]), (5, 2, 40)
        )
        self.assertEqual(self.parse("-c", "5", "--prefetch", "7")["prefetch"], 7)

    def test_default_prefetch_capped(self):
        """
        The default prefetch stops at 1,024 messages, unless twice the
        children are more.
        """
        self.assertEqual(self.parse("-c", "8")["prefetch"], 1024)
        self.assertEqual(self.parse("-c", "600", "--batch", "1")["prefetch"], 1200)
        self.assertEqual(self.parse("-c", "1", "--batch", "1")["prefetch"], 4)

    def test_settings_from_environment(self):
        """
        Settings come from the environment unless given as options.
        """
        os.environ["TWISTEDQ_BROKER_URL"] = "amqp://u:p@envhost:5673/v"
        os.environ["TWISTEDQ_QUEUE"] = "envq"
        os.environ["TWISTEDQ_EXCHANGE"] = "envx"
        options = self.parse("--queue", "argq")
        settings = options["settings"]
        self.assertEqual((settings.queue, settings.exchange), ("argq", "envx"))
        self.assertEqual(options["broker-address"].host, "envhost")
        self.assertEqual(options["broker-address"].port, 5673)

    def test_broker_option(self):
        """
        ``--broker`` beats the environment.
        """
        os.environ["TWISTEDQ_BROKER_URL"] = "amqp://envhost/"
        options = self.parse("-b", "amqp://arghost:1/")
        self.assertEqual(options["broker-address"].host, "arghost")
        self.assertEqual(options["settings"].broker_url, "amqp://arghost:1/")

    def test_tasks(self):
        """
        ``--tasks`` takes comma lists and may be repeated; blanks are dropped.
        """
        options = self.parse("--tasks", "a.tasks, b.tasks,", "-t", "c", "--tasks=d,,e")
        self.assertEqual(options["tasks"], ["a.tasks", "b.tasks", "c", "d", "e"])

    def test_tasks_not_shared(self):
        """
        Two Options instances do not share their task lists.
        """
        self.parse("--tasks", "a")
        self.assertEqual(self.parse()["tasks"], [])

    def test_bad_broker_url(self):
        """
        A bad broker URL is a one-line :py:obj:`usage.UsageError`.
        """
        error = self.assertRaises(usage.UsageError, self.parse, "--broker", "http://h/")
        self.assertIn("amqp://", str(error))
        self.assertNotIn("\n", str(error))
        os.environ["TWISTEDQ_BROKER_URL"] = "amqp://h:bad/"
        error = self.assertRaises(usage.UsageError, self.parse)
        self.assertIn("bad port", str(error))

    def test_bad_result_backend(self):
        """
        An unknown result backend URL is a :py:obj:`usage.UsageError`.
        """
        error = self.assertRaises(usage.UsageError, self.parse, "-r", "couchdb://h/")
        self.assertIn("unknown result backend", str(error))
        self.assertNotIn("\n", str(error))

    def test_bad_concurrency(self):
        """
        ``--concurrency`` 0, negative or not a number is a
        :py:obj:`usage.UsageError`.
        """
        for value in ("0", "-2", "x", "1.5"):
            self.assertRaises(usage.UsageError, self.parse, "--concurrency", value)

    def test_bad_batch_and_prefetch(self):
        """
        ``--batch`` and ``--prefetch`` must be positive numbers.
        """
        self.assertRaises(usage.UsageError, self.parse, "--batch", "0")
        self.assertRaises(usage.UsageError, self.parse, "--prefetch", "none")


class MakeServiceTests(TapTestCase):
    """
    The service tree, built but not started.
    """

    def make(self, *argv):
        return tap.makeService(self.parse("--log-format", "twisted", *argv))

    def test_seed_log_format_first(self):
        """
        By default the daemon's first service switches the log file to the
        seed's line format; ``--log-format twisted`` leaves it out.
        """
        daemon = tap.makeService(self.parse())
        self.assertIsInstance(next(iter(daemon)), SeedLogFormatService)
        self.assertNotIsInstance(next(iter(self.make())), SeedLogFormatService)

    def test_bad_log_format(self):
        """
        An unknown log format is a usage error.
        """
        self.assertRaises(usage.UsageError, self.parse, "--log-format", "xml")

    def test_children_in_order(self):
        """
        The daemon is a MultiService of result store, pool, broker connection,
        consumer and status site, in that order.
        """
        daemon = self.make("-c", "2", "--batch", "3", "-r", "redis://localhost:6379/2")
        self.assertIsInstance(daemon, MultiService)
        self.assertTrue(IService.providedBy(daemon))
        self.assertFalse(daemon.running)
        log_level, guard, *children = list(daemon)
        self.assertIsInstance(log_level, LogLevelService)
        self.assertIsInstance(guard, ClockStepGuard)
        self.assertEqual(
            [type(child) for child in children],
            [
                StoreService,
                PoolService,
                BrokerConnection,
                ControlService,
                EventPublisher,
                Scheduler,
                ConsumerService,
                StreamServerEndpointService,
            ],
        )
        backend, pool_service, connection, control, events, scheduler, consumer_service, _site = (
            children
        )
        self.assertIs(control.connection, connection)
        self.assertIs(events.events, consumer_service.dispatcher.events)
        self.assertIs(scheduler.store, backend.backend)
        # No clean-up job (Redis expires results itself); Redis has claims, so
        # parked messages of dead daemons are recovered.
        self.assertEqual(list(scheduler.entries), [RECOVERY_JOB])
        self.assertIsInstance(backend.backend, RedisBackend)
        self.assertIsInstance(pool_service.pool, ProcessPool)
        self.assertEqual(pool_service.pool.size, 2)
        self.assertEqual(consumer_service.dispatcher.feeder.max_batch, 3)
        self.assertEqual(consumer_service.consumer.prefetch, 24)
        self.assertIs(consumer_service.dispatcher.settlement.backend, backend.backend)
        self.assertIs(consumer_service.dispatcher.feeder.pool, pool_service.pool)
        self.assertEqual(pool_service.pool.on_idle, consumer_service.dispatcher.pump)
        self.assertIs(consumer_service.consumer.connection, connection)
        self.assertFalse(any(child.running for child in children))

    def test_no_status_site(self):
        """
        ``--status none`` leaves the status site out.
        """
        daemon = self.make("--status", "none", "-r", "sqlite:///results.sqlite3")
        children = list(daemon)[2:]
        self.assertEqual(len(children), 7)
        self.assertIsInstance(children[0].backend, SQLiteBackend)
        self.assertNotIn(StreamServerEndpointService, [type(c) for c in children])

    def test_no_remote_control(self):
        """
        ``--no-remote-control`` leaves the remote control's listener out.
        """
        types = [type(child) for child in self.make("--no-remote-control")]
        self.assertNotIn(ControlService, types)
        self.assertIn(ControlService, [type(child) for child in self.make()])

    def test_topology_from_settings(self):
        """
        The consumer consumes the queue and exchange of the settings.
        """
        daemon = self.make("--queue", "jobs", "--exchange", "jx", "--status", "none")
        consumer = service_of(daemon, ConsumerService).consumer
        self.assertEqual((consumer.topology.queue, consumer.topology.exchange), ("jobs", "jx"))

    def test_stop_waits_for_drain(self):
        """
        When the daemon stops, the broker connection, the pool and the result
        store are stopped only after the consumer's drain has finished, so
        the outcomes of tasks in flight can still be stored and acked.
        """
        daemon = self.make()
        stopped = []
        drains = {}
        for child in daemon:
            d = defer.Deferred()
            drains[type(child)] = d

            def stop(child=child, d=d):
                stopped.append(type(child))
                return d

            child.stopService = stop
        stopping = daemon.stopService()
        self.assertEqual(stopped[0], StreamServerEndpointService)
        early = {BrokerConnection, PoolService, StoreService} & set(stopped)
        self.assertEqual(early, set(), f"stopped while the consumer drains: {stopped}")
        drains[StreamServerEndpointService].callback(None)
        self.assertIn(ConsumerService, stopped)
        self.assertEqual(stopped[2:], [])
        drains[ConsumerService].callback(None)
        self.assertEqual(stopped[2:], [Scheduler])
        drains[Scheduler].callback(None)
        self.assertEqual(stopped[3:], [EventPublisher])
        drains[EventPublisher].callback(None)
        self.assertEqual(stopped[4:], [ControlService])
        drains[ControlService].callback(None)
        self.assertEqual(stopped[5:], [BrokerConnection])
        drains[BrokerConnection].callback(None)
        drains[PoolService].callback(None)
        self.assertNoResult(stopping)
        drains[StoreService].callback(None)
        drains[ClockStepGuard].callback(None)
        self.assertNoResult(stopping)
        drains[LogLevelService].callback(None)
        self.successResultOf(stopping)

    def test_stop_error_does_not_stop_the_rest(self):
        """
        An error while stopping one service is logged and the services after
        it are still stopped.
        """
        daemon = self.make()
        stopped = []
        for child in daemon:

            def stop(child=child):
                stopped.append(type(child))
                if isinstance(child, ConsumerService):
                    raise RuntimeError("drain failed")

            child.stopService = stop
        self.successResultOf(daemon.stopService())
        self.assertEqual(
            stopped,
            [
                StreamServerEndpointService,
                ConsumerService,
                Scheduler,
                EventPublisher,
                ControlService,
                BrokerConnection,
                PoolService,
                StoreService,
                ClockStepGuard,
                LogLevelService,
            ],
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class SchedulerOptionsTests(SynchronousTestCase):
    def make(self, *args):
        options = tap.Options()
        options.parseOptions(["--status", "none", *args])
        return list(tap.makeService(options))

    def test_no_scheduler(self):
        """
        ``--no-scheduler`` leaves the scheduler out.
        """
        self.assertNotIn(Scheduler, [type(child) for child in self.make("--no-scheduler")])

    def test_timezone_and_lease(self):
        """
        ``--timezone`` and ``--slot-lease`` reach the scheduler; an unknown
        zone is refused when the options are read.
        """
        children = self.make("--timezone", "Europe/Paris", "--slot-lease", "30")
        (scheduler,) = [child for child in children if isinstance(child, Scheduler)]
        self.assertEqual((scheduler.default_tz, scheduler.lease), ("Europe/Paris", 30.0))
        self.assertRaises(usage.UsageError, self.make, "--timezone", "Nowhere/Special")


class DelayWiringTests(TapTestCase):
    """
    The dispatcher publishes retries and far ETAs through a publisher of
    the daemon's queue.
    """

    make = MakeServiceTests.make

    def test_hold_eta(self):
        """
        ``--hold-eta`` sets the dispatcher's threshold (60 s without it),
        and its ``publish_later`` is a confirming publisher's on the
        consumed queue.
        """
        daemon = self.make("--queue", "jobs", "--status", "none", "--hold-eta", "2.5")
        dispatcher = service_of(daemon, ConsumerService).dispatcher
        self.assertEqual(dispatcher.timing.hold_eta, 2.5)
        self.assertEqual(dispatcher.settlement.hold_eta, 2.5)
        # The dispatcher's own (which keeps a task's priority) wraps it.
        publisher = dispatcher._publish_later.__self__
        self.assertEqual(publisher.topology.queue, "jobs")
        default = service_of(self.make("--status", "none"), ConsumerService).dispatcher
        self.assertEqual(default.timing.hold_eta, 60.0)
        self.assertRaises(usage.UsageError, self.parse, "--hold-eta", "0")

    def test_give_back_and_result_size(self):
        """
        ``--give-back-after`` reaches the dispatcher's sweep (25 min without
        it), ``--max-result-size`` the pool (8 MiB without it).
        """
        daemon = self.make(
            "--status",
            "none",
            "--park-after",
            "60",
            "--give-back-after",
            "90",
            "--max-result-size",
            "1MiB",
        )
        consumer_service = service_of(daemon, ConsumerService)
        self.assertEqual(consumer_service.dispatcher.overdue.limit, 90.0)
        self.assertEqual(consumer_service.pool.max_result_size, 1024 * 1024)
        default = service_of(self.make("--status", "none"), ConsumerService)
        self.assertEqual(default.dispatcher.overdue.limit, 25 * 60.0)
        self.assertEqual(default.pool.max_result_size, 8 * 1024 * 1024)
        self.assertRaises(usage.UsageError, self.parse, "--give-back-after", "0")
        error = self.assertRaises(
            usage.UsageError, self.parse, "--give-back-after", "3", "--park-after", "1200"
        )
        self.assertIn("must be longer than --park-after", str(error))


class WorkingDirectoryTests(TapTestCase):
    """
    As every worker command, ``twistd twistedq`` imports from the folder it
    was started in without ``PYTHONPATH=.``.
    """

    def test_working_directory_first(self):
        """
        Reading the options puts the working directory (as an absolute path,
        which stays right after twistd's ``--rundir``) first on ``sys.path``,
        before the Django settings or the task modules are imported.
        """
        here = os.getcwd()
        self.patch(sys, "path", [p for p in sys.path if p not in (here, "")])
        self.parse()
        self.assertEqual(sys.path[0], here)

    def test_already_there(self):
        """
        A working directory already on ``sys.path`` is not added again.
        """
        here = os.getcwd()
        path = ["/somewhere", here, *[p for p in sys.path if p != here]]
        self.patch(sys, "path", list(path))
        self.parse()
        self.assertEqual(sys.path, path)


class StatusSiteWiringTests(TapTestCase):
    """
    What the options give the status site.
    """

    def site_root(self, *argv):
        daemon = tap.makeService(self.parse("--log-format", "twisted", *argv))
        (served,) = [c for c in daemon if isinstance(c, StreamServerEndpointService)]
        dispatcher = next(c for c in daemon if isinstance(c, ConsumerService)).dispatcher
        return served.factory.resource, dispatcher

    def test_tracebacks_off_by_default(self):
        """
        The status URLs leave tracebacks out unless ``--status-tracebacks``
        is given.
        """
        root, _ = self.site_root()
        self.assertFalse(root.children[b"celery"].tracebacks)
        root, _ = self.site_root("--status-tracebacks")
        self.assertTrue(root.children[b"celery"].tracebacks)

    def test_stats_tell_since_when_the_store_is_down(self):
        """
        ``/stats`` learns since when the dispatcher finds the store
        unavailable.
        """
        root, dispatcher = self.site_root()
        stats = root.children[b"stats"]
        self.assertIsNone(stats.down_since())
        dispatcher.health.down_since = 1234.5
        self.assertEqual(stats.down_since(), 1234.5)
        self.assertFalse(stats.available())


class LogLevelOptionTests(TapTestCase):
    """
    ``--loglevel`` (``-l`` after ``twistedq``), as celeryd's.
    """

    def test_levels(self):
        """
        The level is one of DEBUG, INFO, WARNING, ERROR or CRITICAL, in any
        case (celeryd's FATAL and WARN too); INFO without the option.
        """
        self.assertEqual(self.parse()["loglevel"], "INFO")
        self.assertEqual(self.parse("--loglevel", "debug")["loglevel"], "DEBUG")
        self.assertEqual(self.parse("-l", "WARN")["loglevel"], "WARNING")
        self.assertEqual(self.parse("-l", "ERROR")["loglevel"], "ERROR")
        self.assertEqual(self.parse("--loglevel=FATAL")["loglevel"], "CRITICAL")
        error = self.assertRaises(usage.UsageError, self.parse, "--loglevel", "/var/log/x.log")
        self.assertIn("DEBUG, INFO, WARNING, ERROR, CRITICAL", str(error))

    def test_level_reaches_the_log(self):
        """
        The first service applies the level to twistd's log, in the seed
        format or Twisted's.
        """
        first = next(iter(tap.makeService(self.parse("-l", "ERROR"))))
        self.assertIsInstance(first, SeedLogFormatService)
        self.assertEqual(first.level, "ERROR")
        first = next(iter(tap.makeService(self.parse("--log-format", "twisted", "-l", "ERROR"))))
        self.assertIsInstance(first, LogLevelService)
        self.assertEqual(first.level, "ERROR")


class CeleryHabitTests(TapTestCase):
    """
    celeryd's ``-p`` (pid file), ``-d`` (detach) and ``-f`` (log file) mean
    other things to twistd; what would go wrong is refused with the twistd
    spelling.
    """

    def twistd(self, *argv):
        """
        Parse a whole ``twistd`` command line.
        """
        from twisted.scripts.twistd import ServerOptions

        options = ServerOptions()
        options.parseOptions(list(argv))
        return options

    def test_after_twistedq(self):
        """
        ``-p``/``--pidfile``, ``-d``/``--detach`` and ``-f``/``--logfile``
        after ``twistedq`` say where twistd's own options go.
        """
        for argv, hint in (
            (["-p", "celeryd.pid"], "twistd --pidfile celeryd.pid twistedq"),
            (["--pidfile", "w.pid"], "twistd --pidfile w.pid twistedq"),
            (["-d"], "-n"),
            (["--detach"], "-n"),
            (["-f", "celeryd.log"], "twistd --logfile celeryd.log twistedq"),
            (["--logfile", "w.log"], "twistd --logfile w.log twistedq"),
        ):
            error = self.assertRaises(usage.UsageError, self.parse, *argv)
            self.assertIn(hint, str(error), argv)

    def test_profile_that_looks_like_a_pid_file(self):
        """
        ``twistd -p twistedq.pid twistedq`` would write a profile where the
        pid file was meant to be: refused, naming ``--pidfile``.
        """
        for name in ("twistedq.pid", "/run/celeryd.PID", "pidfile"):
            error = self.assertRaises(
                usage.UsageError, self.twistd, "-p", name, "--pidfile=", "twistedq"
            )
            self.assertIn("--pidfile", str(error))
            self.assertIn("--profile", str(error))
        options = self.twistd("-p", "daemon.prof", "--pidfile=", "twistedq")
        self.assertEqual(options["profile"], "daemon.prof")

    def test_profile_over_a_pid_file(self):
        """
        A profile file that holds a pid (an existing pid file) is refused.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("4242\n")
        self.assertRaises(usage.UsageError, self.twistd, "--profile", path, "twistedq")

    def test_logfile_that_is_a_level(self):
        """
        ``twistd -l INFO twistedq`` would log to a file named INFO: refused,
        naming twistedq's ``--loglevel``.
        """
        error = self.assertRaises(
            usage.UsageError, self.twistd, "-l", "info", "--pidfile=", "twistedq"
        )
        self.assertIn("twistedq --loglevel INFO", str(error))
        self.assertEqual(self.twistd("-l", "t.log", "twistedq")["logfile"], "t.log")

    def test_tap_file_with_twistedq(self):
        """
        twistd's ``-f`` reads a .tap file, which ``twistedq`` ignores: a
        celeryd log file given there is refused rather than ignored.
        """
        error = self.assertRaises(usage.UsageError, self.twistd, "-f", "celeryd.log", "twistedq")
        self.assertIn("--logfile celeryd.log", str(error))

    def test_help(self):
        """
        ``twistd twistedq --help`` lists the celeryd spellings with where
        they go, and ``--loglevel``.
        """
        text = tap.Options().getUsage()
        for expected in ("--loglevel=", "-p, --pidfile=", "-d, --detach", "-f, --logfile="):
            self.assertIn(expected, text)


class EventOptionsTests(SynchronousTestCase):
    def make(self, *args):
        options = tap.Options()
        options.parseOptions(["--status", "none", *args])
        return list(tap.makeService(options))

    def test_events_by_default(self):
        """
        The daemon publishes events on the events exchange of its exchange,
        naming itself host:pid, with a heartbeat every 2 s.
        """
        events = service_of(self.make("--exchange", "jx", "--queue", "jobs"), EventPublisher)
        self.assertEqual(events.exchange, "jx.events")
        self.assertEqual(events.heartbeat_interval, 2.0)
        self.assertEqual(events.base["daemon"], f"{events.identity.host}:{os.getpid()}")
        self.assertEqual(events.base["queue"], "jobs")

    def test_name_and_heartbeat_interval(self):
        """
        ``--name`` and ``--heartbeat-interval`` reach the publisher.
        """
        events = service_of(
            self.make("--name", "w1", "--heartbeat-interval", "0.5"), EventPublisher
        )
        self.assertEqual(events.base["daemon"], "w1")
        self.assertEqual(events.heartbeat_interval, 0.5)
        self.assertRaises(usage.UsageError, self.make, "--heartbeat-interval", "0")

    def test_no_events(self):
        """
        ``--no-events`` leaves the publisher out: nothing observes the
        daemon's events for it.
        """
        children = self.make("--no-events", "--no-metrics")
        self.assertNotIn(EventPublisher, [type(child) for child in children])
        dispatcher = service_of(children, ConsumerService).dispatcher
        self.assertEqual(dispatcher.events._observers, [])
