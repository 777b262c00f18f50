"""
The servers ``scripts/services`` starts answer on loopback, each in its own
protocol.
"""

from __future__ import annotations

import socket
import struct
from urllib.parse import urlsplit

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.servers import server_url


def address(variable: str) -> tuple[str, int]:
    parts = urlsplit(server_url(variable))
    assert parts.hostname and parts.port
    return parts.hostname, parts.port


def exchange(variable: str, request: bytes, size: int = 64) -> bytes:
    with socket.create_connection(address(variable), timeout=10) as connection:
        if request:
            connection.sendall(request)
        return connection.recv(size)


class ServicesTests(SynchronousTestCase):
    def test_rabbitmq(self) -> None:
        """
        RabbitMQ answers an AMQP 0-9-1 protocol header with connection.start.
        """
        reply = exchange("TWISTEDQ_TEST_AMQP_URL", b"AMQP\x00\x00\x09\x01", 7)
        self.assertEqual(reply[:3], b"\x01\x00\x00")  # a method frame on channel 0

    def test_redis(self) -> None:
        """
        Redis answers PING with PONG.
        """
        self.assertEqual(exchange("TWISTEDQ_TEST_REDIS_URL", b"PING\r\n"), b"+PONG\r\n")

    def test_memcached(self) -> None:
        """
        memcached answers ``version``.
        """
        reply = exchange("TWISTEDQ_TEST_MEMCACHED_URL", b"version\r\n")
        self.assertTrue(reply.startswith(b"VERSION "), reply)

    def test_postgres(self) -> None:
        """
        PostgreSQL answers an SSLRequest with a one-byte yes or no.
        """
        reply = exchange("TWISTEDQ_TEST_POSTGRES_URL", struct.pack("!ii", 8, 80877103), 1)
        self.assertIn(reply, (b"N", b"S"))

    def test_mariadb(self) -> None:
        """
        MariaDB greets a new connection with its handshake packet naming
        its version.
        """
        reply = exchange("TWISTEDQ_TEST_MYSQL_URL", b"", 128)
        self.assertEqual(reply[4], 10)  # protocol version 10
        self.assertIn(b"MariaDB", reply)
