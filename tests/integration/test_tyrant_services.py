"""
The ttserver ``scripts/services`` builds and starts: on loopback, serving
a B+ tree database in the services folder, built once.
"""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path
from urllib.parse import urlsplit

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.servers import server_url


class TyrantServiceTests(SynchronousTestCase):
    def test_ttserver(self) -> None:
        """
        ttserver answers Tyrant's binary ``stat`` on loopback: version
        1.1.41, a B+ tree database whose file is in the services folder,
        beside the cached build.
        """
        parts = urlsplit(server_url("TWISTEDQ_TEST_TYRANT_URL"))
        self.assertEqual(parts.hostname, "127.0.0.1")
        assert parts.port is not None
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as connection:
            connection.sendall(b"\xc8\x88")
            reply = b""
            while len(reply) < 5 or len(reply) < 5 + struct.unpack(">I", reply[1:5])[0]:
                chunk = connection.recv(65536)
                self.assertTrue(chunk, "ttserver closed the connection")
                reply += chunk
        status = dict(
            line.split("\t", 1) for line in reply[5:].decode().splitlines() if "\t" in line
        )
        self.assertEqual((reply[0], status["version"], status["type"]), (0, "1.1.41", "B+ tree"))
        folder = os.environ.get("TWISTEDQ_SERVICES_DIR")
        if folder and Path(status["path"]).is_relative_to(Path(folder).resolve()):
            build = Path(folder).resolve() / ".build" / "tokyotyrant-1.1.41" / "ttserver"
            self.assertTrue(build.is_file(), build)
