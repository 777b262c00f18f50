"""
The Redis Sentinel set ``scripts/services start sentinel`` starts: three
sentinels that agree on one primary with a replica.
"""

from __future__ import annotations

import socket

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.sentinel_set import command, info, sentinel_addresses


class SentinelServicesTests(SynchronousTestCase):
    def test_three_sentinels_agree(self) -> None:
        """
        Every sentinel names the same primary for ``twistedq``, which
        answers PING and has a replica.
        """
        addresses = sentinel_addresses()
        self.assertEqual(len(addresses), 3)
        primaries = {
            tuple(command(a, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", "twistedq")) for a in addresses
        }
        self.assertEqual(len(primaries), 1, primaries)
        host, port = next(iter(primaries))
        primary = (host.decode(), int(port))
        with socket.create_connection(primary, timeout=10) as connection:
            connection.sendall(b"PING\r\n")
            self.assertEqual(connection.recv(64), b"+PONG\r\n")
        replication = info(primary, "replication")
        self.assertEqual(replication["role"], "master")
        self.assertEqual(replication["connected_slaves"], "1")
