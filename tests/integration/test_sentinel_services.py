"""
The Redis Sentinel set ``scripts/services start sentinel`` starts: three
sentinels that agree on one primary with a replica.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.servers import server_url


def sentinel_addresses() -> list[tuple[str, int]]:
    """
    The sentinels of ``TWISTEDQ_TEST_SENTINEL_URL``
    (``redis+sentinel://host:port,host:port,.../name/db``).
    """
    netloc = urlsplit(server_url("TWISTEDQ_TEST_SENTINEL_URL")).netloc
    addresses = []
    for item in netloc.split(","):
        host, _, port = item.rpartition(":")
        addresses.append((host, int(port)))
    return addresses


def command(address: tuple[str, int], *words: str) -> list[bytes]:
    """
    One Redis command's reply: a bulk string or an array of them, as a
    list of byte strings (enough for the answers used here).
    """
    request = b"*%d\r\n" % len(words) + b"".join(
        b"$%d\r\n%s\r\n" % (len(w), w.encode()) for w in words
    )
    with socket.create_connection(address, timeout=10) as connection:
        connection.sendall(request)
        stream = connection.makefile("rb")
        header = stream.readline()
        count = int(header[1:]) if header[:1] == b"*" else 1
        if header[:1] == b"$":
            return [stream.read(int(header[1:]) + 2)[:-2]]
        items = []
        for _ in range(count):
            size = int(stream.readline()[1:])
            items.append(stream.read(size + 2)[:-2])
        return items


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
        info = b"\n".join(command(primary, "INFO", "replication"))
        self.assertIn(b"role:master", info)
        self.assertIn(b"connected_slaves:1", info)
