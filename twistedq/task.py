"""
The task API of the celery 0.2.0 README, with ``celery`` spelled
``twistedq``::

    from twistedq.task import tasks, Task, PeriodicTask, delay_task, TaskSet, dmap

The module-level names (``tasks``, ``delay_task``, ``is_done``,
``discard_all``, ``dmap``) are thin facades over a default
:py:class:`~twistedq.registry.TaskRegistry` and the default
:py:class:`~twistedq.client.Client`; tests and programs that want their own
pass a registry or a ``client=`` instead (or call
:py:func:`twistedq.client.set_default_client`).
"""

from __future__ import annotations

import datetime
import logging
import types
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, Concatenate, Generic, NoReturn, ParamSpec, TypeVar, overload

from twistedq.amqp.broker import (
    BrokerUnavailable,
    PublishRefused,
    PublishUncertain,
    check_priority,
)
from twistedq.canvas import Signature, callback_documents, chain, chord, group, signature
from twistedq.client import Client
from twistedq.exceptions import ResultIgnored, Retry
from twistedq.log import setup_logger
from twistedq.message import TaskMessage, new_task_id
from twistedq.publishing import abandon_taskset, client_or_default, message_times
from twistedq.ratelimit import parse_rate
from twistedq.registry import AlreadyRegistered, NamedTask, NotRegistered, TaskRegistry, tasks
from twistedq.result import AsyncResult, TaskSetResult, refuse_wait_in_task
from twistedq.retries import DEFAULT_MAX_RETRIES, DEFAULT_RETRY_BACKOFF_MAX, DEFAULT_RETRY_DELAY
from twistedq.routing import route
from twistedq.schedules import CATCH_UP_POLICIES, Crontab, Interval

_P = ParamSpec("_P")
_R = TypeVar("_R")

__all__ = [
    "AlreadyRegistered",
    "FunctionTask",
    "IgnoredResult",
    "NotRegistered",
    "PeriodicTask",
    "Signature",
    "Task",
    "TaskSet",
    "chain",
    "chord",
    "delay_task",
    "discard_all",
    "dmap",
    "dmap_async",
    "group",
    "is_done",
    "publish_task",
    "retry",
    "signature",
    "task",
    "tasks",
]


def _args(args: Any) -> Any:
    """
    ``args`` as a tuple when it is a list or tuple; else as it is, for
    :py:meth:`TaskMessage.check <twistedq.message.TaskMessage.check>` to
    refuse (``tuple("abc")`` would be three arguments).
    """
    return tuple(args) if isinstance(args, (list, tuple)) else args


def _kwargs(kwargs: Any) -> Any:
    """
    A copy of ``kwargs`` when it is a dict (:py:obj:`None` is no keyword
    arguments); else as it is, to be refused.
    """
    if kwargs is None:
        return {}
    return dict(kwargs) if isinstance(kwargs, dict) else kwargs


def retry(
    exc: BaseException | None = None,
    countdown: float | None = None,
    eta: datetime.datetime | float | None = None,
    max_retries: int | None = None,
) -> NoReturn:
    """
    Inside a task, ask for it to run again later; never returns.  It
    raises :py:class:`~twistedq.exceptions.Retry`, which the task lets
    propagate::

        @task(max_retries=5)
        def fetch(url):
            try:
                return download(url)
            except ConnectionError as e:
                retry(exc=e, countdown=30)

    While the task has retries left, it is stored as ``RETRY`` and its
    message published again; otherwise it fails with ``exc`` (or
    :py:class:`~twistedq.exceptions.MaxRetriesExceededError` without one).

    :param exc: the exception that made it retry.
    :param countdown: run again after this many seconds; without it (and
        without ``eta``) the task's backoff, else its
        ``default_retry_delay``.
    :param eta: run again at this time (a datetime, naive means UTC, or a
        Unix time).
    :param max_retries: the limit for this call instead of the task's.
    :raises ValueError: both ``countdown`` and ``eta`` were given.
    """
    if isinstance(eta, datetime.datetime):
        if eta.tzinfo is None:
            eta = eta.replace(tzinfo=datetime.timezone.utc)
        eta = eta.timestamp()
    raise Retry(exc=exc, countdown=countdown, eta=eta, max_retries=max_retries)


