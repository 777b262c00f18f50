"""
A client publish whose connection set-up the broker refused (it answered,
but closed a channel with a reply code, such as ``404`` for a queue whose
home node is down) says what the broker said, not that the broker could
not be reached.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from txamqp.client import ChannelClosed

from twistedq.amqp.broker import BrokerAddress, BrokerUnavailable, Publisher, Topology
from twistedq.message import TaskMessage, new_task_id

HOME_NODE_DOWN = (
    "NOT_FOUND - home node 'rabbit-5792@localhost' of durable queue 'q7.dead' in vhost '/' "
    "is down or inaccessible"
)


class _Close:
    """
    The broker's ``channel.close`` method as txamqp carries it.
    """

    def __init__(self, code: int, text: str) -> None:
        self.fields = (code, text, 50, 10)


class RefusingConnection:
    """
    A connection whose every attempt reaches a node that refuses the
    declaration of the queues.
    """

    def __init__(self) -> None:
        self.reactor = Clock()
        self.addresses = (BrokerAddress(host="n1"), BrokerAddress(host="n2"))
        self.address = self.addresses[0]
        self.where = "any of amqp://guest@n1:5672//, amqp://guest@n2:5672//"
        self.failures = 0
        self.last_failure: str | None = None

    def add_connect_hook(self, hook: Any) -> None:
        pass

    def retry_now(self) -> None:
        pass

    def when_connected(self, fail_after: int | None = None) -> defer.Deferred[Any]:
        self.failures += 1
        self.address = self.addresses[self.failures % 2]
        return defer.fail(ChannelClosed(_Close(404, HOME_NODE_DOWN)))


class RefusedSetUpTests(SynchronousTestCase):
    def test_says_what_the_broker_said(self) -> None:
        connection = RefusingConnection()
        publisher = Publisher(
            connection,  # type: ignore[arg-type]
            Topology(queue="q7", take_existing=True),
            confirm_timeout=10,
            connect_attempts=2,
        )
        message = TaskMessage(id=new_task_id(), task="add")
        publishing = defer.Deferred.fromCoroutine(publisher.publish(message))
        connection.reactor.advance(1)
        error = self.failureResultOf(publishing, BrokerUnavailable).value
        text = str(error)
        self.assertNotIn("could not reach", text)
        self.assertIn("the broker answered but refused to set up the queues", text)
        self.assertIn(f"404 {HOME_NODE_DOWN}", text)
        self.assertIn("nothing was sent", text)
