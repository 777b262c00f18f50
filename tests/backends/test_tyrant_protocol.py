"""
Tokyo Tyrant's binary protocol, byte for byte, on a string transport.
"""

from __future__ import annotations

import struct

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twistedq.backends.base import BackendURLError
from twistedq.backends.tyrant import NotATree, TyrantBackend
from twistedq.backends.tyrant_protocol import TyrantError, TyrantProtocol, TyrantTimeout
from twistedq.backends.url import backend_from_url


def _int(number: int) -> bytes:
    return struct.pack(">I", number)


class ProtocolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.protocol = TyrantProtocol(timeout=5)
        self.protocol.callLater = self.clock.callLater  # type: ignore[method-assign]
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def test_requests(self) -> None:
        """
        Each command is written as the specification lays it out: the
        magic byte, the command, big-endian lengths, then the data.
        """
        self.protocol.put(b"k", b"value")
        self.protocol.putkeep(b"k", b"v")
        self.protocol.out(b"k")
        self.protocol.get(b"key")
        self.protocol.mget([b"a", b"bc"])
        self.protocol.fwmkeys(b"p:", -1)
        self.protocol.addint(b"n", -2)
        self.protocol.misc(b"outlist", [b"a"])
        self.protocol.stat()
        self.assertEqual(
            self.transport.value(),
            b"\xc8\x10" + _int(1) + _int(5) + b"kvalue"
            b"\xc8\x11" + _int(1) + _int(1) + b"kv"
            b"\xc8\x20" + _int(1) + b"k"
            b"\xc8\x30" + _int(3) + b"key"
            b"\xc8\x31" + _int(2) + _int(1) + b"a" + _int(2) + b"bc"
            b"\xc8\x58" + _int(2) + b"\xff\xff\xff\xff" + b"p:"
            b"\xc8\x60" + _int(1) + b"\xff\xff\xff\xfe" + b"n"
            b"\xc8\x90" + _int(7) + _int(0) + _int(1) + b"outlist" + _int(1) + b"a"
            b"\xc8\x88",
        )

    def test_pipelined_replies_in_pieces(self) -> None:
        """
        Replies of pipelined requests are matched in order, whichever way
        the bytes are cut; a missing record is None, a kept one False.
        """
        got = self.protocol.get(b"a")
        missing = self.protocol.get(b"b")
        kept = self.protocol.putkeep(b"c", b"x")
        found = self.protocol.mget([b"a", b"z"])
        keys = self.protocol.fwmkeys(b"p")
        total = self.protocol.addint(b"n", 1)
        replies = (
            b"\x00" + _int(3) + b"abc"
            b"\x01"
            b"\x01"
            b"\x00" + _int(1) + _int(1) + _int(2) + b"a" + b"xy"
            b"\x00" + _int(2) + _int(2) + b"p1" + _int(2) + b"p2"
            b"\x00" + _int(7)
        )
        for byte in range(len(replies)):
            self.protocol.dataReceived(replies[byte : byte + 1])
        self.assertEqual(self.successResultOf(got), b"abc")
        self.assertIsNone(self.successResultOf(missing))
        self.assertFalse(self.successResultOf(kept))
        self.assertEqual(self.successResultOf(found), {b"a": b"xy"})
        self.assertEqual(self.successResultOf(keys), [b"p1", b"p2"])
        self.assertEqual(self.successResultOf(total), 7)

    def test_failed_put(self) -> None:
        """
        A put the server fails is a TyrantError naming the key; the
        connection serves on.
        """
        put = self.protocol.put(b"key", b"v")
        after = self.protocol.get(b"key")
        self.protocol.dataReceived(b"\x01\x01")
        self.assertIn("key", str(self.failureResultOf(put, TyrantError).value))
        self.assertIsNone(self.successResultOf(after))
        self.assertFalse(self.transport.disconnecting)

    def test_timeout_fails_everything_in_flight(self) -> None:
        """
        No reply within the timeout fails every request in flight and
        drops the connection; the timeout does not run while idle.
        """
        first = self.protocol.get(b"a")
        self.protocol.dataReceived(b"\x00" + _int(1) + b"a")
        self.successResultOf(first)
        self.clock.advance(60)
        self.assertFalse(self.transport.disconnected)
        waiting = [self.protocol.get(b"a"), self.protocol.out(b"b")]
        self.clock.advance(5)
        for deferred in waiting:
            self.failureResultOf(deferred, TyrantTimeout)
        self.assertTrue(self.transport.disconnected)

    def test_connection_lost(self) -> None:
        """
        A lost connection fails the requests in flight, and later ones at
        once.
        """
        waiting = self.protocol.get(b"a")
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(waiting, ConnectionDone)
        self.failureResultOf(self.protocol.get(b"b"), ConnectionDone)

    def test_unasked_bytes(self) -> None:
        """
        Bytes no request asked for drop the connection.
        """
        self.protocol.dataReceived(b"\x00")
        self.assertTrue(self.transport.disconnecting)


class StoreTests(SynchronousTestCase):
    def test_url(self) -> None:
        """
        ``tyrant://host:port`` names the Tyrant store, on port 1978 by
        default.
        """
        store = backend_from_url("tyrant://example.org:2000", Clock())
        self.assertIsInstance(store, TyrantBackend)
        self.assertEqual(store.url, "tyrant://example.org:2000")
        self.assertEqual(backend_from_url("tyrant://h", Clock()).url, "tyrant://h:1978")
        self.assertRaises(BackendURLError, backend_from_url, "tyrant://h:x", Clock())

    def test_hash_database_refused(self) -> None:
        """
        A server of a hash database is refused with an error that says
        what to run instead, and so is every request after.
        """
        store = TyrantBackend(Clock())
        protocol = TyrantProtocol()
        protocol.makeConnection(StringTransport())
        store._protocol = protocol
        checked = store._do(store._check_server)
        status = b"version\t1.1.41\ntype\thash\n"
        protocol.dataReceived(b"\x00" + _int(len(status)) + status)
        error = self.failureResultOf(checked, NotATree).value
        self.assertIn(".tcb", str(error))
        self.failureResultOf(store.get_result("x"), NotATree)
