"""
Tests for :py:mod:`twistedq.ratelimit` and the rate limits the daemon's
feeder applies, with a fake pool, the memory store and a clock.
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.fakes import FakePool, delivery, task_id
from twistedq.backends.base import SlotClaim
from twistedq.backends.memory import MemoryBackend
from twistedq.daemon.dispatcher import Dispatcher, DispatchSettings
from twistedq.daemon.job import Job
from twistedq.message import TaskMessage
from twistedq.ratelimit import RateLimits, TokenBucket, parse_rate, parse_rate_limits


class ParseTests(SynchronousTestCase):
    def test_units(self):
        """
        ``/s``, ``/m`` and ``/h`` are per second, minute and hour; a bare
        number is per second, as in Celery.
        """
        self.assertEqual(parse_rate("100/s"), 100.0)
        self.assertEqual(parse_rate("30/m"), 0.5)
        self.assertEqual(parse_rate("36/h"), 0.01)
        self.assertEqual(parse_rate("2.5"), 2.5)
        self.assertEqual(parse_rate(4), 4.0)

    def test_refused(self):
        """
        Anything else, and a rate of zero, is refused with the text quoted.
        """
        for text in ("", "10/d", "fast", "-1/s", "0/s", "1/s/s"):
            with self.assertRaises(ValueError) as caught:
                parse_rate(text)
            self.assertIn(repr(text), str(caught.exception))

    def test_limits(self):
        """
        ``--rate-limit`` takes ``name=rate`` pairs, comma-separated; a name
        may hold dots.
        """
        self.assertEqual(parse_rate_limits("app.add=10/s, mul=60/m"), {"app.add": 10.0, "mul": 1.0})
        with self.assertRaises(ValueError):
            parse_rate_limits("add")
        with self.assertRaises(ValueError):
            parse_rate_limits("add=quick")


class TokenBucketTests(SynchronousTestCase):
    def test_slots_apart(self):
        """
        Slots are ``1 / rate`` apart: at 10/s five reservations at once
        wait 0, 0.1, 0.2, 0.3 and 0.4 s; a reservation after a pause longer
        than that waits for nothing, and no slot is saved up meanwhile.
        """
        bucket = TokenBucket(10.0)
        waits = [round(bucket.reserve(100.0), 6) for _ in range(5)]
        self.assertEqual(waits, [0.0, 0.1, 0.2, 0.3, 0.4])
        self.assertEqual(bucket.reserve(110.0), 0.0)
        self.assertAlmostEqual(bucket.reserve(110.0), 0.1)

    def test_burst(self):
        """
        With a burst of 3, three slots fall at once, the fourth a period
        later.
        """
        bucket = TokenBucket(2.0, burst=3)
        waits = [bucket.reserve(0.0) for _ in range(4)]
        self.assertEqual(waits, [0.0, 0.0, 0.0, 0.5])

    def test_delay_takes_nothing(self):
        """
        :py:meth:`TokenBucket.delay` tells the wait without taking a slot.
        """
        bucket = TokenBucket(4.0)
        bucket.reserve(0.0)
        self.assertEqual(bucket.delay(0.0), 0.25)
        self.assertEqual(bucket.delay(0.0), 0.25)


class LimitedDispatcherTests(SynchronousTestCase):
    """
    A daemon with ``add`` limited to 10/s and ``mul`` unlimited.
    """

    def setUp(self):
        self.clock = Clock()
        self.pool = FakePool(idle=100)
        self.store = MemoryBackend(self.clock)
        self.sent = []
        self.limits = RateLimits(self.clock, {"add": 10.0}, max_held=5)
        self.dispatcher = Dispatcher(
            self.pool,
            self.store,
            self.clock,
            DispatchSettings(max_batch=1),
            publish_later=self.publish_later,
            rate_limits=self.limits,
        )

    def publish_later(self, message, delay, **options):
        d = defer.Deferred()
        self.sent.append((message, delay, d))
        return d

    def started(self):
        return [TaskMessage.decode(bodies[0]).args[0] for bodies, _ in self.pool.batches]

    def test_limited_waits_others_do_not(self):
        """
        Three ``add`` delivered at once start 0.1 s apart; a ``mul``
        delivered after them starts at once, ahead of the waiting ones.
        """
        for number in (1, 2, 3):
            self.dispatcher.deliver(delivery(number, "add"))
        self.dispatcher.deliver(delivery(4, "mul"))
        self.assertEqual(self.started(), [1, 4])
        self.assertEqual(self.dispatcher.stats()["rate_limits"]["held"], 2)
        self.clock.advance(0.1)
        self.assertEqual(self.started(), [1, 4, 2])
        self.clock.advance(0.1)
        self.assertEqual(self.started(), [1, 4, 2, 3])
        self.assertEqual(
            self.dispatcher.stats()["rate_limits"],
            {"limits": {"add": 10.0}, "held": 0, "sent_later": 0, "cluster": False, "contended": 0},
        )

    def test_held_are_reserved(self):
        """
        A task waiting for its slot is reserved (``inspect reserved``), not
        running, and its delivery is not settled.
        """
        first, second = delivery(1, "add"), delivery(2, "add")
        self.dispatcher.deliver(first)
        self.dispatcher.deliver(second)
        self.assertEqual(
            self.dispatcher.reserved(), [{"id": task_id(2), "name": "add", "state": "waiting"}]
        )
        self.assertEqual(second.settled, [])

    def test_bound_sends_to_delay_queue(self):
        """
        Past ``max_held`` waiting, a task whose slot is a second or more
        ahead is published again for about that long, then acked: limited
        tasks never hold more than ``max_held`` of the prefetch window.
        """
        deliveries = [delivery(n, "add") for n in range(1, 21)]
        for d in deliveries:
            self.dispatcher.deliver(d)
        # 1 runs; past the bound of 5, those due within a second wait
        # here too (no delay queue is shorter); the others are sent.
        held = self.dispatcher.stats()["rate_limits"]["held"]
        self.assertEqual(held + 1 + len(self.sent), 20)
        self.assertGreater(len(self.sent), 0)
        self.assertTrue(all(delay >= 1.0 for _, delay, _ in self.sent))
        message, _, d = self.sent[0]
        d.callback(None)
        self.assertEqual(deliveries[message.args[0] - 1].settled, ["ack"])
        self.assertEqual(self.dispatcher.stats()["rate_limits"]["sent_later"], len(self.sent))

    def test_back_from_delay_queue_keeps_its_slot(self):
        """
        A task sent to a delay queue keeps its slot: delivered again once
        that slot passed, it starts at once, and no new slot is taken for
        it (the next free slot is where it was).
        """
        for number in range(1, 21):
            self.dispatcher.deliver(delivery(number, "add"))
        message, delay, d = self.sent[-1]
        d.callback(None)
        slot = self.limits.reserved[message.id]
        self.assertAlmostEqual(slot, 1.9)  # the 20th slot, 0.1 s apart
        self.assertAlmostEqual(delay, 1.9)
        next_free = self.limits.bucket("add").delay(self.clock.seconds())
        self.clock.advance(2.0)
        self.dispatcher.deliver(delivery(message.args[0], "add"))
        self.assertIn(message.args[0], self.started())
        self.assertNotIn(message.id, self.limits.reserved)
        self.assertAlmostEqual(
            self.limits.bucket("add").delay(self.clock.seconds()), max(0.0, next_free - 2.0)
        )

    def test_not_sent_waits_here(self):
        """
        A task whose publish to a delay queue fails waits here for its slot
        instead; its delivery stays unsettled until it ran.
        """
        deliveries = [delivery(n, "add") for n in range(1, 21)]
        for d in deliveries:
            self.dispatcher.deliver(d)
        message, _, d = self.sent[-1]
        d.errback(ConnectionError("broker down"))
        self.clock.advance(5.0)
        self.assertIn(message.args[0], self.started())
        self.flushLoggedErrors(ConnectionError)

    def test_message_carries_limit(self):
        """
        A task the daemon sets no limit for follows the limit its message
        carries, if it carries one (``rate_limit``).
        """
        limits = RateLimits(self.clock)
        self.assertIsNone(limits.bucket("mul"))
        self.assertEqual(limits.bucket("mul", "2/s").rate, 2.0)
        self.assertIsNone(limits.bucket("sub", "nonsense"))

    def test_no_limits_no_state(self):
        """
        With no limit anywhere, tasks start at once and no bucket is kept.
        """
        dispatcher = Dispatcher(FakePool(idle=10), self.store, self.clock)
        for number in range(1, 6):
            dispatcher.deliver(delivery(number, "add"))
        self.assertEqual(len(dispatcher.feeder.pool.batches), 5)
        self.assertEqual(
            dispatcher.stats()["rate_limits"],
            {"limits": {}, "held": 0, "sent_later": 0, "cluster": False, "contended": 0},
        )


class MessageFieldTests(SynchronousTestCase):
    def test_carried(self):
        """
        A message carries ``rate_limit`` only when set, and reads it back.
        """
        message = TaskMessage(id=task_id(1), task="add", rate_limit="10/s")
        self.assertIn(b'"rate_limit":"10/s"', message.encode())
        self.assertEqual(TaskMessage.decode(message.encode()).rate_limit, "10/s")
        self.assertNotIn(b"rate_limit", TaskMessage(id=task_id(1), task="add").encode())

    def test_refused(self):
        """
        A rate that is not one (or zero) makes the message malformed.
        """
        from twistedq.message import MessageError

        for bad in ("often", "0/s", 0, True, "10/d"):
            with self.assertRaises(MessageError):
                TaskMessage(id=task_id(1), task="add", rate_limit=bad).encode()

    def test_dispatcher_follows_message(self):
        """
        Tasks whose messages carry 2/s start 0.5 s apart in a daemon that
        sets no limit for them.
        """
        clock = Clock()
        pool = FakePool(idle=10)
        dispatcher = Dispatcher(pool, MemoryBackend(clock), clock, DispatchSettings(max_batch=1))
        for number in (1, 2):
            dispatcher.deliver(delivery(number, "mul", rate_limit="2/s"))
        self.assertEqual(len(pool.batches), 1)
        clock.advance(0.5)
        self.assertEqual(len(pool.batches), 2)
        # A message of that name without a rate is not limited.
        dispatcher.deliver(delivery(3, "mul"))
        self.assertEqual(len(pool.batches), 3)


class TaskOptionTests(SynchronousTestCase):
    def setUp(self):
        from tests.unit.fakes import FakeClient

        self.client = FakeClient()

    def test_carried_from_task(self):
        """
        ``@task(rate_limit=...)`` and a class's ``rate_limit`` go into each
        message published through them; a call's own rate wins.
        """
        from twistedq.registry import TaskRegistry
        from twistedq.task import Task, TaskSet, task

        limited = task(name="limited", registry=TaskRegistry(), rate_limit="10/s")(lambda: None)

        class Mailer(Task):
            name = "mail"
            rate_limit = "60/m"

            def run(self):
                return None

        limited.apply_async(client=self.client)
        limited.apply_async(client=self.client, rate_limit="1/s")
        Mailer.apply_async(client=self.client)
        TaskSet(Mailer, [((), {})], client=self.client).run()
        rates = [message.rate_limit for message, _ in self.client.published]
        self.assertEqual(rates, ["10/s", "1/s", "60/m", "60/m"])

    def test_refused_when_defined(self):
        from twistedq.registry import TaskRegistry
        from twistedq.task import task

        with self.assertRaises(ValueError):
            task(name="bad", registry=TaskRegistry(), rate_limit="fast")(lambda: None)


class ClusterTests(SynchronousTestCase):
    """
    Two daemons sharing one store, ``add`` limited to 10/s cluster-wide.
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000.0)
        self.store = MemoryBackend(self.clock)
        self.pools = [FakePool(idle=10), FakePool(idle=10)]
        self.dispatchers = [
            Dispatcher(
                pool,
                self.store,
                self.clock,
                DispatchSettings(max_batch=1),
                rate_limits=RateLimits(
                    self.clock, {"add": 10.0}, cluster=self.store, owner=f"d{n}"
                ),
            )
            for n, pool in enumerate(self.pools)
        ]

    def started(self):
        return sum(len(pool.batches) for pool in self.pools)

    def test_one_start_per_interval(self):
        """
        Three tasks on each daemon: one start per 0.1 s over both, each
        after a won claim; the daemon that lost a claim tries again.
        """
        number = 0
        for dispatcher in self.dispatchers:
            for _ in range(3):
                number += 1
                dispatcher.deliver(delivery(number, "add"))
        self.clock.advance(0)
        self.assertEqual(self.started(), 1)
        counts = []
        for _ in range(8):
            self.clock.advance(0.1)
            counts.append(self.started())
        self.assertEqual(counts[-1], 6)
        # Never more than one more start per interval.
        steps = [b - a for a, b in zip([1, *counts], counts, strict=False)]
        self.assertTrue(all(step <= 1 for step in steps), counts)
        contended = sum(d.rate_limits.contended for d in self.dispatchers)
        self.assertGreater(contended, 0)

    def test_store_failure_limits_locally(self):
        """
        While the store fails its claims, a task starts at its local slot.
        """
        from twisted.internet import defer

        self.store.claim_slot = lambda *a: defer.fail(ConnectionError("store down"))
        self.dispatchers[0].deliver(delivery(1, "add"))
        self.clock.advance(0)
        self.assertEqual(self.started(), 1)


