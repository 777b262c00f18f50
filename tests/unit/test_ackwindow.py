"""
Tests for :py:obj:`twistedq.amqp.consumer.AckWindow` and the
:py:obj:`twistedq.amqp.consumer.Delivery` that settles through it.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.fakes import FakeChannel
from twistedq.amqp.consumer import AckWindow, Delivery, merged_acks


class AckWindowTests(SynchronousTestCase):
    """
    Acks are merged when in order and never held back behind a running
    delivery.
    """

    def window(self, tags):
        channel = FakeChannel(tags)
        window = AckWindow(channel)
        for tag in tags:
            window.add(tag)
        return channel, window

    def assertBrokerSaw(self, channel, acked, rejected=()):
        self.assertEqual(channel.errors, [])
        self.assertEqual(sorted(channel.acked), sorted(acked))
        self.assertEqual(len(channel.acked), len(set(channel.acked)), "a tag was acked twice")
        self.assertEqual(sorted(channel.rejected), sorted(rejected))

    def test_in_order(self):
        """
        Completing 1..5 one at a time in order acks each as it completes.
        """
        channel, window = self.window([1, 2, 3, 4, 5])
        for tag in [1, 2, 3, 4, 5]:
            window.complete(tag)
            self.assertEqual(channel.calls[-1], ("ack", tag, True))
        self.assertEqual(len(channel.calls), 5)
        self.assertBrokerSaw(channel, [1, 2, 3, 4, 5])
        self.assertEqual(len(window), 0)

    def test_run_at_head_is_one_ack(self):
        """
        When the head completes after those behind it were acked alone, one
        ``multiple`` ack settles the head and nothing is acked twice.
        """
        channel, window = self.window([1, 2, 3])
        window.complete(2)
        window.complete(3)
        self.assertEqual(channel.calls, [("ack", 2, False), ("ack", 3, False)])
        window.complete(1)
        self.assertEqual(channel.calls[-1], ("ack", 1, True))
        self.assertEqual(len(channel.calls), 3)
        self.assertBrokerSaw(channel, [1, 2, 3])
        self.assertEqual(len(window), 0)

    def test_out_of_order(self):
        """
        3 done while 1 runs is acked alone at once; then 1 and 2 done ack up to
        2 with ``multiple`` and 3 is not acked again: the broker sees exactly
        {1, 2, 3}, each once.
        """
        channel, window = self.window([1, 2, 3])
        window.complete(3)
        self.assertEqual(channel.calls, [("ack", 3, False)])
        self.assertEqual(channel.acked, [3])
        window.complete(1)
        window.complete(2)
        self.assertEqual(channel.calls[1:], [("ack", 1, True), ("ack", 2, True)])
        self.assertBrokerSaw(channel, [1, 2, 3])
        self.assertEqual(len(window), 0)

    def test_out_of_order_then_new_deliveries(self):
        """
        Deliveries added after an out-of-order ack are merged into later
        ``multiple`` acks without touching the ones already acked.
        """
        channel, window = self.window([1, 2, 3])
        window.complete(3)
        window.complete(2)
        window.add(4)
        channel.outstanding.add(4)
        window.complete(4)
        window.complete(1)
        self.assertEqual(channel.calls[-1], ("ack", 1, True))
        self.assertBrokerSaw(channel, [1, 2, 3, 4])
        self.assertEqual(len(window), 0)

    def test_reject_in_the_middle(self):
        """
        A reject is sent at once with its requeue flag and later ``multiple``
        acks do not cover it twice.
        """
        channel, window = self.window([1, 2, 3])
        window.reject(2, requeue=False)
        self.assertEqual(channel.calls, [("reject", 2, False)])
        window.complete(1)
        self.assertEqual(channel.calls[-1], ("ack", 1, True))
        window.complete(3)
        self.assertEqual(channel.calls[-1], ("ack", 3, True))
        self.assertBrokerSaw(channel, [1, 3], rejected=[(2, False)])
        self.assertEqual(len(window), 0)

    def test_reject_requeue(self):
        """
        ``requeue=True`` is passed on to the broker.
        """
        channel, window = self.window([1])
        window.reject(1, requeue=True)
        self.assertEqual(channel.calls, [("reject", 1, True)])
        self.assertEqual(len(window), 0)

    def test_closed_channel(self):
        """
        On a closed channel nothing is sent, and the window still empties.
        """
        channel, window = self.window([1, 2, 3])
        channel.closed = True
        window.complete(2)
        window.reject(3, requeue=True)
        window.complete(1)
        self.assertEqual(channel.calls, [])
        self.assertEqual(len(window), 0)

    def test_double_complete(self):
        """
        Completing a delivery twice acks it once.
        """
        channel, window = self.window([1, 2])
        window.complete(2)
        window.complete(2)
        window.complete(1)
        window.complete(1)
        self.assertEqual(channel.calls, [("ack", 2, False), ("ack", 1, True)])
        self.assertBrokerSaw(channel, [1, 2])

    def test_complete_after_reject(self):
        """
        A delivery rejected then completed is never acked.
        """
        channel, window = self.window([1])
        window.reject(1, requeue=True)
        window.complete(1)
        window.reject(1, requeue=False)
        self.assertEqual(channel.calls, [("reject", 1, True)])

    def test_unknown_tag(self):
        """
        Completing a tag never added sends nothing.
        """
        channel, window = self.window([1])
        window.complete(99)
        window.reject(98, requeue=True)
        self.assertEqual(channel.calls, [])
        self.assertEqual(len(window), 1)


class TimedAckWindowTests(AckWindowTests):
    """
    With a clock, a delivery completed behind a running one waits a
    moment for a ``multiple`` ack to cover it, then is acked alone; the
    broker still sees each delivery acked exactly once.
    """

    def window(self, tags):
        channel = FakeChannel(tags)
        self.clock = Clock()
        window = AckWindow(channel, self.clock)
        for tag in tags:
            window.add(tag)
        return channel, window

    def test_run_at_head_is_one_ack(self):
        """
        Those done behind the head wait: when the head completes within
        the delay, one ``multiple`` ack settles all three.
        """
        channel, window = self.window([1, 2, 3])
        window.complete(2)
        window.complete(3)
        self.assertEqual(channel.calls, [])
        window.complete(1)
        self.assertEqual(channel.calls, [("ack", 3, True)])
        self.clock.advance(AckWindow.SINGLE_ACK_DELAY)
        self.assertEqual(channel.calls, [("ack", 3, True)])
        self.assertBrokerSaw(channel, [1, 2, 3])
        self.assertEqual(len(window), 0)

    def test_out_of_order(self):
        """
        3 done while 1 runs is acked alone once the delay passes; then 1
        and 2 are acked with ``multiple`` and 3 is not acked again.
        """
        channel, window = self.window([1, 2, 3])
        window.complete(3)
        self.assertEqual(channel.calls, [])
        self.clock.advance(AckWindow.SINGLE_ACK_DELAY)
        self.assertEqual(channel.calls, [("ack", 3, False)])
        window.complete(1)
        window.complete(2)
        self.assertEqual(channel.calls[1:], [("ack", 1, True), ("ack", 2, True)])
        self.assertBrokerSaw(channel, [1, 2, 3])
        self.assertEqual(len(window), 0)

    def test_out_of_order_then_new_deliveries(self):
        """
        Deliveries added while others wait behind the head are merged
        into the ``multiple`` ack of the head.
        """
        channel, window = self.window([1, 2, 3])
        window.complete(3)
        window.complete(2)
        window.add(4)
        channel.outstanding.add(4)
        window.complete(4)
        window.complete(1)
        self.assertEqual(channel.calls, [("ack", 4, True)])
        self.clock.advance(1)
        self.assertBrokerSaw(channel, [1, 2, 3, 4])
        self.assertEqual(len(window), 0)

    def test_double_complete(self):
        """
        Completing a delivery twice acks it once.
        """
        channel, window = self.window([1, 2])
        window.complete(2)
        window.complete(2)
        window.complete(1)
        window.complete(1)
        self.clock.advance(1)
        self.assertEqual(channel.calls, [("ack", 2, True)])
        self.assertBrokerSaw(channel, [1, 2])

    def test_closed_before_the_delay(self):
        """
        A channel closed while a completed delivery waits gets no ack.
        """
        channel, window = self.window([1, 2])
        window.complete(2)
        channel.closed = True
        self.clock.advance(1)
        self.assertEqual(channel.calls, [])

    def test_ack_now(self):
        """
        ``ack_now`` sends what waits behind a running delivery at once,
        and the delay then sends nothing more.
        """
        channel, window = self.window([1, 2, 3])
        window.complete(2)
        window.complete(3)
        window.ack_now()
        self.assertEqual(channel.calls, [("ack", 2, False), ("ack", 3, False)])
        self.clock.advance(1)
        window.complete(1)
        self.assertEqual(channel.calls[2:], [("ack", 1, True)])
        self.assertBrokerSaw(channel, [1, 2, 3])

    def test_reject_in_the_middle(self):
        """
        A reject is sent at once; the acks around it wait for the head.
        """
        channel, window = self.window([1, 2, 3])
        window.reject(2, requeue=False)
        self.assertEqual(channel.calls, [("reject", 2, False)])
        window.complete(3)
        window.complete(1)
        self.assertEqual(channel.calls[-1], ("ack", 3, True))
        self.clock.advance(1)
        self.assertBrokerSaw(channel, [1, 3], rejected=[(2, False)])
        self.assertEqual(len(window), 0)


class MergedAcksTests(SynchronousTestCase):
    """
    :py:func:`merged_acks` holds back the acks of what completes inside
    it, and sends them together when it ends.
    """

    def test_one_ack_for_a_batch(self):
        """
        Five deliveries completed one after another inside it make one
        ``multiple`` ack, sent when it ends.
        """
        channel = FakeChannel([1, 2, 3, 4, 5])
        window = AckWindow(channel, Clock())
        for tag in range(1, 6):
            window.add(tag)
        with merged_acks():
            for tag in range(1, 6):
                window.complete(tag)
            self.assertEqual(channel.calls, [])
        self.assertEqual(channel.calls, [("ack", 5, True)])
        self.assertEqual(len(window), 0)

    def test_several_windows_and_nesting(self):
        """
        Each window's acks go out when the block they completed in ends,
        one ack a window; a reject inside is sent at once.
        """
        first, second = FakeChannel([1, 2]), FakeChannel([1, 2])
        windows = [AckWindow(first), AckWindow(second)]
        for window in windows:
            window.add(1)
            window.add(2)
        with merged_acks():
            windows[0].complete(1)
            with merged_acks():
                windows[1].reject(1, requeue=True)
                windows[1].complete(2)
            windows[0].complete(2)
            self.assertEqual(first.calls, [])
            self.assertEqual(second.calls, [("reject", 1, True), ("ack", 2, True)])
        self.assertEqual(first.calls, [("ack", 2, True)])

    def test_exception_inside_still_acks(self):
        """
        An exception inside the block does not lose the acks held.
        """
        channel = FakeChannel([1])
        window = AckWindow(channel)
        window.add(1)
        with self.assertRaises(KeyError), merged_acks():
            window.complete(1)
            raise KeyError("a settlement bug")
        self.assertEqual(channel.calls, [("ack", 1, True)])


class DeliveryTests(SynchronousTestCase):
    """
    A :py:obj:`Delivery` settles through its window.
    """

    def test_ack_and_reject(self):
        """
        ``ack()`` and ``reject()`` reach the channel through the window.
        """
        channel = FakeChannel([1, 2])
        window = AckWindow(channel)
        window.add(1)
        window.add(2)
        first = Delivery(channel, 1, b"a", {}, False, window)
        second = Delivery(channel, 2, b"b", {}, True, window)
        second.reject(requeue=False)
        first.ack()
        self.assertEqual(channel.calls, [("reject", 2, False), ("ack", 1, True)])
        self.assertEqual((second.body, second.redelivered), (b"b", True))
