"""
The guard that keeps the reactor's timers on time when the wall clock
steps back.
"""

import threading

from twisted.internet.task import Clock, LoopingCall
from twisted.trial.unittest import SynchronousTestCase

from twistedq.clockstep import ClockStepGuard


class Monotonic:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class GuardTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.rightNow = 1000.0
        self.mono = Monotonic()
        self.guard = ClockStepGuard(self.clock, wall=self.clock.seconds, monotonic=self.mono)
        self.guard.check()

    def elapse(self, seconds):
        for _ in range(seconds):
            self.mono.now += 1
            self.clock.advance(1)

    def test_step_back_moves_timers(self):
        """
        After the wall clock steps back 30 s, a timer due 10 s later still
        fires 10 s later, and a LoopingCall keeps its pace.
        """
        fired = []
        self.clock.callLater(10, fired.append, "timer")
        ticks = []
        loop = LoopingCall(lambda: ticks.append(self.clock.seconds()))
        loop.clock = self.clock
        loop.start(1.0, now=False)
        self.elapse(2)
        self.clock.rightNow -= 30  # the step
        self.assertEqual(self.guard.check(), -30.0)
        self.elapse(8)
        self.assertEqual(fired, ["timer"])
        self.assertEqual(len(ticks), 10)
        self.assertEqual(self.guard.steps, 1)

    def test_without_guard_timers_stall(self):
        """
        The failure the guard prevents: without it the timer waits for the
        wall clock to come back.
        """
        fired = []
        self.clock.callLater(10, fired.append, "timer")
        self.clock.rightNow -= 30
        self.elapse(10)
        self.assertEqual(fired, [])

    def test_no_step(self):
        """
        Clocks that agree (within the tolerance) change nothing.
        """
        call = self.clock.callLater(10, lambda: None)
        self.elapse(5)
        self.clock.rightNow += 0.5
        self.assertEqual(self.guard.check(), 0.0)
        self.assertEqual(call.getTime(), 1010.0)

    def test_step_forward_left_alone(self):
        """
        A step forward is reported and timers are not moved.
        """
        call = self.clock.callLater(100, lambda: None)
        self.clock.rightNow += 60
        self.assertEqual(self.guard.check(), 60.0)
        self.assertEqual(call.getTime(), 1100.0)

    def test_thread_checks_and_stops(self):
        """
        The service checks from its thread through callFromThread, and its
        thread ends when it stops.
        """
        checked = threading.Event()

        class Reactor:
            seconds = self.clock.seconds
            getDelayedCalls = self.clock.getDelayedCalls

            def callFromThread(self, function):
                checked.set()

        guard = ClockStepGuard(Reactor(), interval=0.01)
        guard.startService()
        thread = guard._thread
        self.assertTrue(checked.wait(5))
        guard.stopService()
        thread.join(5)
        self.assertFalse(thread.is_alive())
