"""
Tests for the limits of :py:obj:`twistedq.worker.pool.ProcessPool` (hard time
limits, task-count and memory recycling, crashes, ``kill_all``, ``stats``,
``task_limits``) with in-memory children and a :py:obj:`Clock`, and for the
child's :py:obj:`twistedq.worker.child.TaskRunner` soft time limits and
refusal of awaitable results.  No process is started.
"""

import gc
import json
import os
import signal

from twisted.internet import defer
from twisted.internet.error import ConnectionDone, ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tests.unit.fakes import FakeAMP, FakeStarter, end
from twistedq.exceptions import SoftTimeLimitExceeded
from twistedq.message import TaskMessage
from twistedq.registry import TaskRegistry
from twistedq.task import task
from twistedq.worker.child import ChildLocator, TaskRunner
from twistedq.worker.commands import Hello, RunTasks, Shutdown, pack, unpack
from twistedq.worker.pool import (
    Child,
    ChildLost,
    IChildStarter,
    ProcessPool,
    _greet,
    describe_end,
)

TASK_ID = "0b0c8a34-9a4b-4d8e-8b59-3f5ad0c1e7a2"


def answer(child, outcomes=(b"o",), rss=None):
    """
    Answer the child's pending RunTasks with ``outcomes`` (and ``rss``).
    """
    response = {"outcomes": pack(list(outcomes))}
    if rss is not None:
        response["rss"] = rss
    child.protocol.answer(RunTasks, response)


class LimitsTestCase(SynchronousTestCase):
    """
    A started pool of in-memory children.
    """

    size = 3
    max_tasks_per_child = None
    max_memory_per_child = None

    def setUp(self):
        self.clock = Clock()
        self.starter = FakeStarter()
        self.pool = ProcessPool(
            self.starter,
            self.size,
            self.clock,
            shutdown_timeout=10.0,
            max_tasks_per_child=self.max_tasks_per_child,
            max_memory_per_child=self.max_memory_per_child,
        )
        self.successResultOf(self.pool.startService())

    def busy_child(self):
        """
        The one child with an unanswered RunTasks.
        """
        [child] = [
            c
            for c in self.starter.children
            if any(
                command is RunTasks and d is not None and not d.called
                for command, _, d in c.protocol.calls
            )
        ]
        return child


