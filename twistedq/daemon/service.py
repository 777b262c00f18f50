"""
The daemon's services around its core: the consumer that drains on stop,
and the :py:class:`DrainingMultiService` that stops its children one at a
time.
"""

from __future__ import annotations

import signal
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.logger import Logger

from twistedq.amqp.consumer import Consumer
from twistedq.daemon.dispatcher import Dispatcher
from twistedq.worker.pool import ProcessPool

__all__ = ["ConsumerService", "DrainingMultiService"]

log = Logger()


class ConsumerService(Service):
    """
    On stop (the first SIGTERM or SIGINT): stop consuming, then wait until
    every running task is stored and acked, for at most ``grace`` seconds.
    At the end of the grace period, or on a second signal, the children
    are killed: their tasks, never acked, go back to the queue.
    """

    def __init__(
        self,
        consumer: Consumer,
        dispatcher: Dispatcher,
        pool: ProcessPool,
        grace: float,
        clock: Any,
    ) -> None:
        self.consumer = consumer
        self.dispatcher = dispatcher
        self.pool = pool
        self.grace = grace
        self.clock = clock
        self.cold = False

    def startService(self) -> None:
        Service.startService(self)
        # The store's health is known whether or not tasks arrive.
        self.dispatcher.health.watch()

    def _second_signal(self, number: int, frame: Any) -> None:
        self.clock.callFromThread(self._cold_shutdown, "A second signal")

    def _cold_shutdown(self, why: str) -> None:
        log.warn("{why}: killing the children; their tasks go back to the queue", why=why)
        self.cold = True
        self.pool.kill_all()

    def stopService(self) -> defer.Deferred[None]:
        Service.stopService(self)
        previous = {}
        for number in (signal.SIGTERM, signal.SIGINT):
            try:
                previous[number] = signal.signal(number, self._second_signal)
            except ValueError:  # not the main thread
                pass
        timer = self.clock.callLater(
            self.grace, self._cold_shutdown, f"Grace period of {self.grace} s over"
        )

        async def drain() -> None:
            try:
                await self.consumer.stop()
                await self.dispatcher.drain()
                self.consumer.ack_now()
            finally:
                if timer.active():
                    timer.cancel()
                for number, handler in previous.items():
                    signal.signal(number, handler)
            summary = self.dispatcher.drain_summary()
            if self.cold:
                log.info(
                    "Stopped: tasks that were running went back to the queue; {summary}",
                    summary=summary,
                )
            else:
                log.info("Drained: {summary}", summary=summary)

        return defer.Deferred.fromCoroutine(drain())


class DrainingMultiService(MultiService):
    """
    A :py:obj:`MultiService` that stops its children one at a time, last
    added first, each after the one before has finished stopping.  (The
    stock one stops them all at once, so the store could close while the
    consumer still drains into it.)
    """

    def stopService(self) -> defer.Deferred[None]:
        Service.stopService(self)

        async def stop_in_order() -> None:
            for service in reversed(list(self)):
                try:
                    await defer.maybeDeferred(service.stopService)
                except Exception:
                    log.failure("Error while stopping {service}", service=service)

        return defer.Deferred.fromCoroutine(stop_in_order())
