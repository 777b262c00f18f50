"""
The process pool: child processes started with ``spawnProcess``, each
driven over AMP on its file descriptors 3 and 4, each running one batch of
tasks at a time.

Starting a process sits behind :py:obj:`IChildStarter`, so the pool's logic is
tested with an in-memory starter and a :py:obj:`twisted.internet.task.Clock`.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, error
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from twistedq.log import SEED_LINE
from twistedq.outcome import DEFAULT_MAX_RESULT_SIZE
from twistedq.worker.commands import Hello, RunTasks, Shutdown, pack, unpack

__all__ = [
    "Child",
    "ChildLost",
    "IChildStarter",
    "ProcessPool",
    "ProcessStarter",
]

log = Logger()


class ChildLost(Exception):
    """
    A child process ended while it ran a batch.

    :ivar reason: why: ``"time-limit"`` when the pool killed it for running
        past its hard time limit, else a description of how the process
        ended (``"killed by signal 9"``, ``"exit code 3"``).
    :ivar time_limit: the hard limit it exceeded, for ``"time-limit"``.
    """

    def __init__(self, message: str, reason: str = "lost", time_limit: float | None = None):
        super().__init__(message)
        self.reason = reason
        self.time_limit = time_limit


class Child:
    """
    One running child: its name, its AMP connection and a Deferred that
    fires when its process has ended.
    """

    def __init__(
        self, name: str, protocol: amp.AMP, ended: defer.Deferred[Any], kill: Callable[[], None]
    ) -> None:
        self.name = name
        self.protocol = protocol
        self.ended = ended
        self.kill = kill
        self.pid: int | None = None
        self.tasks: frozenset[str] = frozenset()
        self.limits: dict[str, tuple[float | None, float | None]] = {}
        self.periodic: dict[str, dict[str, Any]] = {}
        self.batches = 0
        self.tasks_run = 0
        self.rss_kib = 0
        self.alive = True
        self.retired = False
        self.killed_for: str | None = None
        #: The bodies of the batch it runs now, or None while it is idle.
        self.running: list[bytes] | None = None


class IChildStarter(Interface):
    """
    Starts child processes.
    """

    def start(name: str) -> defer.Deferred[Child]:
        """
        Start a child called ``name``; fire with it once it answered
        :py:obj:`Hello`.
        """


class _PipeTransport:
    """
    The transport of the daemon's side of a child's AMP connection: writes
    go to the child's file descriptor 3.
    """

    disconnecting = False

    def __init__(self, process: Any) -> None:
        self.process = process

    def write(self, data: bytes) -> None:
        self.process.writeToChild(3, data)

    def writeSequence(self, data: Sequence[bytes]) -> None:
        self.process.writeToChild(3, b"".join(data))

    def loseConnection(self) -> None:
        self.disconnecting = True
        self.process.closeChildFD(3)

    def getPeer(self) -> str:
        return f"child process {self.process.pid}"

    def getHost(self) -> str:
        return "twistedq daemon"


class _ChildProcessProtocol(ProcessProtocol):
    def __init__(self, name: str, protocol: amp.AMP) -> None:
        self.name = name
        self.amp = protocol
        self.ended: defer.Deferred[Any] = defer.Deferred()
        self._partial = {1: b"", 2: b""}
        self._amp_lost = False

    def connectionMade(self) -> None:
        transport = self.transport
        assert transport is not None, "connectionMade comes with a transport"
        transport.closeStdin()
        self.amp.makeConnection(_PipeTransport(transport))

    def childDataReceived(self, fd: int, data: bytes) -> None:
        if fd == 4:
            self.amp.dataReceived(data)
            return
        lines = (self._partial.get(fd, b"") + data).split(b"\n")
        self._partial[fd] = lines.pop()
        for line in lines:
            self._log_line(fd, line)

    def _log_line(self, fd: int, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip("\r")
        if not text:
            return
        stream = "stdout" if fd == 1 else "stderr"
        if SEED_LINE.match(text):
            # A line the child's logging wrote, already in the seed format.
            log.info(
                "{child} {stream}: {line}",
                child=self.name,
                stream=stream,
                line=text,
                twistedq_child_line=text,
            )
        else:
            log.info(
                "{child} {stream}: {line}",
                child=self.name,
                stream=stream,
                line=text,
                twistedq_child_output=text,
                twistedq_child=self.name,
                twistedq_stream=stream,
            )

    def childConnectionLost(self, fd: int) -> None:
        if fd == 4:
            self._lose_amp(Failure(error.ConnectionDone("child closed its AMP pipe")))

    def _lose_amp(self, reason: Failure) -> None:
        if not self._amp_lost:
            self._amp_lost = True
            self.amp.connectionLost(reason)

    def processEnded(self, reason: Failure) -> None:
        for fd, rest in self._partial.items():
            if rest:
                self._log_line(fd, rest)
        self._lose_amp(reason)
        self.ended.callback(reason.value)


@implementer(IChildStarter)
class ProcessStarter:
    """
    Starts children as real processes: the same Python, the daemon's
    ``sys.path``, importing ``task_modules`` once.

    ``environment`` is added to the children's environment: the daemon
    passes its broker, queue and result store there, so a task that
    publishes subtasks through the default client reaches the same daemon.
    """

    def __init__(
        self,
        reactor: Any,
        task_modules: Sequence[str],
        python: str = sys.executable,
        environment: dict[str, str] | None = None,
        soft_time_limit: float | None = None,
        loglevel: str = "INFO",
    ) -> None:
        self.reactor = reactor
        self.task_modules = list(task_modules)
        self.python = python
        self.environment = dict(environment or {})
        self.soft_time_limit = soft_time_limit
        self.loglevel = loglevel

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.environment)
        return env

    def start(self, name: str) -> defer.Deferred[Child]:
        protocol = amp.AMP()
        process_protocol = _ChildProcessProtocol(name, protocol)
        args = [
            self.python,
            "-m",
            "twistedq.worker.child",
            "--name",
            name,
            "--parent",
            str(os.getpid()),
        ]
        for module in self.task_modules:
            args += ["--tasks", module]
        if self.soft_time_limit:
            args += ["--soft-time-limit", str(self.soft_time_limit)]
        if self.loglevel != "INFO":
            args += ["--loglevel", self.loglevel]
        transport = self.reactor.spawnProcess(
            process_protocol,
            self.python,
            args,
            env=self._environment(),
            childFDs={0: "w", 1: "r", 2: "r", 3: "w", 4: "r"},
        )

        def kill() -> None:
            try:
                transport.signalProcess("KILL")
            except error.ProcessExitedAlready:
                pass

        child = Child(name, protocol, process_protocol.ended, kill)
        return _greet(child)


def _greet(child: Child) -> defer.Deferred[Child]:
    """
    Ask a new child :py:obj:`Hello`; fire with it, or fail if it ended first.
    """

    def greeted(response: dict[str, Any]) -> Child:
        child.pid = response["pid"]
        limits = json.loads(response["tasks"])
        child.limits = {name: (soft, hard) for name, (soft, hard) in limits.items()}
        child.tasks = frozenset(limits)
        child.periodic = json.loads(response["periodic"])
        return child

    def failed(failure: Failure) -> Failure:
        child.kill()
        return Failure(ChildLost(f"{child.name} ended before it was ready: {failure.value}"))

    return child.protocol.callRemote(Hello).addCallbacks(greeted, failed)


class ProcessPool(Service):
    """
    A fixed number of children.  :py:obj:`run_batch` hands a batch of task bodies
    to an idle child; a child that ends is replaced at once.  A child is
    retired (asked to exit, and replaced) after ``max_tasks_per_child``
    tasks, or once its resident memory passes ``max_memory_per_child`` KiB;
    a batch given a ``time_limit`` kills its child when it runs past it.

    The memory cap is checked before a child is given its next task: the
    cap goes with each batch, a child over it stops after the task that
    passed it, and the rest of the batch runs first on the next child
    ready (its replacement, or another that becomes idle).

    A task's outcome document longer than ``max_result_size`` bytes (8 MiB
    by default, ``None`` for no limit) is replaced in the child by a
    ``ResultTooLarge`` failure: the value never crosses the pipe.

    :py:meth:`grow` never takes it past ``max_size`` children (by default
    four times ``size``).

    :ivar on_idle: called whenever a child becomes idle (the dispatcher
        uses it to hand out more work).
    :ivar restarts_by_reason: replacements started, by reason: ``crash``,
        ``time-limit``, ``max-tasks``, ``max-memory``, ``revoked`` (killed
        by :py:meth:`terminate`).
    :ivar last_child: the name of the child the latest :py:meth:`run_batch`
        handed its batch to.
    """

    def __init__(
        self,
        starter: IChildStarter,
        size: int,
        clock: Any,
        shutdown_timeout: float = 10.0,
        max_tasks_per_child: int | None = None,
        max_memory_per_child: int | None = None,
        max_result_size: int | None = DEFAULT_MAX_RESULT_SIZE,
        max_size: int | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("a pool needs at least one child")
        if max_size is not None and max_size < size:
            raise ValueError(f"a pool of {size} children cannot have a maximum of {max_size}")
        self.starter = starter
        self.size = size
        self.max_size = max_size if max_size is not None else 4 * size
        self.clock = clock
        self.shutdown_timeout = shutdown_timeout
        self.max_tasks_per_child = max_tasks_per_child
        self.max_memory_per_child = max_memory_per_child
        self.max_result_size = max_result_size
        self.restarts_by_reason: dict[str, int] = {}
        self.tasks_run = 0
        self.on_idle: Callable[[], None] = lambda: None
        self.children: list[Child] = []
        self._idle: list[Child] = []
        self._names = itertools.count(1)
        self._starting = 0
        self._start_failures = 0
        self.batches_run = 0
        self.last_child: str | None = None
        #: Rests of batches whose child stopped over the memory cap, waiting
        #: for a child: bodies, time limit, and the Deferred of their outcomes.
        self._rests: deque[tuple[list[bytes], float | None, defer.Deferred[list[bytes]]]] = deque()

    @property
    def restarts(self) -> int:
        """
        How many replacement children were started, for any reason.
        """
        return sum(self.restarts_by_reason.values())

    @property
    def idle_count(self) -> int:
        """
        How many children are ready for a batch now.
        """
        return len(self._idle)

    def startService(self) -> defer.Deferred[None]:
        """
        Start every child; the Deferred fires when all are ready.
        """
        Service.startService(self)
        return defer.gatherResults(
            [self._start_child() for _ in range(self.size)], consumeErrors=True
        ).addCallback(lambda _: None)

    def _start_child(self) -> defer.Deferred[None]:
        name = f"Process-{next(self._names)}"
        self._starting += 1

        def started(child: Child) -> None:
            self._starting -= 1
            self._start_failures = 0
            if not self.running or len(self.children) >= self.size:
                # Stopping, or the pool shrank while it started.
                child.retired = True
                child.protocol.callRemote(Shutdown)
                return
            self.children.append(child)
            child.ended.addBoth(self._child_ended, child)
            log.info("Started {name} (pid {pid})", name=child.name, pid=child.pid)
            if self._give_rest(child):
                return
            self._idle.append(child)
            self.on_idle()

        def failed(failure: Failure) -> Failure:
            self._starting -= 1
            self._start_failures += 1
            log.failure("Could not start {name}", failure, name=name)
            return failure

        return self.starter.start(name).addCallbacks(started, failed)

    @property
    def task_limits(self) -> dict[str, tuple[float | None, float | None]]:
        """
        Task name to ``(soft_time_limit, time_limit)``, as the children
        reported them.
        """
        for child in self.children:
            return child.limits
        return {}

    @property
    def periodic_tasks(self) -> dict[str, dict[str, Any]]:
        """
        Periodic task name to its schedule
        (:py:meth:`twistedq.task.PeriodicTask.schedule_spec`), as the
        children reported them.
        """
        for child in self.children:
            return child.periodic
        return {}

    def _child_ended(self, reason: Any, child: Child) -> Any:
        child.alive = False
        if child in self.children:
            self.children.remove(child)
        if child in self._idle:
            self._idle.remove(child)
        if self.running and not child.retired:
            why = child.killed_for or "crash"
            log.warn(
                "{name} ended unexpectedly ({how}); starting another",
                name=child.name,
                how=describe_end(reason),
            )
            self._count_restart(why)
            self._restart_later()
        return reason

    def _count_restart(self, reason: str) -> None:
        self.restarts_by_reason[reason] = self.restarts_by_reason.get(reason, 0) + 1

    def _retire(self, child: Child, reason: str) -> None:
        """
        Ask a child to exit after its batch and start its replacement now.
        """
        log.info("Retiring {name}: {reason}", name=child.name, reason=reason)
        self._let_go(child)
        self._count_restart(reason)
        self._restart_later()

    def _dismiss(self, child: Child) -> None:
        """
        Ask a child to exit, without a replacement: the pool shrank.
        """
        log.info("Stopping {name}: the pool shrinks to {size}", name=child.name, size=self.size)
        self._let_go(child)

    def _let_go(self, child: Child) -> None:
        """
        Take a child out of the pool and ask it to exit after its batch;
        kill it if it has not ended ``shutdown_timeout`` seconds later.
        """
        child.retired = True
        if child in self.children:
            self.children.remove(child)
        if child in self._idle:
            self._idle.remove(child)
        child.protocol.callRemote(Shutdown)
        timer = self.clock.callLater(self.shutdown_timeout, child.kill)
        child.ended.addBoth(_cancel_timer, timer)

    def grow(self, n: int) -> int:
        """
        Start ``n`` more children, or as many as :py:attr:`max_size` allows;
        return the new size.
        """
        if n < 1:
            raise ValueError(f"the pool grows by at least one child, not {n}")
        if self.size + n > self.max_size:
            log.warn(
                "The pool grows by {n} only to its maximum of {max_size} children",
                n=n,
                max_size=self.max_size,
            )
            n = max(0, self.max_size - self.size)
        self.size += n
        log.info("The pool grows by {n} to {size} children", n=n, size=self.size)
        if self.running:
            for _ in range(n):
                self._start_child().addErrback(lambda f: self._restart_later())
        return self.size

    def shrink(self, n: int) -> int:
        """
        Stop ``n`` children, never the last one; return the new size.  Idle
        children stop at once, busy ones after their batch.
        """
        if n < 1:
            raise ValueError(f"the pool shrinks by at least one child, not {n}")
        self.size = max(1, self.size - n)
        log.info("The pool shrinks to {size} children", size=self.size)
        while len(self.children) > self.size and self._idle:
            self._dismiss(self._idle[0])
        return self.size

    def terminate(self, body: bytes) -> str | None:
        """
        Kill the child running the task message ``body`` (the very bytes
        handed to :py:meth:`run_batch`): its batch fails with
        :py:obj:`ChildLost` whose reason is ``"revoked"``.  Return the
        child's name, or None when no child runs it now.
        """
        for child in self.children:
            running = child.running
            if running is not None and any(sent is body for sent in running):
                log.warn("Killing {name} to terminate a revoked task", name=child.name)
                child.killed_for = "revoked"
                child.kill()
                return child.name
        return None

    def _restart_later(self) -> None:
        """
        Start a replacement child: at once normally, with a delay doubling
        up to 30 s while children keep failing to start.
        """
        failures = self._start_failures
        delay = 0.0 if failures == 0 else min(30.0, 0.5 * 2 ** (failures - 1))

        def restart() -> None:
            if self.running and len(self.children) + self._starting < self.size:
                self._start_child().addErrback(lambda f: self._restart_later())

        self.clock.callLater(delay, restart)

    def run_batch(
        self, bodies: Sequence[bytes], time_limit: float | None = None
    ) -> defer.Deferred[list[bytes]]:
        """
        Run encoded task messages on an idle child; fire with their outcome
        documents in order.

        :param time_limit: kill the child if the batch takes longer.
        :raises RuntimeError: no child is idle (check :py:obj:`idle_count`).
        :return: a Deferred that fails with :py:obj:`ChildLost` if the child ends
            first (its ``reason`` is ``"time-limit"`` when the limit killed it).
        """
        if not self._idle:
            raise RuntimeError("no idle child")
        child = self._idle.pop()
        self.last_child = child.name
        return self._send(child, list(bodies), time_limit).addBoth(self._became_idle)

    def _send(
        self, child: Child, bodies: list[bytes], time_limit: float | None
    ) -> defer.Deferred[list[bytes]]:
        """
        Run ``bodies`` on ``child``: its outcomes, with those of any rest
        the child left (over the memory cap) run on the next child ready.
        """
        arguments: dict[str, Any] = {"bodies": pack(bodies)}
        if self.max_memory_per_child:
            arguments["max_rss"] = self.max_memory_per_child
        if self.max_result_size is not None:
            arguments["max_result_size"] = self.max_result_size
        child.running = bodies
        d = child.protocol.callRemote(RunTasks, **arguments)
        if time_limit is not None:
            timer = self.clock.callLater(time_limit, self._over_time, child, time_limit)
            d.addBoth(_cancel_timer, timer)
        d.addCallbacks(
            self._batch_ran,
            self._batch_lost,
            callbackArgs=(child, bodies, time_limit),
            errbackArgs=(child, time_limit),
        )
        return d

    def _run_rest(
        self, bodies: list[bytes], time_limit: float | None
    ) -> defer.Deferred[list[bytes]]:
        """
        Run the rest of a batch on an idle child now, or on the next one
        ready, before any new batch.
        """
        if self._idle:
            return self._send(self._idle.pop(), bodies, time_limit)
        d: defer.Deferred[list[bytes]] = defer.Deferred()
        self._rests.append((bodies, time_limit, d))
        return d

    def _give_rest(self, child: Child) -> bool:
        """
        Give a child that is ready the oldest rest waiting, if any.
        """
        if not self._rests or not self.running:
            return False
        bodies, time_limit, d = self._rests.popleft()
        self._send(child, bodies, time_limit).chainDeferred(d)
        return True

    def _fail_rests(self, why: str) -> None:
        rests, self._rests = self._rests, deque()
        for bodies, _, d in rests:
            d.errback(
                Failure(ChildLost(f"{len(bodies)} tasks of a batch could not run: {why}", why))
            )

    def _over_time(self, child: Child, time_limit: float) -> None:
        """
        Kill a child whose batch ran past its time limit.
        """
        log.warn(
            "{name} ran past its time limit of {limit} s: killing it",
            name=child.name,
            limit=time_limit,
        )
        child.killed_for = "time-limit"
        child.kill()

    def _batch_ran(
        self,
        response: dict[str, Any],
        child: Child,
        bodies: list[bytes],
        time_limit: float | None,
    ) -> list[bytes] | defer.Deferred[list[bytes]]:
        """
        Count the tasks of a batch that a child ran, and give the child
        back: to a rest waiting or the idle ones, or retired when it
        reached a limit.  A child that ran fewer tasks than it was given
        stopped over the memory cap: the others run on the next child.
        """
        outcomes = unpack(response["outcomes"])
        child.running = None
        count = len(outcomes)
        child.batches += 1
        child.tasks_run += count
        child.rss_kib = response.get("rss", 0)
        self.batches_run += 1
        self.tasks_run += count
        over_memory = bool(self.max_memory_per_child) and (
            count < len(bodies) or child.rss_kib > (self.max_memory_per_child or 0)
        )
        if child.alive and child.killed_for is None:
            if len(self.children) > self.size:
                self._dismiss(child)
            elif over_memory:
                self._retire(child, "max-memory")
            elif self.max_tasks_per_child and child.tasks_run >= self.max_tasks_per_child:
                self._retire(child, "max-tasks")
            elif not self._give_rest(child):
                self._idle.append(child)
        if count >= len(bodies):
            return outcomes
        if count == 0 or not self.max_memory_per_child:
            raise ValueError(f"{child.name} answered {count} outcomes for {len(bodies)} tasks")
        log.info(
            "{name} stopped over the memory cap after {count} of {total} tasks; the rest "
            "run on another child",
            name=child.name,
            count=count,
            total=len(bodies),
        )
        rest = self._run_rest(bodies[count:], time_limit)
        return rest.addCallback(lambda more: outcomes + more)

    def _batch_lost(
        self, failure: Failure, child: Child, time_limit: float | None
    ) -> defer.Deferred[list[bytes]]:
        """
        A batch whose child stopped answering: kill the child, and fail with
        :py:obj:`ChildLost` once it has ended.
        """
        child.running = None
        child.kill()
        waiter: defer.Deferred[Any] = defer.Deferred()

        def ended(reason: Any) -> Any:
            waiter.callback(reason)
            return reason

        child.ended.addBoth(ended)
        return waiter.addBoth(_child_lost, child, time_limit)

    def _became_idle(self, result: Any) -> Any:
        self.on_idle()
        return result

    def kill_all(self) -> None:
        """
        Kill every child at once (the end of a shutdown's grace period);
        their batches fail and their tasks go back to the queue.
        """
        for child in list(self.children):
            child.retired = True
            child.kill()
        self._fail_rests("the children were killed")

    def stats(self) -> dict[str, Any]:
        """
        The pool's figures for the status resource.
        """
        return {
            "children": len(self.children),
            "idle": len(self._idle),
            "busy": len(self.children) - len(self._idle),
            "batches": self.batches_run,
            "tasks": self.tasks_run,
            "restarts": dict(self.restarts_by_reason),
            "rss_kib": {child.name: child.rss_kib for child in self.children},
        }

    def stopService(self) -> defer.Deferred[None]:
        """
        Ask every child to exit, kill those still alive after
        ``shutdown_timeout`` seconds, fire when all have ended.
        """
        Service.stopService(self)
        self._fail_rests("the pool stopped")
        waits = []
        for child in list(self.children):
            child.protocol.callRemote(Shutdown)
            timer = self.clock.callLater(self.shutdown_timeout, child.kill)
            waits.append(child.ended.addBoth(_cancel_timer, timer))
        return defer.gatherResults(waits).addCallback(lambda _: None)


def _child_lost(reason: Any, child: Child, time_limit: float | None) -> Failure:
    """
    The :py:obj:`ChildLost` of a batch whose child ended for ``reason``.
    """
    if child.killed_for == "revoked":
        return Failure(ChildLost(f"{child.name} was killed to terminate a revoked task", "revoked"))
    if child.killed_for == "time-limit":
        return Failure(
            ChildLost(
                f"{child.name} was killed at the time limit of {time_limit} s",
                "time-limit",
                time_limit,
            )
        )
    how = describe_end(reason)
    return Failure(ChildLost(f"{child.name} died running a batch ({how})", how))


def _cancel_timer(result: Any, timer: Any) -> Any:
    if timer.active():
        timer.cancel()
    return result


def describe_end(reason: Any) -> str:
    """
    How a child process ended, in words: ``"killed by signal 9"``,
    ``"exit code 3"``.
    """
    signal_number = getattr(reason, "signal", None)
    if signal_number:
        return f"killed by signal {signal_number}"
    code = getattr(reason, "exitCode", None)
    if code is not None:
        return f"exit code {code}"
    return str(reason)
