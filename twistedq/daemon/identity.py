"""
Who a daemon is, to the events it publishes and the control requests it
answers: a name (``host:pid`` unless ``--name`` gives one), its host and
its process id, and when it started.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field

__all__ = ["DaemonIdentity", "default_daemon_name"]


def default_daemon_name() -> str:
    """
    ``host:pid`` of this process: unique among the daemons of a cluster
    as long as host names are.
    """
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class DaemonIdentity:
    """
    One daemon's name, host and pid, and the wall-clock time it started.

    :ivar name: what events and control replies call the daemon, and what
        a control request's ``destination`` names.
    """

    name: str = field(default_factory=default_daemon_name)
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    started: float = field(default_factory=time.time)

    def fields(self) -> dict[str, object]:
        """
        The fields that name the daemon in every event and control reply.
        """
        return {"daemon": self.name, "host": self.host, "pid": self.pid}
