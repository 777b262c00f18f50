"""
The result store as a service of the daemon.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger

from twistedq.backends.base import IResultBackend

__all__ = ["StoreService"]

log = Logger()


class StoreService(Service):
    """
    Connects the result store on start and closes it on stop.
    """

    def __init__(self, backend: IResultBackend) -> None:
        self.backend = backend

    def startService(self) -> None:
        Service.startService(self)
        self.backend.connect().addErrback(
            lambda f: log.failure("Result store {url} unavailable", f, url=self.backend.url)
        )

    def stopService(self) -> defer.Deferred[None]:
        Service.stopService(self)
        return self.backend.close()
