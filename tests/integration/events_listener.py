"""
Listens to a cluster's events with :py:class:`twistedq.amqp.events.EventReceiver`
in a process of its own and appends each document to a file, one JSON
line each; the first line is ``{"type": "listener.ready"}`` once its
queue is bound.

    python -m tests.integration.events_listener BROKER EXCHANGE PATH [PATTERN...]
"""

from __future__ import annotations

import json
import sys
from typing import Any

from twisted.internet import defer, reactor, task

from twistedq.amqp.broker import BrokerAddress, BrokerConnection
from twistedq.amqp.events import EventReceiver


async def listen(broker: str, exchange: str, path: str, patterns: list[str]) -> None:
    connection = BrokerConnection(BrokerAddress.from_url(broker), reactor)
    connection.startService()
    out = open(path, "a", buffering=1)

    def on_events(documents: list[dict[str, Any]]) -> None:
        for document in documents:
            out.write(json.dumps(document) + "\n")

    receiver = EventReceiver(connection, exchange, on_events, patterns or ("#",))
    await receiver.start()
    out.write(json.dumps({"type": "listener.ready", "queue": receiver.queue}) + "\n")
    await defer.Deferred()  # until killed


def main() -> None:
    broker, exchange, path, *patterns = sys.argv[1:]
    task.react(lambda _: defer.Deferred.fromCoroutine(listen(broker, exchange, path, patterns)))


if __name__ == "__main__":
    main()
