"""
The memcached store speaks only to memcached: a server that answers
otherwise (Tokyo Tyrant's memcached interface) fails requests with a
clear error, never the connection under the other requests.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from twisted.internet import reactor
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.integration.servers import server_url
from twistedq.backends.memcached import MemcachedBackend, NotMemcached, _MemcacheClient


class AnswersTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.protocol = _MemcacheClient()
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def test_gets_answered_like_get(self) -> None:
        """
        A ``gets`` answered without a cas id (as Tokyo Tyrant answers it)
        fails that request with an error naming the server's answer; the
        requests after it are answered and the connection stays up.
        """
        asked = self.protocol.get(b"k", withIdentifier=True)
        after = self.protocol.get(b"other")
        self.protocol.dataReceived(b"VALUE k 0 3\r\nabc\r\nEND\r\nVALUE other 0 1\r\nx\r\nEND\r\n")
        error = self.failureResultOf(asked, NotMemcached).value
        self.assertIn("gets", str(error))
        self.assertIn("VALUE k 0 3", str(error))
        self.assertEqual(self.successResultOf(after), (0, b"x"))
        self.assertFalse(self.transport.disconnecting)

    def test_gets_of_several_keys(self) -> None:
        """
        The same holds for a ``gets`` of several keys.
        """
        asked = self.protocol.getMultiple([b"a", b"b"], withIdentifier=True)
        self.protocol.dataReceived(b"VALUE a 0 1\r\n1\r\nVALUE b 0 1\r\n2\r\nEND\r\n")
        self.failureResultOf(asked, NotMemcached)
        self.assertFalse(self.transport.disconnecting)

    def test_memcached_answers(self) -> None:
        """
        memcached's own ``gets`` answer is read as before.
        """
        asked = self.protocol.get(b"k", withIdentifier=True)
        self.protocol.dataReceived(b"VALUE k 0 3 17\r\nabc\r\nEND\r\n")
        self.assertEqual(self.successResultOf(asked), (0, b"17", b"abc"))


class OnTyrantTests(TestCase):
    async def test_refused_when_connecting(self) -> None:
        """
        Pointed at a Tokyo Tyrant server, the memcached store fails its
        connection and every request with an error that names the server
        and the store to use, and sends no ``gets`` nor ``cas``: the
        connection stays up.
        """
        parts = urlsplit(server_url("TWISTEDQ_TEST_TYRANT_URL"))
        store = MemcachedBackend(reactor, parts.hostname, parts.port, timeout=3)
        self.addCleanup(store.close)
        error = await self.assertFailure(store.connect(), NotMemcached)
        self.assertIn("tyrant://", str(error))
        self.assertIn("1.1.41", str(error))
        await self.assertFailure(store.get_periodic_states(["p"]), NotMemcached)
        await self.assertFailure(store.claim_tasks(["t"], 30), NotMemcached)
        await self.assertFailure(store.get_result("t"), NotMemcached)
        self.assertFalse(store._protocol is None or store._protocol.lost)