class OwnRateTests(SynchronousTestCase):
    """
    A message's rate limits only messages of its name carrying that rate:
    a slow one never stalls the faster ones after it.
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000.0)
        self.pool = FakePool(idle=10)
        self.sent = []
        self.dispatcher = Dispatcher(
            self.pool,
            MemoryBackend(self.clock),
            self.clock,
            DispatchSettings(max_batch=1),
            publish_later=self.publish_later,
        )

    def publish_later(self, message, delay, **options):
        self.sent.append((message.args[0], delay))
        return defer.succeed(None)

    def started(self):
        return [TaskMessage.decode(bodies[0]).args[0] for bodies, _ in self.pool.batches]

    def test_slow_does_not_stall_fast(self):
        """
        After a 1/h message started, 10/s messages of that name start at
        their own pace; a second 1/h message waits its hour in a delay
        queue, and the 10/s ones after it still do not wait for it.
        """
        self.dispatcher.deliver(delivery(1, "echo", rate_limit="1/h"))
        self.dispatcher.deliver(delivery(2, "echo", rate_limit="10/s"))
        self.dispatcher.deliver(delivery(3, "echo", rate_limit="10/s"))
        self.dispatcher.deliver(delivery(4, "echo", rate_limit="1/h"))
        self.dispatcher.deliver(delivery(5, "echo", rate_limit=10))
        self.assertEqual(self.started(), [1, 2])
        self.clock.advance(0.1)
        self.clock.advance(0.1)
        self.assertEqual(self.started(), [1, 2, 3, 5])
        self.assertEqual([number for number, _ in self.sent], [4])
        self.assertGreater(self.sent[0][1], 3500)

    def test_own_limit_wins(self):
        """
        The daemon's ``--rate-limit`` for a name is one bucket, whatever
        rate its messages carry.
        """
        limits = RateLimits(self.clock, {"echo": 10.0})
        self.assertIs(limits.bucket("echo", "1/h"), limits.bucket("echo", "5/s"))
        self.assertEqual(limits.bucket("echo", "1/h").rate, 10.0)


class ClaimBoundTests(SynchronousTestCase):
    def test_claim_expires_within_bound(self):
        """
        A cluster-wide slot's claim lasts two intervals and a second, but
        never beyond ``max_claim`` (the result expiry): a slow rate cannot
        leave a key in the store for years.
        """
        clock = Clock()
        claims = []

        class Store:
            def claim_slot(self, key, owner, ttl):
                claims.append((key, ttl))
                return defer.succeed(SlotClaim.WON)

        limits = RateLimits(clock, {"slow": 1 / 86400, "fast": 10.0}, cluster=Store(),
                            max_claim=3600)  # fmt: skip
        ran = []
        for number, name in ((1, "slow"), (2, "fast")):
            job = Job(delivery(number, name), TaskMessage(id=task_id(number), task=name))
            limits.after_slot(job, ran.append)
        self.assertEqual([ttl for _, ttl in claims], [3600, 1.2])
        self.assertEqual(len(ran), 2)
