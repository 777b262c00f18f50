"""
Tests for :py:mod:`twistedq.daemon.identity`.
"""

import os
import socket
from unittest import mock

from twisted.trial.unittest import SynchronousTestCase

from twistedq.daemon.identity import DaemonIdentity


class DaemonIdentityTests(SynchronousTestCase):
    def test_default_name(self) -> None:
        """
        Without a name, a daemon is ``host:pid`` of this process.
        """
        identity = DaemonIdentity()
        self.assertEqual(identity.name, f"{socket.gethostname()}:{os.getpid()}")
        self.assertEqual(
            identity.fields(),
            {"daemon": identity.name, "host": socket.gethostname(), "pid": os.getpid()},
        )

    def test_pid_after_fork(self) -> None:
        """
        The pid and the default name are those of the process that asks
        (twistd forks into the background after building the daemon), not
        of the one that made the identity.
        """
        identity = DaemonIdentity(host="box")
        with mock.patch("os.getpid", return_value=4242):
            self.assertEqual((identity.pid, identity.name), (4242, "box:4242"))

    def test_given(self) -> None:
        """
        A given name and pid are kept.
        """
        identity = DaemonIdentity(name="w1", host="box", pid=7, started=1.5)
        with mock.patch("os.getpid", return_value=4242):
            self.assertEqual((identity.name, identity.pid, identity.started), ("w1", 7, 1.5))
