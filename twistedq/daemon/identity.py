"""
Who a daemon is, to the events it publishes and the control requests it
answers: a name (``host:pid`` unless ``--name`` gives one), its host and
its process id, and when it started.
"""

from __future__ import annotations

import os
import socket
import time

__all__ = ["DaemonIdentity"]


class DaemonIdentity:
    """
    One daemon's name, host and pid, and the wall-clock time it started.

    The pid (and the default name, ``host:pid``) are read when asked for,
    not when the identity is made: ``twistd`` builds the daemon before it
    forks into the background, and the process that answers is the child.

    :param name: what events and control replies call the daemon, and what
        a control request's ``destination`` names; ``host:pid`` if not
        given.
    :param pid: the process id to report; this process's if not given.
    """

    def __init__(
        self,
        name: str | None = None,
        host: str | None = None,
        pid: int | None = None,
        started: float | None = None,
    ) -> None:
        self._name = name
        self.host = host if host is not None else socket.gethostname()
        self._pid = pid
        self.started = started if started is not None else time.time()

    @property
    def pid(self) -> int:
        return self._pid if self._pid is not None else os.getpid()

    @property
    def name(self) -> str:
        return self._name if self._name is not None else f"{self.host}:{self.pid}"

    def fields(self) -> dict[str, object]:
        """
        The fields that name the daemon in every event and control reply.
        """
        return {"daemon": self.name, "host": self.host, "pid": self.pid}

    def __repr__(self) -> str:
        return f"<DaemonIdentity {self.name} (host {self.host}, pid {self.pid})>"
