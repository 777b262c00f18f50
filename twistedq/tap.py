"""
``twistd twistedq``: the daemon's command line and its one composition root.
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from twisted.application import strports
from twisted.application.service import IService
from twisted.internet.error import ReactorNotRunning
from twisted.python import usage
from twisted.web.server import Site

from twistedq.amqp.broker import (
    BrokerConnection,
    BrokerURLError,
    Publisher,
    Topology,
    broker_addresses,
)
from twistedq.amqp.consumer import Consumer
from twistedq.amqp.events import EventPublisher
from twistedq.backends.base import BackendURLError, IResultBackend, IScheduleStore
from twistedq.backends.service import StoreService
from twistedq.backends.url import backend_from_url
from twistedq.clockstep import ClockStepGuard
from twistedq.conf import (
    DEFAULT_STATUS_ENDPOINT,
    Settings,
    SettingsError,
    parse_expiry,
    parse_size,
    with_help,
)
from twistedq.contrib.django.schedule_reader import database_schedules
from twistedq.control import ControlService, DaemonControl
from twistedq.daemon.dispatcher import Dispatcher, DispatchSettings
from twistedq.daemon.events import daemon_load
from twistedq.daemon.health import ConsumingWatch
from twistedq.daemon.identity import DaemonIdentity
from twistedq.daemon.leases import DEFAULT_PARK_AFTER
from twistedq.daemon.overdue import DEFAULT_GIVE_BACK_AFTER
from twistedq.daemon.periodic import cleanup_job, recovery_job
from twistedq.daemon.service import ConsumerService, DrainingMultiService
from twistedq.daemon.timing import DEFAULT_HOLD_ETA
from twistedq.dashboard.daemon import daemon_dashboard
from twistedq.hooks import DaemonHooks
from twistedq.log import LOG_LEVELS, LogLevelService, SeedLogFormatService
from twistedq.metrics import DaemonMetrics, MetricsResource
from twistedq.outcome import DEFAULT_MAX_RESULT_SIZE
from twistedq.ratelimit import RateLimits, parse_rate_limits
from twistedq.scheduler import Scheduler
from twistedq.schedules import crontab
from twistedq.web import make_site_root, make_status_site
from twistedq.worker.pool import ProcessPool, ProcessStarter
from twistedq.worker.reactor_tasks import ReactorTaskRunner
from twistedq.worker.service import PoolService, ReactorTasksService

__all__ = ["Options", "makeService"]


#: The shortest operator token the daemon takes: a short one is guessed.
MIN_OPERATOR_TOKEN = 16

#: The most the default ``--prefetch`` grows to with many children and
#: big batches (a daemon's reactor carries about 10,000 tasks a second:
#: more held messages buy it nothing), unless the children need more.
PREFETCH_CAP = 1024

BATCH_HELP = (
    "Most tasks sent to a child in one call; a batch takes quick tasks while their "
    "measured average run times add up to at most 20 ms"
)


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"{value} is not a positive number")
    return number


with_help(_positive, "A positive whole number.")


def _result_expires(value: str) -> int:
    try:
        return parse_expiry(value)
    except ValueError as e:
        raise ValueError(f"--result-expires: {e}") from None


with_help(_result_expires, "Whole seconds, from 1 to 315360000 (10 years).")


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError(f"{value} is not a positive number")
    return number


with_help(_positive_float, "A positive number.")


def _log_level(value: str) -> str:
    name = value.strip().upper()
    name = {"WARN": "WARNING", "FATAL": "CRITICAL"}.get(name, name)
    if name not in LOG_LEVELS:
        raise ValueError(f"{value!r} is not a log level: one of {', '.join(LOG_LEVELS)}")
    return name


with_help(_log_level, "DEBUG, INFO, WARNING, ERROR or CRITICAL.")


def _looks_like_a_pid_file(path: str) -> bool:
    """
    Whether ``path``, given to twistd's ``--profile``, was meant as a pid
    file: named so, or holding a pid already.
    """
    name = os.path.basename(path).lower()
    if name.endswith(".pid") or name in ("pid", "pidfile"):
        return True
    try:
        with open(path, "rb") as existing:
            head = existing.read(32)
    except OSError:
        return False
    return head.strip().isdigit()


def _check_twistd_options(twistd: Any) -> None:
    """
    Refuse the twistd options before ``twistedq`` that a celeryd user
    types meaning something else, where twistd would do harm or ignore
    them: ``-p`` (``--profile``) with a pid file, ``-l`` (``--logfile``)
    with a level name, ``-f`` (``--file``, a .tap file not read with a
    plugin).
    """
    if twistd is None:
        return
    profile = twistd.get("profile")
    if profile and _looks_like_a_pid_file(profile):
        raise usage.UsageError(
            f"twistd's -p is --profile, which would write a profile to {profile}; "
            f"the pid file is given as twistd --pidfile {profile} twistedq ..."
        )
    logfile = twistd.get("logfile")
    if logfile and logfile.upper() in (*LOG_LEVELS, "WARN", "FATAL"):
        raise usage.UsageError(
            f"twistd's -l is --logfile, which would log to a file named {logfile}; "
            f"the level is twistedq --loglevel {_log_level(logfile)}"
        )
    tap_file = twistd.get("file")
    if tap_file and tap_file != "twistd.tap":
        raise usage.UsageError(
            f"twistd's -f reads a .tap file, which twistd twistedq does not; "
            f"a log file is given as twistd --logfile {tap_file} twistedq ..."
        )


def _timezone(value: str) -> str:
    crontab(tz=value)  # raises ValueError for an unknown zone
    return value


with_help(_timezone, "An IANA time zone name.")


def working_directory_first(path: list[str]) -> None:
    """
    Put the working directory on the import path ``path`` (``sys.path``)
    first, as every worker command does, unless it is there already: the
    Django settings and the task modules of the project ``twistd`` was
    started in are then found without ``PYTHONPATH=.``.  It goes in as an
    absolute path, so it stays right after twistd's ``--rundir`` changes
    the directory, and the children inherit it.
    """
    here = os.getcwd()
    if here not in path:
        path.insert(0, here)


class Options(usage.Options):
    """
    The options of ``twistd twistedq``.
    """

    synopsis = "[options]"
    longdesc = "Run twistedq tasks from an AMQP queue in a pool of child processes."

    optFlags = [
        [
            "no-scheduler",
            None,
            "Run no periodic tasks, no cleanup of expired results and no recovery of parked "
            "messages in this daemon (other daemons' schedulers still do: keep at least one)",
        ],
        [
            "no-duplicate-check",
            None,
            "Do not claim tasks (or, on stores without claims, read the store) before running "
            "them: faster, but a redelivered or republished task may then run again and a "
            "revoked one run",
        ],
        [
            "reactor-tasks",
            None,
            "Also import the task modules in the daemon and run the tasks "
            "marked on_reactor (Deferred or async) on its reactor",
        ],
        [
            "seed-states",
            None,
            "Report SUCCESS as the celery 0.2.0 README's DONE [default: $TWISTEDQ_SEED_STATES]",
        ],
        [
            "status-tracebacks",
            None,
            "Show a failed task's traceback at its status URL (by default only the "
            "exception's type and message: the URL is public to anyone holding the id)",
        ],
        [
            "no-metrics",
            None,
            "Serve no /metrics (Prometheus) on the status site, and keep no figures for it",
        ],
        [
            "no-events",
            None,
            "Publish no events (task transitions, heartbeats) on the <exchange>.events exchange",
        ],
        [
            "no-remote-control",
            None,
            "Answer no remote control requests (ping, inspect, revoke, pool, shutdown) "
            "on the <exchange>.control exchange",
        ],
        [
            "no-dashboard",
            None,
            "Serve no live dashboard (/dashboard/) on the status site",
        ],
        [
            "cluster-rate-limits",
            None,
            "Keep rate limits across every daemon sharing the result store, not per daemon: "
            "each start of a limited task first claims its interval of 1/rate s in the store "
            "(give every daemon this option and the same limits)",
        ],
    ]

    optParameters = [
        [
            "broker",
            "b",
            None,
            "AMQP broker URL, or the URLs of a cluster's nodes separated by commas, tried in "
            "turn [default: $TWISTEDQ_BROKER_URL or amqp://guest:guest@127.0.0.1:5672/]",
        ],
        [
            "queue-type",
            None,
            None,
            "classic or quorum: declare the task, delay and dead-letter queues of that type "
            "(quorum, replicated, is the choice for a cluster) and refuse queues declared "
            "otherwise [default: use the queues as they exist, declare missing ones classic]",
        ],
        [
            "max-priority",
            None,
            None,
            "Declare the (classic) task queues with priorities 0 to N (x-max-priority); tasks "
            "with a higher priority are delivered first [default: no priorities]",
            _positive,
        ],
        [
            "queue",
            "q",
            None,
            "Queue to consume, or several: a,b (each on a channel of its own with its own "
            "--prefetch; their tasks take turns for the children) "
            "[default: $TWISTEDQ_QUEUE or twistedq]",
        ],
        ["exchange", None, None, "Exchange tasks are published to [default: twistedq]"],
        ["concurrency", "c", None, "Number of child processes [default: CPU count]", _positive],
        [
            "max-concurrency",
            None,
            None,
            "Most child processes remote control's pool.grow may reach "
            "[default: 4 x --concurrency]",
            _positive,
        ],
        [
            "result-backend",
            "r",
            None,
            "Result store URL: redis://host:port/db, "
            "redis+sentinel://host:port,host:port,host:port/name/db (the primary the Redis "
            "sentinels name), sqlite:///path, memcached://host:port "
            "django://[alias] or memory:// (the daemon's memory: no client reads it) "
            "[default: $TWISTEDQ_RESULT_BACKEND or sqlite://, a file in the working directory]",
        ],
        [
            "status",
            "s",
            None,
            "strports endpoint of the JSON status resource, or 'none' [default: the Django "
            f"setting TWISTEDQ_STATUS_ENDPOINT, else {DEFAULT_STATUS_ENDPOINT}]",
        ],
        [
            "time-limit",
            None,
            None,
            "Hard time limit of a task, in seconds: its child is killed and it fails with "
            "TimeLimitExceeded [default: none; a task's own time_limit wins]",
            _positive_float,
        ],
        [
            "soft-time-limit",
            None,
            None,
            "Soft time limit, in seconds: SoftTimeLimitExceeded is raised inside the task "
            "[default: none; a task's own soft_time_limit wins]",
            _positive_float,
        ],
        [
            "max-tasks-per-child",
            None,
            None,
            "Replace a child after it ran this many tasks [default: never]",
            _positive,
        ],
        [
            "max-memory-per-child",
            None,
            None,
            "Replace a child whose resident memory passes this many MiB after a batch "
            "[default: never]",
            _positive,
        ],
        [
            "cleanup-interval",
            None,
            3600.0,
            "Seconds between removals of expired results from SQLite or the Django database "
            "(the periodic job twistedq.cleanup_expired_results)",
            _positive_float,
        ],
        [
            "timezone",
            None,
            "UTC",
            "Time zone of crontab schedules that name none (an IANA name: Europe/Paris)",
            _timezone,
        ],
        [
            "claim-lease",
            None,
            15.0,
            "Seconds a claim on a task holds unless renewed (renewed every third of it while "
            "the task waits or runs); after a daemon dies its tasks run elsewhere after at "
            "most this long",
            _positive_float,
        ],
        [
            "slot-lease",
            None,
            15.0,
            "Seconds a daemon's claim on a periodic slot holds before another daemon may "
            "publish the slot instead",
            _positive_float,
        ],
        [
            "task-attempts",
            None,
            3,
            "Runs of a task whose child dies before it fails with WorkerLostError and goes to "
            "the dead-letter queue",
            _positive,
        ],
        [
            "shutdown-grace",
            None,
            30.0,
            "Seconds running tasks get to finish after SIGTERM before their children are killed",
            _positive_float,
        ],
        [
            "django-settings",
            None,
            None,
            "Django settings module: sets DJANGO_SETTINGS_MODULE, twistedq's settings are read "
            "from it, and the daemon and every child run django.setup() (the children also "
            "tasks.autodiscover()) [default: $DJANGO_SETTINGS_MODULE]",
        ],
        [
            "loglevel",
            "l",
            "INFO",
            "Lowest level of what the daemon logs: DEBUG, INFO, WARNING, ERROR or CRITICAL "
            "(a child's lines by the level they name, what it prints by its stream)",
            _log_level,
        ],
        [
            "log-format",
            None,
            "seed",
            "Format of the daemon's log lines: 'seed' ([time: LEVEL/process] message, "
            "as the celery 0.2.0 README) or 'twisted' (twistd's own)",
        ],
        [
            "result-expires",
            None,
            None,
            "Seconds results, pending records, tasksets and claims are kept in the store "
            "[default: $TWISTEDQ_RESULT_EXPIRES or 86400, a day]",
            _result_expires,
        ],
        [
            "max-message-size",
            None,
            None,
            "Largest task message taken, in bytes (or 8MiB, 512KiB); a larger one is "
            "dead-lettered as too-large [default: $TWISTEDQ_MAX_MESSAGE_SIZE or 8MiB]",
            parse_size,
        ],
        [
            "max-result-size",
            None,
            DEFAULT_MAX_RESULT_SIZE,
            "Largest outcome a task may leave, in bytes (or 8MiB, 512KiB), measured in the "
            "child as stored; a larger one becomes a FAILURE ResultTooLarge and never leaves "
            "the child",
            parse_size,
        ],
        [
            "signing-keys",
            None,
            None,
            "Keys id:secret,... that task messages must be signed with (the first also signs "
            "the tasks that tasks publish); others are dead-lettered as unsigned or "
            "bad-signature. Visible to other users in the process list: prefer "
            "$TWISTEDQ_SIGNING_KEYS [default: $TWISTEDQ_SIGNING_KEYS or none]",
        ],
        [
            "hold-eta",
            None,
            DEFAULT_HOLD_ETA,
            "Seconds ahead within which a task's ETA (countdown, retry) is awaited in the "
            "daemon's memory; a task due later waits in the broker's delay queues "
            "(<queue>.delay.<seconds>) instead",
            _positive_float,
        ],
        [
            "park-after",
            None,
            DEFAULT_PARK_AFTER,
            "Seconds after which a claimed task still waiting or running has its message "
            "parked in the result store and acknowledged, under RabbitMQ's consumer timeout "
            "(30 min by default); a parked message whose daemon dies is published again",
            _positive_float,
        ],
        [
            "give-back-after",
            None,
            DEFAULT_GIVE_BACK_AFTER,
            "Seconds after which a message held unacknowledged that could not be parked "
            "(the store is down, another attempt holds its claim) goes back to the queue, "
            "so the broker's consumer timeout never closes the channel; keep it between "
            "--park-after and that timeout",
            _positive_float,
        ],
        ["batch", None, 64, BATCH_HELP, _positive],
        [
            "heartbeat-interval",
            None,
            2.0,
            "Seconds between two daemon.heartbeat events (sent only while someone listens)",
            _positive_float,
        ],
        [
            "name",
            None,
            None,
            "This daemon's name in events and remote control, unique in the cluster "
            "[default: host:pid]",
        ],
        [
            "prefetch",
            None,
            None,
            "Most unacknowledged messages held [default: concurrency * batch * 4, at most 1024 "
            "unless the children are more than 512]",
            _positive,
        ],
        [
            "operator-token",
            None,
            None,
            "Token that allows the dashboard's actions (revoke, terminate, pause, republish), "
            "sent by the page in the X-Twistedq-Token header; without one the dashboard is "
            "read-only. Visible in the process list: prefer $TWISTEDQ_OPERATOR_TOKEN "
            "[default: $TWISTEDQ_OPERATOR_TOKEN or none]",
        ],
    ]

    def __init__(self) -> None:
        usage.Options.__init__(self)
        self["tasks"] = []
        self["hooks"] = []
        self["rate-limits"] = {}

    def opt_hooks(self, modules: str) -> None:
        """
        Modules that connect receivers to twistedq.hooks signals, imported in the daemon and in every child (comma-separated, repeatable).
        """  # noqa: E501 (twistd shows a docstring line by line)
        self["hooks"].extend(name.strip() for name in modules.split(",") if name.strip())

    def opt_queues(self, names: str) -> None:
        """
        The queues to consume, comma-separated (the same as --queue a,b).
        """
        self["queue"] = names

    def opt_rate_limit(self, limits: str) -> None:
        """
        Rate limits of tasks in this daemon: name=rate, comma-separated and repeatable (add=10/s,fetch=100/m); they win over the rate_limit a task's message carries.
        """  # noqa: E501 (twistd shows a docstring line by line)
        try:
            added = parse_rate_limits(limits)
        except ValueError as e:
            raise usage.UsageError(f"--rate-limit: {e}") from None
        twice = sorted(set(added) & set(self["rate-limits"]))
        if twice:
            raise usage.UsageError(f"--rate-limit names {twice[0]!r} twice")
        self["rate-limits"].update(added)

    def opt_tasks(self, modules: str) -> None:
        """
        Modules to import in every child, which register the tasks (comma-separated, repeatable).
        """
        self["tasks"].extend(name.strip() for name in modules.split(",") if name.strip())

    opt_t = opt_tasks

    def opt_pidfile(self, path: str) -> None:
        """
        celeryd's pid file: twistd's own --pidfile, given before twistedq.
        """
        raise usage.UsageError(
            f"the pid file is twistd's option, given before the word twistedq: "
            f"twistd --pidfile {path} twistedq ..."
        )

    opt_p = opt_pidfile

    def opt_detach(self) -> None:
        """
        celeryd's -d: twistd runs in the background unless given -n.
        """
        raise usage.UsageError(
            "twistd runs the daemon in the background already; "
            "-n (--nodaemon) before the word twistedq keeps it in the foreground"
        )

    opt_d = opt_detach

    def opt_logfile(self, path: str) -> None:
        """
        celeryd's log file: twistd's own --logfile, given before twistedq.
        """
        raise usage.UsageError(
            f"the log file is twistd's option, given before the word twistedq: "
            f"twistd --logfile {path} twistedq ..."
        )

    opt_f = opt_logfile

    def postOptions(self) -> None:
        _check_twistd_options(getattr(self, "parent", None))
        if self["give-back-after"] <= self["park-after"]:
            raise usage.UsageError(
                f"--give-back-after ({self['give-back-after']:g} s) must be longer than "
                f"--park-after ({self['park-after']:g} s): a claimed task held long would be "
                "given back to the queue before it could be parked"
            )
        working_directory_first(sys.path)
        if self["django-settings"]:
            # Read by the daemon's own Django setup and inherited by children.
            os.environ["DJANGO_SETTINGS_MODULE"] = self["django-settings"]
        queues = _queue_names(self["queue"])
        settings = self._settings(queues[0] if queues else None)
        self._broker(settings)
        try:
            from twisted.internet import reactor

            backend_from_url(settings.result_backend, reactor)
        except BackendURLError as e:
            raise usage.UsageError(str(e)) from None
        self["settings"] = settings
        self["queues"] = queues or [settings.queue]
        if self["status"] is None:
            self["status"] = settings.status_endpoint or DEFAULT_STATUS_ENDPOINT
        if self["log-format"] not in ("seed", "twisted"):
            raise usage.UsageError("--log-format must be 'seed' or 'twisted'")
        self._pool_sizes()
        self._operator_token()

    def _settings(self, queue: str | None) -> Settings:
        """
        The settings: the options, then the environment and the Django
        project's settings; any error in them is a usage error.
        """
        try:
            return Settings.from_environment(
                broker_url=self["broker"],
                result_backend=self["result-backend"],
                queue=queue,
                exchange=self["exchange"],
                seed_states=True if self["seed-states"] else None,
                max_message_size=self["max-message-size"],
                signing_keys=self["signing-keys"],
                result_expires=self["result-expires"],
            )
        except SettingsError as e:
            raise usage.UsageError(str(e)) from None
        except ImportError as e:
            raise usage.UsageError(f"cannot read the Django settings: {e}") from None
        except Exception as e:
            if type(e).__name__ != "ImproperlyConfigured":
                raise
            raise usage.UsageError(f"Django settings: {e}") from None

    def _broker(self, settings: Settings) -> None:
        """
        The broker's addresses and the topology of the queues, from the
        settings and the queue options.
        """
        try:
            self["broker-addresses"] = broker_addresses(settings.broker_url)
            self["broker-address"] = self["broker-addresses"][0]
        except BrokerURLError as e:
            raise usage.UsageError(str(e)) from None
        try:
            self["topology"] = Topology(
                exchange=settings.exchange,
                queue=settings.queue,
                queue_type=self["queue-type"],
                # The broker puts a message back that often before it
                # dead-letters it: a message that kills daemons is bounded.
                delivery_limit=self["task-attempts"] if self["queue-type"] == "quorum" else None,
                max_priority=self["max-priority"],
            )
        except ValueError as e:
            raise usage.UsageError(f"--queue-type/--max-priority: {e}") from None

    def _pool_sizes(self) -> None:
        """
        The children (the CPU count by default), the most remote control
        may grow the pool to, and the prefetch window.
        """
        if self["concurrency"] is None:
            self["concurrency"] = os.cpu_count() or 1
        if self["max-concurrency"] is None:
            self["max-concurrency"] = 4 * self["concurrency"]
        elif self["max-concurrency"] < self["concurrency"]:
            raise usage.UsageError("--max-concurrency cannot be less than --concurrency")
        if self["prefetch"] is None:
            window = self["concurrency"] * self["batch"] * 4
            self["prefetch"] = min(window, max(PREFETCH_CAP, 2 * self["concurrency"]))

    def _operator_token(self) -> None:
        self["operator-token"] = self["operator-token"] or os.environ.get("TWISTEDQ_OPERATOR_TOKEN")
        token = self["operator-token"]
        if token and len(token) < MIN_OPERATOR_TOKEN:
            raise usage.UsageError(
                f"the operator token is {len(token)} characters: give one of at least "
                f"{MIN_OPERATOR_TOKEN} (openssl rand -hex 24), or none for a read-only dashboard"
            )


#: The names the daemon gives its own queues: a dead-letter or delay queue.
_OWN_QUEUE = re.compile(r".+\.(?:dead|delay\.\d+)")


def _queue_names(text: str | None) -> list[str]:
    """
    The queues of ``--queue a,b``, in order; none for None.

    :raises usage.UsageError: a queue is named twice, a part is empty, or
        a name is one of a daemon's own queues (``<queue>.dead``,
        ``<queue>.delay.<n>``).
    """
    if text is None:
        return []
    names = [name.strip() for name in text.split(",")]
    if not any(names):
        raise usage.UsageError(f"--queue {text!r} names no queue")
    if not all(names):
        raise usage.UsageError(f"--queue {text!r} has an empty part")
    for index, name in enumerate(names):
        if name in names[:index]:
            raise usage.UsageError(f"--queue {text!r} names {name!r} twice")
        if _OWN_QUEUE.fullmatch(name):
            raise usage.UsageError(
                f"--queue {name!r} is a dead-letter or delay queue, which the daemon "
                "declares for a task queue: name the task queue"
            )
    return names


def _log_service(options: Options) -> IService:
    """
    The service that shapes the daemon's log: the seed's lines or twistd's
    own, from ``--loglevel`` up.
    """
    if options["log-format"] == "seed":
        return SeedLogFormatService(options["loglevel"])
    return LogLevelService(options["loglevel"])


def makeService(options: Options) -> IService:
    """
    Build the daemon: result store, pool, broker connection, remote
    control, events, scheduler, consumer and status site under one
    :py:obj:`DrainingMultiService`, which stops them in reverse order.
    """
    from twisted.internet import reactor

    settings: Settings = options["settings"]
    backend = backend_from_url(settings.result_backend, reactor, ttl=settings.result_expires)
    pool = _pool(options, settings, reactor)
    connection = BrokerConnection(options["broker-addresses"], reactor)
    topologies = [replace(options["topology"], queue=name) for name in options["queues"]]
    topology = topologies[0]
    dispatcher = _dispatcher(options, settings, reactor, pool, backend, connection, topologies)
    pool.on_idle = dispatcher.pump
    consumer = Consumer(connection, topologies, options["prefetch"], dispatcher.deliver)
    identity = _identity(options, backend)
    # After the consumer's: its connect hook runs once consuming started.
    events = _event_publisher(options, settings, reactor, connection, dispatcher, pool, identity)
    scheduler = _scheduler(options, settings, reactor, backend, connection, dispatcher)
    stats = _stats(pool, dispatcher, consumer, scheduler, events)
    hooks = None
    if options["hooks"] or options["reactor-tasks"]:  # modules the daemon imports
        hooks = DaemonHooks(dispatcher.events, lambda: identity.name, options["hooks"])

    def children_ready() -> None:
        if scheduler is not None:
            scheduler.add_tasks(pool.periodic_tasks)
        if hooks is not None:
            hooks.ready()

    daemon = DrainingMultiService()
    _log_service(options).setServiceParent(daemon)
    ClockStepGuard(reactor).setServiceParent(daemon)
    if options["reactor-tasks"]:
        ReactorTasksService(options["tasks"], reactor).setServiceParent(daemon)
    StoreService(backend).setServiceParent(daemon)
    PoolService(pool, reactor, children_ready).setServiceParent(daemon)
    connection.setServiceParent(daemon)
    if not options["no-remote-control"]:
        _remote_control(
            settings, reactor, connection, dispatcher, pool, identity, stats
        ).setServiceParent(daemon)
    if events is not None:  # stops (daemon.offline) after the drain, before the connection
        events.setServiceParent(daemon)
    if scheduler is not None:
        _add_scheduler(daemon, scheduler, backend, reactor)
    ConsumerService(
        consumer, dispatcher, pool, options["shutdown-grace"], reactor
    ).setServiceParent(daemon)
    if hooks is not None:  # worker_shutting_down before the drain
        hooks.setServiceParent(daemon)
    if options["status"] != "none":
        site = _status_site(
            options, settings, reactor, backend, connection, topology, dispatcher, scheduler, stats
        )
        site.resource.unhealthy = ConsumingWatch(consumer, reactor).problem  # 503 on GET /
        strports.service(options["status"], site).setServiceParent(daemon)
    return daemon


def _identity(options: Options, backend: IResultBackend) -> DaemonIdentity:
    """
    The daemon's name (``--name``, else host and pid); the Django store
    writes it into each result.
    """
    identity = DaemonIdentity(name=options["name"] or None)
    named_by = getattr(backend, "named_by", None)
    if named_by is not None:
        named_by(lambda: identity.name)
    return identity


def _add_scheduler(
    daemon: DrainingMultiService, scheduler: Scheduler, backend: IResultBackend, reactor: Any
) -> None:
    """
    Run the scheduler under the daemon, and beside it the reader of the
    periodic tasks defined in the Django database (with that store only).
    """
    scheduler.setServiceParent(daemon)
    defined = database_schedules(backend, scheduler, reactor)
    if defined is not None:
        defined.setServiceParent(daemon)


def _stats(
    pool: ProcessPool,
    dispatcher: Dispatcher,
    consumer: Consumer,
    scheduler: Scheduler | None,
    events: EventPublisher | None,
) -> Callable[[], dict[str, Any]]:
    """
    What makes the daemon's ``/stats`` document (and ``inspect stats``).
    """

    def stats() -> dict[str, Any]:
        return {
            "pool": pool.stats(),
            "dispatcher": dispatcher.stats(),
            "consuming": consumer.consuming,
            "scheduler": scheduler.stats() if scheduler is not None else None,
            "events": events.stats() if events is not None else None,
        }

    return stats


def _status_site(
    options: Options,
    settings: Settings,
    reactor: Any,
    backend: IResultBackend,
    connection: BrokerConnection,
    topology: Topology,
    dispatcher: Dispatcher,
    scheduler: Scheduler | None,
    stats: Callable[[], dict[str, Any]],
) -> Site:
    """
    The status site: the seed's status URLs, ``/stats``, ``/metrics``
    (unless ``--no-metrics``) and the live dashboard (unless
    ``--no-dashboard``).
    """
    metrics = None
    if not options["no-metrics"]:
        metrics = DaemonMetrics(dispatcher.events, reactor, stats)
        metrics.watch_broker(connection)
    tracebacks = options["status-tracebacks"] or settings.status_tracebacks
    dashboard = None
    if not options["no-dashboard"]:
        dashboard = daemon_dashboard(
            settings,
            reactor,
            connection,
            topology,
            backend,
            scheduler=scheduler,
            operator_token=options["operator-token"],
            tracebacks=tracebacks,
        )
    root = make_site_root(
        backend,
        reactor,
        seed_states=settings.seed_states,
        stats=stats,
        available=lambda: dispatcher.store_available,
        down_since=lambda: dispatcher.health.down_since,
        tracebacks=tracebacks,
        metrics=MetricsResource(metrics) if metrics is not None else None,
        dashboard=dashboard,
    )
    return make_status_site(root)


def _remote_control(
    settings: Settings,
    reactor: Any,
    connection: BrokerConnection,
    dispatcher: Dispatcher,
    pool: ProcessPool,
    identity: DaemonIdentity,
    stats: Callable[[], dict[str, Any]],
) -> ControlService:
    """
    The remote control's listener.  A child of the daemon's services just
    after the broker connection: it stops after the consumer's drain and
    before the connection closes, so it answers during a shutdown's drain.
    """

    def shutdown() -> None:
        try:
            reactor.stop()  # as SIGTERM does: the services stop, the consumer drains
        except ReactorNotRunning:
            pass  # stopping already

    control = DaemonControl(identity, dispatcher, pool, stats, shutdown, reactor)
    return ControlService(
        connection, settings.exchange, identity, control.handlers(), reactor, settings.signing()
    )


def _event_publisher(
    options: Options,
    settings: Settings,
    reactor: Any,
    connection: BrokerConnection,
    dispatcher: Dispatcher,
    pool: ProcessPool,
    identity: DaemonIdentity,
) -> EventPublisher | None:
    if options["no-events"]:
        return None
    return EventPublisher(
        connection,
        settings.exchange,
        dispatcher.events,
        identity,
        reactor,
        settings.queue,
        load=daemon_load(pool, dispatcher),
        heartbeat_interval=options["heartbeat-interval"],
    )


def _pool(options: Options, settings: Settings, reactor: Any) -> ProcessPool:
    starter = ProcessStarter(
        reactor,
        options["tasks"] + options["hooks"],
        environment=settings.environment(),
        soft_time_limit=options["soft-time-limit"],
        loglevel=options["loglevel"],
    )
    memory = options["max-memory-per-child"]
    return ProcessPool(
        starter,
        options["concurrency"],
        reactor,
        max_tasks_per_child=options["max-tasks-per-child"],
        max_memory_per_child=memory * 1024 if memory else None,
        max_result_size=options["max-result-size"],
        max_size=options["max-concurrency"],
    )


def _reactor_runner(options: Options, reactor: Any) -> ReactorTaskRunner | None:
    """
    What runs the tasks marked to run on the reactor, with
    ``--reactor-tasks`` (their modules are imported in the daemon too).
    """
    if not options["reactor-tasks"]:
        return None
    from twistedq.task import tasks

    return ReactorTaskRunner(
        tasks,
        reactor,
        time_limit=options["time-limit"],
        max_result_size=options["max-result-size"],
    )


def _dispatcher(
    options: Options,
    settings: Settings,
    reactor: Any,
    pool: ProcessPool,
    backend: IResultBackend,
    connection: BrokerConnection,
    topologies: list[Topology],
) -> Dispatcher:
    # Retries, tasks due later than --hold-eta and tasks over their rate
    # limit go through the delay queues of their own queue.
    publishers = [
        Publisher(
            connection,
            topology,
            signing=settings.signing(),
            max_message_size=settings.max_message_size,
        )
        for topology in topologies
    ]
    republisher = publishers[0]
    settings_of_core = DispatchSettings(
        max_batch=options["batch"],
        max_body_size=settings.max_message_size,
        time_limit=options["time-limit"],
        max_attempts=options["task-attempts"],
        check_duplicates=not options["no-duplicate-check"],
        claim_lease=options["claim-lease"],
        hold_eta=options["hold-eta"],
        park_after=options["park-after"],
        give_back_after=options["give-back-after"],
        home_queue=settings.queue,
    )
    dispatcher = Dispatcher(
        pool,
        backend,
        reactor,
        settings_of_core,
        signing=settings.signing(),
        publish_later=republisher.publish_later,
        republish=republisher.publish,
        reactor_runner=_reactor_runner(options, reactor),
        rate_limits=RateLimits(
            reactor,
            options["rate-limits"],
            max_held=max(1, options["prefetch"] // 2),
            cluster=IScheduleStore(backend) if options["cluster-rate-limits"] else None,
            owner=uuid.uuid4().hex[:12],
            max_claim=settings.result_expires,
        ),
        publish_later_to={p.topology.queue: p.publish_later for p in publishers},
    )
    dispatcher.settlement.arguments_in_results = settings.task_arguments_in_results
    return dispatcher


def _scheduler(
    options: Options,
    settings: Settings,
    reactor: Any,
    backend: IResultBackend,
    connection: BrokerConnection,
    dispatcher: Dispatcher,
) -> Scheduler | None:
    """
    The scheduler of periodic tasks (None with ``--no-scheduler``),
    publishing to the daemon's first queue, with the daemon's own jobs:
    the clean-up of expired results, and the recovery of parked tasks when
    tasks run under claims.
    """
    if options["no-scheduler"]:
        return None
    lease = options["slot-lease"]
    publisher = Publisher(
        connection,
        options["topology"],
        confirm_timeout=lease / 2,
        signing=settings.signing(),
        max_message_size=settings.max_message_size,
    )
    scheduler = Scheduler(
        IScheduleStore(backend),
        publisher.publish,
        reactor,
        lease=lease,
        default_tz=options["timezone"],
    )
    cleanup = cleanup_job(backend, options["cleanup-interval"])
    if cleanup is not None:
        scheduler.add_job(cleanup)
    if dispatcher.claims is not None:
        scheduler.add_job(recovery_job(dispatcher.recover_parked))
    return scheduler
