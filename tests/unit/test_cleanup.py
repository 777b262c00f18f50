"""
The daemon's cleanup of expired results, for stores without their own
expiry, driven by a Clock.
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twistedq.tap import _BackendService


class FakeStore:
    url = "fake://"

    def __init__(self, fail_first=False):
        self.calls = 0
        self.fail_first = fail_first
        self.closed = False

    def connect(self):
        return defer.succeed(None)

    def close(self):
        self.closed = True
        return defer.succeed(None)

    def delete_expired(self):
        self.calls += 1
        if self.fail_first and self.calls == 1:
            return defer.fail(ConnectionError("store down"))
        return defer.succeed(3)


class NoExpiryStore:
    url = "fake://"

    def connect(self):
        return defer.succeed(None)

    def close(self):
        return defer.succeed(None)


class CleanupTests(SynchronousTestCase):
    def test_runs_every_interval(self):
        """
        Expired results are removed every interval, not at start.
        """
        clock, store = Clock(), FakeStore()
        service = _BackendService(store, 60.0, clock)
        service.startService()
        self.assertEqual(store.calls, 0)
        clock.advance(60)
        clock.advance(60)
        self.assertEqual(store.calls, 2)
        self.successResultOf(service.stopService())
        clock.advance(600)
        self.assertEqual(store.calls, 2)
        self.assertTrue(store.closed)

    def test_failure_logged_loop_goes_on(self):
        """
        A failed cleanup is logged and the next one still runs.
        """
        clock, store = Clock(), FakeStore(fail_first=True)
        service = _BackendService(store, 10.0, clock)
        service.startService()
        clock.advance(10)
        self.assertEqual(len(self.flushLoggedErrors(ConnectionError)), 1)
        clock.advance(10)
        self.assertEqual(store.calls, 2)
        self.assertTrue(service.cleanup.running)

    def test_store_with_own_expiry(self):
        """
        A store without delete_expired (Redis, memcached) gets no loop.
        """
        clock = Clock()
        service = _BackendService(NoExpiryStore(), 10.0, clock)
        service.startService()
        self.assertFalse(service.cleanup.running)
        self.assertEqual(clock.getDelayedCalls(), [])