def publish_task(
    name: str,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    countdown: float | None = None,
    eta: datetime.datetime | float | None = None,
    expires: datetime.datetime | datetime.timedelta | float | None = None,
    queue: str | None = None,
    task_id: str | None = None,
    client: Client | None = None,
    link: Any = None,
    link_error: Any = None,
    rate_limit: str | float | None = None,
    ignore_result: bool | None = None,
    priority: int | None = None,
) -> AsyncResult:
    """
    Publish a task by name with every option; return its
    :py:class:`~twistedq.result.AsyncResult` once the broker confirmed it.

    :param countdown: run no sooner than this many seconds from now.
    :param eta: run no sooner than this time (a datetime, naive means UTC,
        or a Unix time).
    :param expires: do not run after this time: the task is then recorded
        as REVOKED instead (a datetime, a Unix time, or seconds from now as
        a :py:class:`datetime.timedelta`).
    :param queue: publish to this queue instead of the one its route in
        ``TWISTEDQ_TASK_ROUTES`` names or the client's
        (:py:mod:`twistedq.routing`).
    :param task_id: use this id (a UUID) instead of a new one.
    :param link: a :py:class:`~twistedq.canvas.Signature` (or a list of
        them) published with the task's result when it succeeds.
    :param link_error: a signature (or a list) published with the task's
        id when it fails.
    :param rate_limit: the daemons start tasks of this name at most this
        often (``"10/s"``, ``"5/m"``, ``"100/h"``), unless they set a limit
        of their own for it (:py:mod:`twistedq.ratelimit`).
    :param ignore_result: store nothing of the task (no outcome, no claim:
        it runs at least once rather than exactly once); :py:obj:`None`
        means the client's setting ``TWISTEDQ_IGNORE_RESULT``.  The result
        returned is then an :py:class:`IgnoredResult`.
    :param priority: 0 to 9, the AMQP priority of the message: a queue
        declared with priorities (``twistd twistedq --max-priority 9``)
        delivers higher ones first; ignored by other queues.
    :raises ValueError: ``priority`` is not 0 to 9.
    :raises twistedq.message.MessageError: ``task_id`` is not a UUID,
        ``args`` is not a list or tuple, a keyword argument name is not a
        string, or an argument is not a JSON value; nothing was published.
    """
    times = message_times(countdown, eta, expires)
    callbacks = _callback_documents(link, link_error)
    chosen = client_or_default(client)
    ignore = chosen.settings.ignore_result if ignore_result is None else ignore_result
    message = _checked_message(name, args, kwargs, task_id, times, callbacks, rate_limit, ignore)
    _publish_message(chosen, message, route(name, queue, client=chosen), priority)
    return (IgnoredResult if ignore else AsyncResult)(message.id, chosen)


def _callback_documents(
    link: Any, link_error: Any
) -> tuple[tuple[dict[str, Any], ...], tuple[dict[str, Any], ...]]:
    """
    The signature documents of the ``link`` and ``link_error`` options of
    :py:func:`publish_task` (none without them).
    """
    if link is None and link_error is None:
        return (), ()
    return callback_documents(link), callback_documents(link_error)


