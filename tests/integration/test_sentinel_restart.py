"""
``scripts/services start sentinel`` on a set one of whose members died:
it restarts that member (it refused, blaming a sentinel that answered).
The test starts a set of its own, on free ports, in a folder of its own.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

SERVICES = Path(__file__).resolve().parents[2] / "scripts" / "services"


def _free_run(count: int) -> int:
    """
    The first of ``count`` consecutive free ports on 127.0.0.1.
    """
    for _ in range(200):
        first = random.randrange(20000, 30000)
        sockets = []
        try:
            for port in range(first, first + count):
                probe = socket.socket()
                sockets.append(probe)
                probe.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for probe in sockets:
                probe.close()
    raise RuntimeError("no free ports")


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(64) == b"+PONG\r\n"
    except OSError:
        return False


class RestartDeadMemberTests(SynchronousTestCase):
    def setUp(self) -> None:
        if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
            raise SkipTest("redis-server is not installed")
        folder = tempfile.mkdtemp(prefix="tq-sentinel-restart-")
        self.addCleanup(shutil.rmtree, folder, True)
        self.redis_port = _free_run(2)
        self.env = {
            key: value for key, value in os.environ.items() if not key.startswith("TWISTEDQ_")
        }
        self.env.update(
            TWISTEDQ_SERVICES_DIR=folder,
            TWISTEDQ_SENTINEL_PORT=str(_free_run(3)),
            TWISTEDQ_SENTINEL_REDIS_PORT=str(self.redis_port),
        )
        self.folder = Path(folder)
        self.services("start", "sentinel")
        self.addCleanup(self.services, "stop", "sentinel")

    def services(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(SERVICES), *args], env=self.env, capture_output=True, text=True, timeout=180
        )
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        return done

    def test_dead_primary_restarted(self) -> None:
        """
        After ``kill -9`` of the primary, ``start sentinel`` restarts it
        (says so) and returns once the set answers again: both Redis
        servers answer, one of them a replica in sync.
        """
        pid = int((self.folder / "sentinel" / "redis0" / "redis.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while _ping(self.redis_port) and time.monotonic() < deadline:
            time.sleep(0.1)
        done = self.services("start", "sentinel")
        self.assertIn(f"redis0 (127.0.0.1:{self.redis_port}) was down", done.stdout)
        self.assertTrue(_ping(self.redis_port))
        self.assertTrue(_ping(self.redis_port + 1))