class TimeLimitTests(LimitsTestCase):
    """
    ``run_batch(bodies, time_limit)`` kills a child that runs past the limit.
    """

    def test_killed_at_limit(self):
        """
        Past the limit the child is killed and the batch fails with
        :py:obj:`ChildLost` whose reason is ``"time-limit"`` and whose
        ``time_limit`` is the limit; its replacement counts as a
        ``"time-limit"`` restart.
        """
        d = self.pool.run_batch([b"x"], time_limit=5.0)
        child = self.busy_child()
        self.clock.advance(4.9)
        self.assertEqual(self.starter.kills, [])
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.assertIn(child.name, self.starter.kills)
        lost = self.failureResultOf(d, ChildLost).value
        self.assertEqual(lost.reason, "time-limit")
        self.assertEqual(lost.time_limit, 5.0)
        self.assertIn("5.0", str(lost))
        self.assertNotIn(child, self.pool.children)
        self.clock.advance(0)
        self.assertEqual(len(self.starter.children), 4)
        self.assertEqual(self.pool.idle_count, 3)
        self.assertEqual(self.pool.restarts_by_reason, {"time-limit": 1})
        self.assertEqual(self.pool.restarts, 1)

    def test_killed_child_not_reused(self):
        """
        A child killed at its time limit whose answer still arrives before
        its process ended is never made idle again: the next batch must not
        go to a dying child (it would fail as a time-limit kill it never
        had).
        """
        self.starter.kill_ends = False
        d = self.pool.run_batch([b"x"], time_limit=5.0)
        child = self.busy_child()
        self.clock.advance(5.0)
        self.assertEqual(self.starter.kills, [child.name])
        answer(child)
        self.assertEqual(self.successResultOf(d), [b"o"])
        self.assertEqual(self.pool.idle_count, 2)
        for _ in range(2):
            self.pool.run_batch([b"y"])
        self.assertRaises(RuntimeError, self.pool.run_batch, [b"z"])
        self.assertEqual(
            [c.protocol.commands().count(RunTasks) for c in self.starter.children], [1, 1, 1]
        )

    def test_answered_in_time(self):
        """
        A batch answered before its limit cancels the timer: advancing past
        the limit kills nothing and leaves no delayed call.
        """
        d = self.pool.run_batch([b"x"], time_limit=5.0)
        child = self.busy_child()
        self.clock.advance(4.0)
        answer(child)
        self.assertEqual(self.successResultOf(d), [b"o"])
        self.clock.advance(10.0)
        self.assertEqual(self.starter.kills, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIn(child, self.pool.children)
        self.assertEqual(self.pool.idle_count, 3)
        self.assertEqual(self.pool.restarts_by_reason, {})

    def test_no_limit_no_timer(self):
        """
        A batch without a time limit schedules nothing.
        """
        self.pool.run_batch([b"x"])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(3600)
        self.assertEqual(self.starter.kills, [])


class MemoryLimitTests(LimitsTestCase):
    """
    A child whose RunTasks answer reports ``rss`` above
    ``max_memory_per_child`` (KiB) is retired.
    """

    max_memory_per_child = 1000

    def test_retired_above_cap(self):
        """
        Above the cap the child is sent Shutdown, leaves ``children`` and the
        idle set, a replacement starts at once and counts as a
        ``"max-memory"`` restart; when the retired child ends, no second
        replacement starts.
        """
        d = self.pool.run_batch([b"x"])
        child = self.busy_child()
        answer(child, rss=1001)
        self.assertEqual(self.successResultOf(d), [b"o"])
        self.assertEqual(child.protocol.commands(), [RunTasks, Shutdown])
        self.assertTrue(child.retired)
        self.assertNotIn(child, self.pool.children)
        self.assertEqual(self.pool.idle_count, 2)
        self.assertEqual(self.pool.restarts_by_reason, {"max-memory": 1})
        self.clock.advance(0)
        self.assertEqual(len(self.starter.children), 4)
        self.assertEqual(self.pool.idle_count, 3)
        self.assertEqual(len(self.pool.children), 3)
        end(child, ProcessTerminated(exitCode=0))
        self.clock.advance(0)
        self.assertEqual(len(self.starter.children), 4)
        self.assertEqual(len(self.pool.children), 3)
        self.assertEqual(self.pool.restarts_by_reason, {"max-memory": 1})
        self.assertEqual(self.pool.restarts, 1)
        self.assertEqual(self.starter.kills, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_at_cap_kept(self):
        """
        At or below the cap nothing happens: the child is idle again, no
        Shutdown, no replacement.
        """
        for rss in (1000, 10):
            d = self.pool.run_batch([b"x"])
            child = self.busy_child()
            answer(child, rss=rss)
            self.successResultOf(d)
            self.assertNotIn(Shutdown, child.protocol.commands())
            self.assertEqual(child.rss_kib, rss)
        self.clock.advance(0)
        self.assertEqual(len(self.starter.children), 3)
        self.assertEqual(self.pool.idle_count, 3)
        self.assertEqual(self.pool.restarts_by_reason, {})

    def test_retired_killed_after_timeout(self):
        """
        A retired child that does not exit within ``shutdown_timeout`` is
        killed; its end starts no second replacement.
        """
        self.pool.run_batch([b"x"])
        child = self.busy_child()
        answer(child, rss=5000)
        self.clock.advance(9.9)
        self.assertEqual(self.starter.kills, [])
        self.clock.advance(0.1)
        self.assertEqual(self.starter.kills, [child.name])
        self.assertFalse(child.alive)
        self.clock.advance(0)
        self.assertEqual(len(self.starter.children), 4)
        self.assertEqual(self.pool.restarts_by_reason, {"max-memory": 1})


class MemoryCheckedBeforeNextTaskTests(LimitsTestCase):
    """
    The memory cap is checked before a child is given its next task, also
    inside a batch: the pool sends the cap with the batch, a child over it
    stops after the task that passed it, and the rest of the batch runs
    on another child.
    """

    size = 1
    max_memory_per_child = 1000

    def test_cap_sent_with_batch(self):
        """
        Each RunTasks carries the cap, in KiB.
        """
        self.pool.run_batch([b"a", b"b"])
        [(_, kwargs, _)] = self.busy_child().protocol.calls
        self.assertEqual(kwargs["max_rss"], 1000)

    def test_rest_of_batch_on_fresh_child(self):
        """
        A child that answers fewer outcomes than tasks (it stopped over the
        cap) is retired; the tasks it did not run go to its replacement,
        and the batch fires with every outcome in order.
        """
        d = self.pool.run_batch([b"a", b"leak", b"c", b"d"])
        first = self.busy_child()
        answer(first, [b"A", b"LEAK"], rss=1500)
        self.assertNoResult(d)
        self.assertTrue(first.retired)
        self.assertIn(Shutdown, first.protocol.commands())
        self.assertEqual(self.pool.restarts_by_reason, {"max-memory": 1})
        self.clock.advance(0)  # the replacement starts
        second = self.busy_child()
        self.assertIsNot(second, first)
        [(_, kwargs, _)] = second.protocol.calls
        self.assertEqual(unpack(kwargs["bodies"]), [b"c", b"d"])
        self.assertEqual(self.pool.idle_count, 0)
        answer(second, [b"C", b"D"], rss=10)
        self.assertEqual(self.successResultOf(d), [b"A", b"LEAK", b"C", b"D"])
        self.assertEqual(self.pool.idle_count, 1)
        self.assertEqual(self.pool.tasks_run, 4)

    def test_rest_waits_before_new_batches(self):
        """
        The rest of a batch goes before any batch handed out later: while
        it waits for a child, no child counts as idle.
        """
        self.starter.ready = []
        d = self.pool.run_batch([b"a", b"b"])
        first = self.busy_child()
        answer(first, [b"A"], rss=2000)
        self.clock.advance(0)
        [(second, started)] = self.starter.ready
        started.callback(second)
        self.assertEqual(self.pool.idle_count, 0)
        answer(second, [b"B"], rss=10)
        self.assertEqual(self.successResultOf(d), [b"A", b"B"])

    def test_rest_fails_when_pool_stops(self):
        """
        A rest still waiting for a child when the children are killed (the
        end of a shutdown's grace period) fails with ChildLost, so its
        tasks go back to the queue.
        """
        self.starter.ready = []
        d = self.pool.run_batch([b"a", b"b"])
        answer(self.busy_child(), [b"A"], rss=2000)
        self.clock.advance(0)
        self.pool.kill_all()
        self.failureResultOf(d, ChildLost)

    def test_child_stops_over_cap(self):
        """
        The child's side: with ``max_rss``, it stops after the first task
        that leaves it over the cap and says so by answering fewer
        outcomes; without, it runs the whole batch.
        """
        runner = TaskRunner(TaskRegistry())
        ran = []
        runner.run = lambda body: ran.append(body) or body.upper()
        sizes = iter([500, 1500, 1500, 1500])
        locator = ChildLocator(runner, lambda: None, resident=lambda: next(sizes))
        answer = locator.run_tasks(pack([b"a", b"leak", b"c"]), max_rss=1000)
        self.assertEqual(unpack(answer["outcomes"]), [b"A", b"LEAK"])
        self.assertEqual(answer["rss"], 1500)
        self.assertEqual(ran, [b"a", b"leak"])
        locator = ChildLocator(runner, lambda: None, resident=lambda: 5000)
        answer = locator.run_tasks(pack([b"a", b"b"]))
        self.assertEqual(unpack(answer["outcomes"]), [b"A", b"B"])


class MaxTasksTests(LimitsTestCase):
    """
    ``max_tasks_per_child`` counts tasks, not batches.
    """

    size = 1
    max_tasks_per_child = 3

    def test_counts_tasks(self):
        """
        With a limit of 3, a batch of 2 keeps the child; a batch of 1 more
        retires it (Shutdown, replaced, a ``"max-tasks"`` restart).
        """
        [child] = self.starter.children
        d = self.pool.run_batch([b"a", b"b"])
        answer(child, [b"oa", b"ob"])
        self.assertEqual(self.successResultOf(d), [b"oa", b"ob"])
        self.assertEqual(child.protocol.commands(), [RunTasks])
        self.assertEqual(self.pool.idle_count, 1)
        d = self.pool.run_batch([b"c"])
        answer(child, [b"oc"])
        self.assertEqual(self.successResultOf(d), [b"oc"])
        self.assertEqual(child.protocol.commands(), [RunTasks, RunTasks, Shutdown])
        self.assertEqual((child.batches, child.tasks_run), (2, 3))
        self.assertEqual(self.pool.idle_count, 0)
        self.assertEqual(self.pool.restarts_by_reason, {"max-tasks": 1})
        self.clock.advance(0)
        self.assertEqual(self.starter.names(), ["Process-1", "Process-2"])
        self.assertEqual(self.pool.children, [self.starter.children[1]])
        self.assertEqual(self.pool.idle_count, 1)

    def test_retired_killed_after_timeout(self):
        """
        A child retired for its task count that does not exit within
        ``shutdown_timeout`` is killed.
        """
        [child] = self.starter.children
        self.pool.run_batch([b"a", b"b", b"c"])
        answer(child, [b"1", b"2", b"3"])
        self.starter.kill_ends = False
        self.clock.advance(10.0)
        self.assertEqual(self.starter.kills, [child.name])


class CrashTests(LimitsTestCase):
    """
    A child dying while it runs a batch.
    """

    def crash(self, reason):
        d = self.pool.run_batch([b"x"])
        child = self.busy_child()
        child.protocol.connection_lost(Failure(ConnectionDone("child ended")))
        # The failure waits for the process to have ended, for its reason.
        self.assertNoResult(d)
        child.ended.callback(reason)
        return child, self.failureResultOf(d, ChildLost).value

    def test_signal(self):
        """
        Killed by a signal: :py:obj:`ChildLost` says ``"killed by signal 11"``,
        counted as a ``"crash"`` restart.
        """
        child, lost = self.crash(ProcessTerminated(signal=11))
        self.assertEqual(lost.reason, "killed by signal 11")
        self.assertIsNone(lost.time_limit)
        self.assertIn(child.name, str(lost))
        self.assertIn("killed by signal 11", str(lost))
        self.assertEqual(self.pool.restarts_by_reason, {"crash": 1})
        self.clock.advance(0)
        self.assertEqual(self.pool.idle_count, 3)

    def test_exit_code(self):
        """
        An exit code: :py:obj:`ChildLost` says ``"exit code 3"``, counted as a
        ``"crash"`` restart.
        """
        _child, lost = self.crash(ProcessTerminated(exitCode=3))
        self.assertEqual(lost.reason, "exit code 3")
        self.assertEqual(self.pool.restarts_by_reason, {"crash": 1})

    def test_ended_passes_reason_on(self):
        """
        The pool's callback on ``ended`` passes the reason on, so later
        callbacks still see how the process ended.
        """
        child = self.starter.children[0]
        reason = ProcessTerminated(exitCode=7)
        end(child, reason)
        self.assertIs(self.successResultOf(child.ended), reason)
        self.assertEqual(self.pool.restarts_by_reason, {"crash": 1})


class KillAllTests(LimitsTestCase):
    """
    ``kill_all`` at the end of a shutdown's grace period.
    """

    def test_kills_every_child(self):
        """
        Every child is killed and every running batch fails with
        :py:obj:`ChildLost`.
        """
        first = self.pool.run_batch([b"x"])
        second = self.pool.run_batch([b"y"])
        names = self.starter.names()
        self.pool.kill_all()
        self.assertEqual(sorted(set(self.starter.kills)), names)
        self.failureResultOf(first, ChildLost)
        self.failureResultOf(second, ChildLost)
        self.assertEqual(self.pool.children, [])
        self.assertEqual(self.pool.idle_count, 0)

    def test_no_replacements(self):
        """
        Children killed by ``kill_all`` (a cold shutdown) are not replaced
        nor counted as crashes: no new processes start while the daemon
        shuts down.
        """
        self.pool.kill_all()
        self.clock.advance(0)
        self.assertEqual(len(self.starter.children), 3)
        self.assertEqual(self.pool.restarts_by_reason, {})


class StatsTests(LimitsTestCase):
    """
    ``stats()`` for the status resource.
    """

    def test_figures(self):
        """
        children, idle, busy, batches, tasks, restarts and rss_kib (by child
        name) follow the batches run.
        """
        self.assertEqual(
            self.pool.stats(),
            {
                "children": 3,
                "idle": 3,
                "busy": 0,
                "batches": 0,
                "tasks": 0,
                "restarts": {},
                "rss_kib": {"Process-1": 0, "Process-2": 0, "Process-3": 0},
            },
        )
        d = self.pool.run_batch([b"a", b"b"])
        first = self.busy_child()
        answer(first, [b"1", b"2"], rss=500)
        self.successResultOf(d)
        self.pool.run_batch([b"c"])
        second = self.busy_child()
        stats = self.pool.stats()
        self.assertEqual((stats["children"], stats["idle"], stats["busy"]), (3, 2, 1), stats)
        self.assertEqual((stats["batches"], stats["tasks"]), (1, 2))
        answer(second, [b"3"], rss=700)
        idle = [c for c in self.starter.children if c not in (first, second)]
        end(idle[0])
        self.clock.advance(0)
        stats = self.pool.stats()
        self.assertEqual((stats["children"], stats["idle"], stats["busy"]), (3, 3, 0))
        self.assertEqual((stats["batches"], stats["tasks"]), (2, 3))
        self.assertEqual(stats["restarts"], {"crash": 1})
        self.assertEqual(stats["rss_kib"][second.name], 700)
        self.assertEqual(stats["rss_kib"]["Process-4"], 0)
        self.assertEqual(set(stats["rss_kib"]), {c.name for c in self.pool.children})
        json.dumps(stats)


@implementer(IChildStarter)
class GreetingStarter:
    """
    Starts in-memory children through :py:obj:`_greet`: each answers Hello
    with ``limits``.
    """

    def __init__(self, limits):
        self.limits = limits
        self.children = []

    def start(self, name):
        protocol = FakeAMP()
        child = Child(name, protocol, defer.Deferred(), lambda: None)
        self.children.append(child)
        d = _greet(child)
        protocol.answer(
            Hello,
            {
                "pid": 4000 + len(self.children),
                "tasks": json.dumps(self.limits).encode(),
                "periodic": b'{"t": {"every": 2.0, "catch_up": "once", "queue": null}}',
            },
        )
        return d


class TaskLimitsTests(SynchronousTestCase):
    """
    ``task_limits`` comes from the children's Hello.
    """

    def test_from_hello(self):
        """
        Hello's JSON ``{name: [soft, hard]}`` becomes ``task_limits``, name
        to ``(soft, hard)``; the child learns its pid and task names.
        """
        starter = GreetingStarter({"t": [1.5, 3.0], "u": [None, None]})
        pool = ProcessPool(starter, 2, Clock())
        self.successResultOf(pool.startService())
        self.assertEqual(pool.task_limits, {"t": (1.5, 3.0), "u": (None, None)})
        child = pool.children[0]
        self.assertEqual(child.pid, 4001)
        self.assertEqual(child.tasks, frozenset({"t", "u"}))
        self.assertEqual(child.limits["t"], (1.5, 3.0))
        self.assertEqual(
            pool.periodic_tasks, {"t": {"every": 2.0, "catch_up": "once", "queue": None}}
        )

    def test_greet_fails(self):
        """
        A child whose Hello fails is killed and the start fails with
        :py:obj:`ChildLost`.
        """
        protocol = FakeAMP()
        kills = []
        child = Child("Process-1", protocol, defer.Deferred(), lambda: kills.append(1))
        d = _greet(child)
        protocol.connection_lost(Failure(ConnectionDone("gone")))
        self.assertIn("Process-1", str(self.failureResultOf(d, ChildLost).value))
        self.assertEqual(kills, [1])

    def test_no_children(self):
        """
        Without children there are no limits.
        """
        pool = ProcessPool(GreetingStarter({}), 1, Clock())
        self.assertEqual(pool.task_limits, {})


class DescribeEndTests(SynchronousTestCase):
    """
    ``describe_end`` puts how a process ended in words.
    """

    def test_signal(self):
        """
        A signal: ``"killed by signal 9"``.
        """
        self.assertEqual(describe_end(ProcessTerminated(signal=9)), "killed by signal 9")

    def test_exit_code(self):
        """
        An exit code: ``"exit code 3"``.
        """
        self.assertEqual(describe_end(ProcessTerminated(exitCode=3)), "exit code 3")

    def test_done(self):
        """
        A clean exit: ``"exit code 0"``.
        """
        self.assertEqual(describe_end(ProcessDone(0)), "exit code 0")


def message(name, *args):
    return TaskMessage(id=TASK_ID, task=name, args=args).encode()


class SoftTimeLimitTests(SynchronousTestCase):
    """
    The child's :py:obj:`TaskRunner` raises
    :py:obj:`SoftTimeLimitExceeded` in a task past its soft time limit
    (``SIGALRM``), then restores ``SIGALRM``.
    """

    def setUp(self):
        self.registry = TaskRegistry()
        # A harmless handler stands for whatever was there before, so a
        # runner that failed to install its own does not kill the test run.
        self.alarms = []
        self.before = lambda signum, frame: self.alarms.append(signum)
        self.original = signal.signal(signal.SIGALRM, self.before)
        self.seen = {}

        def alarm():
            self.seen["timer"] = signal.getitimer(signal.ITIMER_REAL)[0]
            os.kill(os.getpid(), signal.SIGALRM)
            return "not interrupted"

        def catching():
            try:
                os.kill(os.getpid(), signal.SIGALRM)
            except SoftTimeLimitExceeded:
                return "cleaned up"
            return "not interrupted"

        task(name="alarm", soft_time_limit=30, registry=self.registry)(alarm)
        task(name="catching", soft_time_limit=30, registry=self.registry)(catching)
        self.registry.register(alarm, "plain-alarm")

    def tearDown(self):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.original)

    def assertRestored(self):
        self.assertEqual(self.alarms, [])
        self.assertIs(signal.getsignal(signal.SIGALRM), self.before)
        self.assertEqual(signal.getitimer(signal.ITIMER_REAL), (0.0, 0.0))

    def test_raised_in_task(self):
        """
        A task interrupted by its soft limit fails with
        ``SoftTimeLimitExceeded``; the timer was armed with the limit while
        it ran; afterwards SIGALRM's handler is the one from before and no
        timer is pending.
        """
        outcome = json.loads(TaskRunner(self.registry).run(message("alarm")))
        self.assertEqual(outcome["status"], "FAILURE")
        self.assertEqual(outcome["exc"]["type"], "SoftTimeLimitExceeded")
        self.assertEqual(outcome["exc"]["module"], "twistedq.exceptions")
        self.assertTrue(0 < self.seen["timer"] <= 30, self.seen)
        self.assertRestored()

    def test_caught(self):
        """
        A task catching ``SoftTimeLimitExceeded`` returns normally.
        """
        outcome = json.loads(TaskRunner(self.registry).run(message("catching")))
        self.assertEqual((outcome["status"], outcome["result"]), ("SUCCESS", "cleaned up"))
        self.assertRestored()

    def test_runner_default(self):
        """
        The runner's ``soft_time_limit`` applies to a task without one.
        """
        runner = TaskRunner(self.registry, soft_time_limit=20)
        outcome = json.loads(runner.run(message("plain-alarm")))
        self.assertEqual(outcome["exc"]["type"], "SoftTimeLimitExceeded")
        self.assertTrue(0 < self.seen["timer"] <= 20, self.seen)
        self.assertRestored()

    def test_no_limit_no_timer(self):
        """
        Without any soft limit no timer is armed while the task runs.
        """
        self.registry.register(lambda: signal.getitimer(signal.ITIMER_REAL)[0], "timer-value")
        outcome = json.loads(TaskRunner(self.registry).run(message("timer-value")))
        self.assertEqual(outcome["result"], 0.0)
        self.assertRestored()


class AwaitableRefusedTests(SynchronousTestCase):
    """
    In a child, a task returning a coroutine or a Deferred fails with a
    ``TypeError`` that points to ``--reactor-tasks``.
    """

    def setUp(self):
        self.registry = TaskRegistry()
        self.runner = TaskRunner(self.registry)

    def refused(self, name):
        outcome = json.loads(self.runner.run(message(name)))
        self.assertEqual(outcome["status"], "FAILURE")
        self.assertEqual(outcome["exc"]["type"], "TypeError")
        self.assertIn("--reactor-tasks", outcome["exc"]["message"])
        self.assertIn("on_reactor", outcome["exc"]["message"])
        return outcome

    def test_async_def(self):
        """
        An ``async def`` task is refused and its coroutine closed: no "never
        awaited" warning, and its body never ran.
        """
        ran = []

        async def coro():
            ran.append(1)

        self.registry.register(coro, "coro")
        outcome = self.refused("coro")
        self.assertIn("coroutine", outcome["exc"]["message"])
        gc.collect()
        warnings = [w for w in self.flushWarnings() if "never awaited" in str(w["message"])]
        self.assertEqual(warnings, [])
        self.assertEqual(ran, [])

    def test_deferred(self):
        """
        A task returning a Deferred is refused.
        """
        self.registry.register(lambda: defer.Deferred(), "deferred")
        outcome = self.refused("deferred")
        self.assertIn("Deferred", outcome["exc"]["message"])