def _checked_message(
    name: str,
    args: Any,
    kwargs: Any,
    task_id: str | None,
    times: tuple[str | None, str | None],
    callbacks: tuple[tuple[dict[str, Any], ...], tuple[dict[str, Any], ...]],
    rate_limit: str | float | None,
    ignore_result: bool,
) -> TaskMessage:
    """
    The message of a call of :py:func:`publish_task`, checked.

    :param task_id: its id; :py:obj:`None` for a new one.
    :param times: its ETA and expiry (:py:func:`~twistedq.publishing.message_times`).
    :param callbacks: its ``link`` and ``link_error`` documents.
    :raises twistedq.message.MessageError: as :py:func:`publish_task` says.
    """
    eta, expires = times
    links, errlinks = callbacks
    message = TaskMessage(
        id=new_task_id() if task_id is None else task_id,
        task=name,
        args=_args(args),
        kwargs=_kwargs(kwargs),
        eta=eta,
        expires=expires,
        links=links,
        errlinks=errlinks,
        rate_limit=rate_limit,
        ignore_result=ignore_result,
    )
    message.check()
    return message


def _publish_message(
    client: Client, message: TaskMessage, queue: str | None, priority: int | None
) -> None:
    """
    Publish ``message`` to ``queue`` (the client's for :py:obj:`None`),
    with ``priority`` unless it is :py:obj:`None`.
    """
    if priority is None:
        client.publish(message, queue)
    else:
        client.publish(message, queue, priority=priority)


class IgnoredResult(AsyncResult):
    """
    The result of a task published with ``ignore_result``: the daemon
    stores nothing of it, so :py:meth:`get` raises
    :py:class:`~twistedq.exceptions.ResultIgnored` at once rather than
    wait for ever.  Its status reads PENDING (unless it was revoked).
    """

    def get(self, timeout: float | None = None) -> Any:
        """
        :raises twistedq.exceptions.ResultIgnored: always.
        """
        raise ResultIgnored(
            f"task {self.task_id} was published with ignore_result: nothing of it is stored"
        )

    wait = get


class _ClassOrInstanceMethod(Generic[_P, _R]):
    """
    A method that, like a :py:func:`classmethod`, may be called on the
    class, and then receives the class; called on an instance, it receives
    the instance.  So ``MyTask.delay()`` publishes under the class's name
    and ``add.delay()`` under the name the :py:class:`FunctionTask` ``add``
    holds.
    """

    def __init__(self, function: Callable[Concatenate[Any, _P], _R]) -> None:
        self.__func__ = function
        self.__doc__ = function.__doc__

    def __get__(self, instance: object, owner: type | None = None) -> Callable[_P, _R]:
        return types.MethodType(self.__func__, owner if instance is None else instance)


