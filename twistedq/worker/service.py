"""
The pool and the daemon's own task modules as services of the daemon.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger

from twistedq.registry import import_task_modules
from twistedq.worker.pool import ProcessPool

__all__ = ["PoolService", "ReactorTasksService"]

log = Logger()


class PoolService(Service):
    """
    Starts the pool; stops the daemon if its children cannot start.
    """

    def __init__(
        self, pool: ProcessPool, reactor: Any, on_ready: Callable[[], None] | None = None
    ) -> None:
        self.pool = pool
        self.reactor = reactor
        self.on_ready = on_ready

    def startService(self) -> None:
        Service.startService(self)

        def failed(failure: Any) -> None:
            log.critical(
                "The pool's children could not start; stopping. {why}", why=str(failure.value)
            )
            self.reactor.stop()

        def ready(_: Any) -> None:
            if self.on_ready is not None:
                self.on_ready()

        self.pool.startService().addCallbacks(ready, failed)

    def stopService(self) -> defer.Deferred[None]:
        Service.stopService(self)
        return self.pool.stopService()


class ReactorTasksService(Service):
    """
    Imports the task modules into the daemon, for its reactor tasks; stops
    the daemon if they cannot be imported.
    """

    def __init__(self, modules: list[str], reactor: Any) -> None:
        self.modules = modules
        self.reactor = reactor

    def startService(self) -> None:
        Service.startService(self)
        try:
            if os.environ.get("DJANGO_SETTINGS_MODULE"):
                import django

                django.setup()
            import_task_modules(self.modules)
        except Exception:
            log.failure("The task modules could not be imported into the daemon; stopping")
            self.reactor.callWhenRunning(self.reactor.stop)
