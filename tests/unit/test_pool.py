"""
Tests for :py:obj:`twistedq.worker.pool.ProcessPool`, with in-memory
children and a :py:obj:`Clock`: no process is started.
"""

import json

from twisted.internet import defer
from twisted.internet.error import ProcessTerminated
from twisted.internet.task import Clock
from twisted.protocols import amp
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.unit.fakes import FakeStarter, end
from twistedq.message import TaskMessage
from twistedq.registry import TaskRegistry
from twistedq.worker.child import ChildLocator, TaskRunner
from twistedq.worker.commands import Hello, RunTasks, Shutdown, pack, unpack
from twistedq.worker.pool import Child, ChildLost, IChildStarter, ProcessPool, _greet

TASK_ID = "0b0c8a34-9a4b-4d8e-8b59-3f5ad0c1e7a2"


class PoolTestCase(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.starter = FakeStarter()
        self.pool = ProcessPool(self.starter, 3, self.clock, shutdown_timeout=10.0)
        self.idle_calls = []
        self.pool.on_idle = lambda: self.idle_calls.append(self.pool.idle_count)

    def start(self):
        self.successResultOf(self.pool.startService())

    def busy_child(self):
        """
        The child that has an unanswered RunTasks.
        """
        [child] = [
            c
            for c in self.starter.children
            if any(d is not None and not d.called for _, _, d in c.protocol.calls)
        ]
        return child


class StartTests(PoolTestCase):
    """
    Starting the pool.
    """

    def test_fake_starter(self):
        """
        The in-memory starter provides :py:obj:`IChildStarter`.
        """
        self.assertTrue(verifyObject(IChildStarter, self.starter))

    def test_starts_size_children(self):
        """
        ``startService`` starts ``size`` children, all idle, and calls
        ``on_idle`` for each.
        """
        self.start()
        self.assertEqual(self.starter.names(), ["Process-1", "Process-2", "Process-3"])
        self.assertEqual(self.pool.idle_count, 3)
        self.assertEqual(self.idle_calls, [1, 2, 3])
        self.assertEqual(self.pool.children, self.starter.children)

    def test_fires_when_all_ready(self):
        """
        The Deferred of ``startService`` fires only once every child is ready.
        """
        self.starter.ready = []
        started = self.pool.startService()
        [(c1, d1), (c2, d2), (c3, d3)] = self.starter.ready
        d1.callback(c1)
        d3.callback(c3)
        self.assertNoResult(started)
        self.assertEqual(self.pool.idle_count, 2)
        d2.callback(c2)
        self.assertIsNone(self.successResultOf(started))
        self.assertEqual(self.pool.idle_count, 3)

    def test_start_failure(self):
        """
        A child that cannot start fails ``startService`` (and is logged).
        """
        self.starter.ready = []
        started = self.pool.startService()
        for child, d in self.starter.ready[:2]:
            d.callback(child)
        self.starter.ready[2][1].errback(ChildLost("Process-3 ended before it was ready"))
        self.failureResultOf(started)
        self.assertEqual(len(self.flushLoggedErrors(ChildLost)), 1)
        self.assertEqual(self.pool.idle_count, 2)

    def test_size_zero(self):
        """
        A pool of no children is refused.
        """
        self.assertRaises(ValueError, ProcessPool, self.starter, 0, self.clock)


class RunBatchTests(PoolTestCase):
    """
    ``run_batch`` hands a batch to an idle child.
    """

    def setUp(self):
        super().setUp()
        self.start()
        self.idle_calls.clear()

    def test_busy_then_idle(self):
        """
        The child is busy while it runs the batch, idle again after, and
        ``on_idle`` is called then; the outcomes come back in order.
        """
        d = self.pool.run_batch([b"one", b"two"])
        self.assertEqual(self.pool.idle_count, 2)
        child = self.busy_child()
        [(command, kwargs, _)] = child.protocol.calls
        self.assertIs(command, RunTasks)
        self.assertEqual(unpack(kwargs["bodies"]), [b"one", b"two"])
        self.assertNoResult(d)
        self.assertEqual(self.idle_calls, [])
        child.protocol.answer(RunTasks, {"outcomes": pack([b"o1", b"o2"])})
        self.assertEqual(self.successResultOf(d), [b"o1", b"o2"])
        self.assertEqual(self.pool.idle_count, 3)
        self.assertEqual(self.idle_calls, [3])
        self.assertEqual((child.batches, self.pool.batches_run), (1, 1))

    def test_none_idle(self):
        """
        With every child busy ``run_batch`` raises ``RuntimeError``.
        """
        for _ in range(3):
            self.pool.run_batch([b"x"])
        self.assertEqual(self.pool.idle_count, 0)
        self.assertRaises(RuntimeError, self.pool.run_batch, [b"y"])

    def test_child_lost(self):
        """
        A child that ends while running a batch fails it with
        :py:obj:`ChildLost`, is killed, and a replacement is started and
        counted in ``restarts``.
        """
        d = self.pool.run_batch([b"x"])
        child = self.busy_child()
        end(child)
        failure = self.failureResultOf(d, ChildLost)
        self.assertIn(child.name, str(failure.value))
        self.assertIn(child.name, self.starter.kills)
        self.assertNotIn(child, self.pool.children)
        self.assertEqual(self.pool.restarts, 1)
        self.assertEqual(self.pool.idle_count, 2)
        self.clock.advance(0)
        self.assertEqual(len(self.starter.children), 4)
        self.assertEqual(self.starter.children[-1].name, "Process-4")
        self.assertEqual(self.pool.idle_count, 3)
        self.assertEqual(len(self.pool.children), 3)

    def test_idle_child_lost(self):
        """
        An idle child that ends leaves the idle set and is replaced.
        """
        child = self.starter.children[0]
        end(child)
        self.assertEqual(self.pool.idle_count, 2)
        self.assertFalse(child.alive)
        self.clock.advance(0)
        self.assertEqual(self.pool.idle_count, 3)
        self.assertEqual(self.pool.restarts, 1)

    def test_replacement_at_once(self):
        """
        A child that ended after starting fine is replaced at once, however
        often it happens.
        """
        for _ in range(8):
            end(self.pool.children[0])
            self.clock.advance(0)
        self.assertEqual(self.pool.restarts, 8)
        self.assertEqual(len(self.pool.children), 3)

    def test_restart_backoff(self):
        """
        While replacements fail to start, each next attempt waits twice as
        long (0.5 s, 1 s, 2 s ...); the first success ends the backoff.
        """
        self.starter.fail_next = 3
        end(self.pool.children[0])
        self.clock.advance(0)
        self.assertEqual(self.starter.attempts, 4)
        self.flushLoggedErrors(ChildLost)
        self.clock.advance(0.4)
        self.assertEqual(self.starter.attempts, 4)
        self.clock.advance(0.1)
        self.assertEqual(self.starter.attempts, 5)
        self.clock.advance(0.9)
        self.assertEqual(self.starter.attempts, 5)
        self.clock.advance(0.1)
        self.assertEqual(self.starter.attempts, 6)
        self.clock.advance(2)
        self.assertEqual(self.starter.attempts, 7)
        self.assertEqual(len(self.pool.children), 3)
        self.flushLoggedErrors(ChildLost)

    def test_remote_error(self):
        """
        An AMP error answer fails the batch with :py:obj:`ChildLost` and kills
        the child, which is then replaced.
        """
        d = self.pool.run_batch([b"x"])
        child = self.busy_child()
        [(_, _, pending)] = child.protocol.calls
        pending.errback(amp.RemoteAmpError(b"UNKNOWN", "boom"))
        self.failureResultOf(d, ChildLost)
        self.assertEqual(self.starter.kills, [child.name])
        self.clock.advance(0)
        self.assertEqual(self.pool.idle_count, 3)


class StopTests(PoolTestCase):
    """
    Stopping the pool.
    """

    def setUp(self):
        super().setUp()
        self.start()

    def test_shutdown_sent(self):
        """
        ``stopService`` sends Shutdown to every child and fires once all have
        ended, without killing or replacing them.
        """
        stopped = self.pool.stopService()
        for child in self.starter.children:
            self.assertEqual(child.protocol.commands(), [Shutdown])
        self.assertNoResult(stopped)
        for child in self.starter.children:
            end(child, ProcessTerminated(exitCode=0))
        self.assertIsNone(self.successResultOf(stopped))
        self.clock.advance(60)
        self.assertEqual(self.starter.kills, [])
        self.assertEqual(len(self.starter.children), 3)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_kill_after_timeout(self):
        """
        Children still alive ``shutdown_timeout`` seconds after Shutdown are
        killed; the Deferred fires once they have ended.
        """
        stopped = self.pool.stopService()
        first, second, third = self.starter.children
        end(first, ProcessTerminated(exitCode=0))
        self.clock.advance(9.9)
        self.assertEqual(self.starter.kills, [])
        self.assertNoResult(stopped)
        self.starter.kill_ends = False
        self.clock.advance(0.1)
        self.assertEqual(sorted(self.starter.kills), [second.name, third.name])
        self.assertNoResult(stopped)
        end(second, ProcessTerminated(signal=9))
        end(third, ProcessTerminated(signal=9))
        self.successResultOf(stopped)
        self.assertEqual(len(self.starter.children), 3)

    def test_started_after_stop(self):
        """
        A child that becomes ready after the pool stopped is told to shut down
        and never used.
        """
        pool = ProcessPool(self.starter, 1, self.clock)
        self.starter.ready = []
        pool.startService()
        [(child, d)] = self.starter.ready
        pool.stopService()
        d.callback(child)
        self.assertEqual(child.protocol.commands(), [Shutdown])
        self.assertEqual(pool.idle_count, 0)


def make_registry():
    registry = TaskRegistry()
    registry.register(lambda a, b: a * b, "mul")
    return registry


@implementer(IChildStarter)
class AMPStarter:
    """
    Starts children that are real AMP connections, in memory, to a
    :py:obj:`ChildLocator`.
    """

    def __init__(self):
        self.pumps = []
        self.stops = []

    def start(self, name):
        locator = ChildLocator(TaskRunner(make_registry()), lambda: self.stops.append(name))
        client, _server, pump = iosim.connectedServerAndClient(
            lambda: amp.AMP(locator=locator), amp.AMP
        )
        self.pumps.append(pump)
        child = Child(name, client, defer.Deferred(), lambda: None)
        d = _greet(child)
        pump.flush()
        return d

    def flush(self):
        for pump in self.pumps:
            pump.flush()


class AMPPoolTests(SynchronousTestCase):
    """
    The pool driving children over real AMP connections in memory.
    """

    def test_run_batch_over_amp(self):
        """
        Children are greeted (task names learned) and a batch runs over AMP,
        outcomes in order.
        """
        starter = AMPStarter()
        pool = ProcessPool(starter, 2, Clock())
        self.successResultOf(pool.startService())
        self.assertEqual([c.tasks for c in pool.children], [frozenset({"mul"})] * 2)
        bodies = [
            TaskMessage(id=TASK_ID, task="mul", args=(6, 7)).encode(),
            TaskMessage(id=TASK_ID, task="mul", args=("ab", 2)).encode(),
        ]
        d = pool.run_batch(bodies)
        self.assertEqual(pool.idle_count, 1)
        starter.flush()
        results = [json.loads(o)["result"] for o in self.successResultOf(d)]
        self.assertEqual(results, [42, "abab"])
        self.assertEqual(pool.idle_count, 2)

    def test_shutdown_over_amp(self):
        """
        Stopping the pool delivers Shutdown to every child.
        """
        starter = AMPStarter()
        pool = ProcessPool(starter, 2, Clock())
        self.successResultOf(pool.startService())
        pool.stopService()
        starter.flush()
        self.assertEqual(sorted(starter.stops), ["Process-1", "Process-2"])

    def test_hello_learns_pid(self):
        """
        Greeting a child records its pid from Hello.
        """
        starter = AMPStarter()
        child = self.successResultOf(starter.start("Process-9"))
        self.assertIsInstance(child.pid, int)
        self.assertEqual(child.tasks, frozenset({"mul"}))
        self.assertIs(type(Hello.response[0][1]), amp.Integer)