class Task(NamedTask):
    """
    A task as a class: subclass it, give it a ``name`` and a ``run``
    method, and register the class::

        class MyTask(Task):
            name = "myapp.mytask"

            def run(self, x, **kwargs):
                self.get_logger(**kwargs).info("got %s", x)
                return x * 2

        tasks.register(MyTask)
        MyTask.delay(21).get()  # 42

    ``run`` receives the task's arguments; if it accepts ``**kwargs`` it
    also receives ``task_id``, ``task_name``, ``logfile`` and ``loglevel``.

    :cvar name: the registered name.
    :cvar queue: publish to this queue instead of the one its route names
        or the client's default (:py:mod:`twistedq.routing`).
    :cvar time_limit: hard time limit in seconds: past it the child is
        killed and the task fails with
        :py:class:`~twistedq.exceptions.TimeLimitExceeded`.
    :cvar soft_time_limit: soft time limit in seconds: past it
        :py:class:`~twistedq.exceptions.SoftTimeLimitExceeded` is raised
        inside the task.
    :cvar rate_limit: the most starts of this task per daemon (``"10/s"``,
        ``"5/m"``, ``"100/h"``, or a number per second: the rule of
        :py:mod:`twistedq.rates`), carried by each message published through
        this class; a daemon's ``--rate-limit`` for its name wins.
    :cvar on_reactor: ``run`` returns a Deferred or is a coroutine and runs
        on the daemon's reactor, not in a child (with ``twistd twistedq
        --reactor-tasks``); its time limit cancels it.
    :cvar max_retries: the most retries (see :py:meth:`retry`), or
        :py:obj:`None` for no limit.
    :cvar autoretry_for: exception classes that make the task retry by
        themselves when it raises them.
    :cvar retry_backoff: wait ``retry_backoff * 2 ** retries`` seconds
        before a retry that gives no countdown (:py:obj:`True` means a base
        of 1 s); :py:obj:`False` waits ``default_retry_delay``.
    :cvar retry_backoff_max: the longest backoff, in seconds.
    :cvar retry_jitter: wait a random time between 0 and the backoff.
    :cvar default_retry_delay: seconds before a retry that gives no
        countdown, without backoff.
    :cvar ignore_result: store nothing of its calls (no pending record, no
        outcome, no claim: it runs at least once rather than exactly once);
        :py:obj:`None` follows the setting ``TWISTEDQ_IGNORE_RESULT``.  A
        call's ``ignore_result=`` beats it; the subtasks of a
        :py:class:`TaskSet` store their outcomes whatever it says (the
        taskset counts them).
    :cvar priority: 0 to 9, the priority of its calls on a queue declared
        with priorities (``--max-priority``); a call's ``priority=`` beats it.
    """

    # Declared on the class, read from the class or an instance; a
    # FunctionTask sets them per instance.
    queue: str | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None
    on_reactor: bool = False
    rate_limit: str | float | None = None
    max_retries: int | None = DEFAULT_MAX_RETRIES
    autoretry_for: tuple[type[BaseException], ...] = ()
    retry_backoff: bool | float = False
    retry_backoff_max: float = DEFAULT_RETRY_BACKOFF_MAX
    retry_jitter: bool = True
    default_retry_delay: float = DEFAULT_RETRY_DELAY
    ignore_result: bool | None = None
    priority: int | None = None

    def __init_subclass__(cls, **options: Any) -> None:
        super().__init_subclass__(**options)
        rate_limit = cls.__dict__.get("rate_limit")
        if rate_limit is not None and not isinstance(rate_limit, property):
            parse_rate(rate_limit)  # a ValueError when the class is defined

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """
        The task's body.  Subclasses override it.
        """
        raise NotImplementedError(f"{type(self).__qualname__} does not define run()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.run(*args, **kwargs)

    @_ClassOrInstanceMethod
    def delay(self: Task | type[Task], *args: Any, **kwargs: Any) -> AsyncResult:
        """
        Publish this task with these arguments through the default client.
        """
        return self.apply_async(args, kwargs)

    @_ClassOrInstanceMethod
    def apply_async(
        self: Task | type[Task],
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        countdown: float | None = None,
        eta: datetime.datetime | float | None = None,
        expires: datetime.datetime | datetime.timedelta | float | None = None,
        queue: str | None = None,
        task_id: str | None = None,
        client: Client | None = None,
        link: Any = None,
        link_error: Any = None,
        rate_limit: str | float | None = None,
        ignore_result: bool | None = None,
        priority: int | None = None,
    ) -> AsyncResult:
        """
        Publish this task with options; see :py:func:`publish_task`.
        """
        if not self.name:
            name_of = self if isinstance(self, type) else type(self)
            raise ValueError(f"task class {name_of.__qualname__} has no name")
        return publish_task(
            self.name,
            args,
            kwargs,
            countdown=countdown,
            eta=eta,
            expires=expires,
            queue=queue or self.queue,
            task_id=task_id,
            client=client,
            link=link,
            link_error=link_error,
            rate_limit=self.rate_limit if rate_limit is None else rate_limit,
            ignore_result=self.ignore_result if ignore_result is None else ignore_result,
            priority=self.priority if priority is None else priority,
        )

    @_ClassOrInstanceMethod
    def signature(
        self: Task | type[Task],
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Signature:
        """
        A :py:class:`~twistedq.canvas.Signature` of this task: the call,
        to be published later or as part of a workflow.  ``immutable=True``
        makes one that takes no result from its parent.
        """
        immutable = bool(options.pop("immutable", False))
        return Signature(self, args, kwargs, options, immutable)

    @_ClassOrInstanceMethod
    def s(self: Task | type[Task], *args: Any, **kwargs: Any) -> Signature:
        """
        A signature of this task with these arguments (Celery's
        ``add.s(2, 2)``); in a chain the parent's result comes first.
        """
        return Signature(self, args, kwargs)

    @_ClassOrInstanceMethod
    def si(self: Task | type[Task], *args: Any, **kwargs: Any) -> Signature:
        """
        An immutable signature: in a chain, or as a callback, it runs with
        these arguments only.
        """
        return Signature(self, args, kwargs, immutable=True)

    def retry(
        self,
        exc: BaseException | None = None,
        countdown: float | None = None,
        eta: datetime.datetime | float | None = None,
        max_retries: int | None = None,
    ) -> NoReturn:
        """
        Inside ``run``, ask for the task to run again later; see
        :py:func:`twistedq.task.retry`.
        """
        retry(exc=exc, countdown=countdown, eta=eta, max_retries=max_retries)

    def get_logger(self, **kwargs: Any) -> logging.Logger:
        """
        The task logger, set up from the extra keyword arguments a task
        receives (``logfile``, ``loglevel``); see
        :py:func:`twistedq.log.setup_logger`.
        """
        return setup_logger(**kwargs)


class PeriodicTask(Task):
    """
    A task run every ``run_every``: a :py:class:`datetime.timedelta`,
    seconds, or a :py:func:`~twistedq.schedules.crontab`.  Periodic tasks
    take no arguments::

        class MyPeriodicTask(PeriodicTask):
            name = "foo.my-periodic-task"
            run_every = timedelta(seconds=30)

            def run(self, **kwargs):
                self.get_logger(**kwargs).info("Running periodic task!")

        tasks.register(MyPeriodicTask)

    Every daemon runs the scheduler (:py:mod:`twistedq.scheduler`); each
    slot of the schedule is published once, whatever the number of daemons.

    :cvar run_every: the period or the crontab.
    :cvar catch_up: after a time when no daemon ran, ``"once"`` runs the
        task once for the slots missed, ``"skip"`` waits for the next slot.
    """

    run_every: ClassVar[datetime.timedelta | float | Crontab | Interval | None] = None
    catch_up: ClassVar[str] = "once"
    periodic = True

    def check_registrable(self) -> None:
        """
        A periodic task needs a valid schedule.

        :raises ValueError: see :py:meth:`schedule`.
        """
        self.schedule()

    @classmethod
    def schedule(cls) -> Crontab | Interval:
        """
        The schedule ``run_every`` describes.

        :raises ValueError: ``run_every`` is missing or not positive, or
            ``catch_up`` is not a policy.
        """
        if cls.catch_up not in CATCH_UP_POLICIES:
            raise ValueError(
                f"periodic task {cls.__qualname__} has catch_up {cls.catch_up!r}, "
                f"not one of {CATCH_UP_POLICIES}"
            )
        period = cls.run_every
        if isinstance(period, (Crontab, Interval)):
            return period
        if period is None:
            raise ValueError(f"periodic task {cls.__qualname__} has no run_every")
        try:
            return Interval(period)
        except ValueError as error:
            raise ValueError(f"periodic task {cls.__qualname__}: {error}") from None

    @classmethod
    def run_every_seconds(cls) -> float:
        """
        The period in seconds of an interval schedule.

        :raises ValueError: ``run_every`` is not an interval.
        """
        schedule = cls.schedule()
        if not isinstance(schedule, Interval):
            raise ValueError(f"periodic task {cls.__qualname__} runs on a crontab")
        return schedule.period

    @classmethod
    def schedule_spec(cls) -> dict[str, Any]:
        """
        What the scheduler needs, as JSON: the schedule, the catch-up
        policy, the queue and, when true, ``ignore_result`` (the setting
        ``TWISTEDQ_IGNORE_RESULT`` does not apply to periodic tasks: only
        the class's ``ignore_result``).
        """
        spec = {**cls.schedule().spec(), "catch_up": cls.catch_up, "queue": cls.queue}
        if cls.ignore_result:
            spec["ignore_result"] = True
        return spec


class FunctionTask(Task):
    """
    A plain function made a :py:class:`Task` by the :py:func:`task`
    decorator: calling it calls the function; it also has ``delay`` and
    ``apply_async``.  Its name is by default the function's module and
    qualified name.
    """

    def __init__(
        self,
        function: Callable[..., Any],
        name: str | None = None,
        queue: str | None = None,
        time_limit: float | None = None,
        soft_time_limit: float | None = None,
        on_reactor: bool = False,
        retry_options: dict[str, Any] | None = None,
        rate_limit: str | float | None = None,
        ignore_result: bool | None = None,
        priority: int | None = None,
    ) -> None:
        if rate_limit is not None:
            parse_rate(rate_limit)  # a ValueError when the task is defined
        check_priority(priority)
        self.function = function
        self.on_reactor = on_reactor
        self.rate_limit = rate_limit
        self.ignore_result = ignore_result
        self.priority = priority
        for option, value in (retry_options or {}).items():
            if option not in RETRY_OPTIONS:
                raise TypeError(f"unknown retry option {option!r}")
            setattr(self, option, value)
        #: The name, never None (``name`` is the same).
        self.task_name = name or f"{function.__module__}.{function.__qualname__}"
        self.name = self.task_name
        self.queue = queue
        self.time_limit = time_limit
        self.soft_time_limit = soft_time_limit
        self.__doc__ = function.__doc__
        self.__wrapped__ = function

    def run(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)

    def same_task(self, other: object) -> bool:
        """
        Two wrappers of functions are the same task only if they are one.
        """
        return other is self

    def __repr__(self) -> str:
        return f"<task {self.task_name}>"


#: The retry options of ``@task(...)``, as the :py:class:`Task` attributes.
RETRY_OPTIONS = frozenset(
    (
        "max_retries",
        "autoretry_for",
        "retry_backoff",
        "retry_backoff_max",
        "retry_jitter",
        "default_retry_delay",
    )
)


@overload
def task(function: Callable[..., Any], /) -> FunctionTask: ...


@overload
def task(
    *,
    name: str | None = None,
    queue: str | None = None,
    registry: TaskRegistry | None = None,
    time_limit: float | None = None,
    soft_time_limit: float | None = None,
    on_reactor: bool = False,
    rate_limit: str | float | None = None,
    ignore_result: bool | None = None,
    priority: int | None = None,
    max_retries: int | None = DEFAULT_MAX_RETRIES,
    autoretry_for: tuple[type[BaseException], ...] = (),
    retry_backoff: bool | float = False,
    retry_backoff_max: float = DEFAULT_RETRY_BACKOFF_MAX,
    retry_jitter: bool = True,
    default_retry_delay: float = DEFAULT_RETRY_DELAY,
) -> Callable[[Callable[..., Any]], FunctionTask]: ...


def task(function: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """
    Register a function as a task: the modern spelling of
    ``tasks.register(function, name)``::

        @task
        def add(x, y):
            return x + y

        @task(name="math.mul")
        def mul(x, y):
            return x * y

        add.delay(2, 2).get()  # 4

    The default name is the function's module and qualified name.  The
    retry options (``max_retries``, ``autoretry_for``, ``retry_backoff``,
    ``retry_backoff_max``, ``retry_jitter``, ``default_retry_delay``) are
    those of :py:class:`Task`::

        @task(autoretry_for=(ConnectionError,), retry_backoff=True)
        def fetch(url):
            return download(url)

    ``rate_limit="10/s"`` (``/m``, ``/h``, or a number per second) limits
    how often each daemon starts it (see :py:class:`Task`); ``ignore_result=True`` stores
    nothing of its calls (see :py:class:`Task`); ``priority=9`` (0 to 9)
    is the priority of its calls on a queue declared with priorities.
    """
    register = _function_task_decorator(**options)
    return register(function) if function is not None else register


def _function_task_decorator(
    *,
    name: str | None = None,
    queue: str | None = None,
    registry: TaskRegistry | None = None,
    time_limit: float | None = None,
    soft_time_limit: float | None = None,
    on_reactor: bool = False,
    rate_limit: str | float | None = None,
    ignore_result: bool | None = None,
    priority: int | None = None,
    max_retries: int | None = DEFAULT_MAX_RETRIES,
    autoretry_for: tuple[type[BaseException], ...] = (),
    retry_backoff: bool | float = False,
    retry_backoff_max: float = DEFAULT_RETRY_BACKOFF_MAX,
    retry_jitter: bool = True,
    default_retry_delay: float = DEFAULT_RETRY_DELAY,
) -> Callable[[Callable[..., Any]], FunctionTask]:
    """
    The decorator ``@task(...)`` is with these options (those of
    :py:func:`task`): it makes a function a :py:class:`FunctionTask` and
    registers it.

    :raises TypeError: an option :py:func:`task` does not have.
    """
    retry_options = {
        "max_retries": max_retries,
        "autoretry_for": tuple(autoretry_for),
        "retry_backoff": retry_backoff,
        "retry_backoff_max": retry_backoff_max,
        "retry_jitter": retry_jitter,
        "default_retry_delay": default_retry_delay,
    }

    def register(function: Callable[..., Any]) -> FunctionTask:
        wrapped = FunctionTask(
            function,
            name,
            queue,
            time_limit,
            soft_time_limit,
            on_reactor,
            retry_options,
            rate_limit=rate_limit,
            ignore_result=ignore_result,
            priority=priority,
        )
        (registry if registry is not None else tasks).register(wrapped, wrapped.task_name)
        return wrapped

    return register


def delay_task(task_name: str, *args: Any, **kwargs: Any) -> AsyncResult:
    """
    Publish a task by name through the default client and return its
    :py:obj:`twistedq.result.AsyncResult` (an :py:class:`IgnoredResult`
    under the setting ``TWISTEDQ_IGNORE_RESULT``).
    """
    client = client_or_default(None)
    queue = route(task_name, client=client)
    # TWISTEDQ_TASK_ROUTES names its queue, or TWISTEDQ_IGNORE_RESULT applies.
    if queue is not None or client.settings.ignore_result:
        return publish_task(task_name, args, kwargs, queue=queue, client=client)
    return client.delay_task(task_name, *args, **kwargs)


def is_done(task_id: str) -> bool:
    """
    Whether the task with this id finished successfully.
    """
    return AsyncResult(task_id, client_or_default(None)).successful()


def discard_all(queue: str | None = None) -> int:
    """
    Delete every task waiting in the queue (the default client's, unless
    given); return how many were deleted.
    """
    return client_or_default(None).purge(queue)


def _task_name(task_or_name: str | type[Task] | Task) -> str:
    if isinstance(task_or_name, str):
        return task_or_name
    if isinstance(task_or_name, Task) or (
        isinstance(task_or_name, type) and issubclass(task_or_name, Task)
    ):
        name = task_or_name.name
        if name:
            return name
    raise TypeError(f"{task_or_name!r} is neither a task name nor a named Task")


def _task_queue(task_or_name: str | type[Task] | Task) -> str | None:
    if isinstance(task_or_name, Task) or (
        isinstance(task_or_name, type) and issubclass(task_or_name, Task)
    ):
        return task_or_name.queue
    return None


class TaskSet:
    """
    One task run with many argument sets, as one unit whose progress the
    result store counts::

        taskset = TaskSet("add", [((2, 2), {}), ((4, 4), {})])
        result = taskset.run()
        result.completed_count()  # 0, 1, 2 ... one store read each
        result.join()             # [4, 8]

    :param task: the task's name, or a task class or instance.
    :param arguments: one ``(args, kwargs)`` pair per subtask.
    """

    def __init__(
        self,
        task: str | type[Task] | Task,
        arguments: Iterable[tuple[Sequence[Any], dict[str, Any]]],
        client: Client | None = None,
    ) -> None:
        self.task_name = _task_name(task)
        self.queue = _task_queue(task)
        self.rate_limit: str | float | None = getattr(task, "rate_limit", None)
        self.arguments = [(_args(args), _kwargs(kwargs)) for args, kwargs in arguments]
        self.client = client
        self.total = len(self.arguments)

    def run(self, queue: str | None = None) -> TaskSetResult:
        """
        Record the taskset, publish every subtask (confirms awaited
        together) and return the :py:class:`~twistedq.result.TaskSetResult`.

        :raises twistedq.message.MessageError: a subtask's arguments are
            refused; nothing was recorded or published.
        :raises twistedq.amqp.broker.BrokerUnavailable: a subtask was not
            published (the error's message says how many were); every subtask the broker
            did not confirm is then recorded as ``REVOKED`` and counted in
            the taskset, which so completes.
        :raises twistedq.amqp.broker.PublishUncertain: as above, for a
            subtask that may or may not have been queued (if it was, the
            daemon acks it without running it).
        :raises twistedq.amqp.broker.PublishRefused: as above, for a
            subtask the broker refused.
        """
        client = client_or_default(self.client)
        queue = route(self.task_name, queue, self.queue, client=client)
        taskset_id = new_task_id()
        messages = [
            TaskMessage(
                id=new_task_id(),
                task=self.task_name,
                args=args,
                kwargs=kwargs,
                taskset=taskset_id,
                rate_limit=self.rate_limit,
            )
            for args, kwargs in self.arguments
        ]
        for message in messages:
            message.check()
        client.create_taskset(taskset_id, len(messages))
        confirmed: set[str] = set()
        for start in range(0, len(messages), 1000):
            chunk = messages[start : start + 1000]
            try:
                client.publish_many(chunk, queue)
            except (BrokerUnavailable, PublishUncertain, PublishRefused) as error:
                confirmed.update(error.confirmed_ids)
                abandon_taskset(client, taskset_id, messages, confirmed, error)
                raise
            confirmed.update(m.id for m in chunk)
        subtasks = [AsyncResult(m.id, client) for m in messages]
        return TaskSetResult(taskset_id, subtasks, client)


def _as_arguments(item: Any) -> tuple[Sequence[Any], dict[str, Any]]:
    if isinstance(item, (list, tuple)):
        return tuple(item), {}
    return (item,), {}


def dmap_async(
    task: str | type[Task] | Task,
    arguments: Iterable[Any],
    client: Client | None = None,
) -> TaskSetResult:
    """
    Run a task once per item of ``arguments`` (a tuple or list is the
    positional arguments, anything else the one argument), as a taskset;
    return its :py:class:`~twistedq.result.TaskSetResult` at once.

    Only registered tasks can be mapped, never a pickled function.
    """
    return TaskSet(task, [_as_arguments(item) for item in arguments], client).run()


def dmap(
    task: str | type[Task] | Task,
    arguments: Iterable[Any],
    timeout: float | None = None,
    client: Client | None = None,
) -> list[Any]:
    """
    A distributed ``map``: the results of :py:func:`dmap_async` in order;
    the exception of the first failed item (in order) is raised.

    Inside a task it raises
    :py:class:`~twistedq.result.WaitInTaskError` before publishing
    anything: waiting there could take the child the subtasks need.  Use
    :py:func:`dmap_async` inside tasks.
    """
    refuse_wait_in_task("dmap()")
    return dmap_async(task, arguments, client).join(timeout)
