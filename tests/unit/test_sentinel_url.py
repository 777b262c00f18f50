"""
Store URLs that name a Redis Sentinel set.
"""

from __future__ import annotations

import txredisapi
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twistedq.backends.base import BackendURLError
from twistedq.backends.redis import RedisBackend
from twistedq.backends.redis_sentinel import SentinelURL, is_readonly, replicas_of
from twistedq.backends.url import backend_from_url


class SentinelURLTests(SynchronousTestCase):
    def test_parse(self) -> None:
        """
        The sentinels in order, the name, the database and the password.
        """
        url = SentinelURL.parse("redis+sentinel://:s%40cret@a:26379,b:26380,[::1]:26381/main/3")
        self.assertEqual(url.sentinels, (("a", 26379), ("b", 26380), ("::1", 26381)))
        self.assertEqual((url.service, url.db, url.password), ("main", 3, "s@cret"))

    def test_defaults(self) -> None:
        """
        Database 0 and no password unless given; one sentinel is enough.
        """
        url = SentinelURL.parse("redis+sentinel://10.0.0.1:26379/main")
        self.assertEqual(url, SentinelURL((("10.0.0.1", 26379),), "main", 0, None))

    def test_text(self) -> None:
        """
        The text form names no password and reads back the same.
        """
        url = SentinelURL.parse("redis+sentinel://:pw@a:1,[::1]:2/main/4")
        self.assertEqual(str(url), "redis+sentinel://a:1,[::1]:2/main/4")
        self.assertEqual(SentinelURL.parse(str(url)).sentinels, url.sentinels)

    def test_bad(self) -> None:
        """
        A sentinel without a port, a bad port, no name or a database that
        is no number is refused.
        """
        for url in (
            "redis+sentinel://a,b:2/main",
            "redis+sentinel://a:x/main",
            "redis+sentinel://a:70000/main",
            "redis+sentinel://a:1",
            "redis+sentinel://a:1/main/x",
            "redis://a:1/main",
        ):
            with self.subTest(url=url):
                self.assertRaises(BackendURLError, SentinelURL.parse, url)

    def test_backend(self) -> None:
        """
        backend_from_url makes a Redis store that follows the sentinels,
        named by its URL without the password.
        """
        backend = backend_from_url("redis+sentinel://:pw@a:1,b:2/main/2", Clock())
        assert isinstance(backend, RedisBackend)
        self.assertEqual(backend.sentinel, SentinelURL.parse("redis+sentinel://:pw@a:1,b:2/main/2"))
        self.assertEqual((backend.url, backend.db), ("redis+sentinel://a:1,b:2/main/2", 2))

    def test_readonly(self) -> None:
        """
        Only Redis's READONLY refusal counts as one.
        """
        readonly = txredisapi.ResponseError("READONLY You can't write against a read only replica.")
        self.assertTrue(is_readonly(Failure(readonly)))
        self.assertFalse(is_readonly(Failure(txredisapi.ResponseError("ERR wrong"))))
        self.assertFalse(is_readonly(Failure(txredisapi.ConnectionError("READONLY"))))


class ReplicasOptionTests(SynchronousTestCase):
    def test_replicas(self) -> None:
        """
        ``?replicas=N`` on either scheme sets how many replicas must have a
        write; it shows in the store's URL, and keeps one connection.
        """
        for url, name in (
            ("redis://h:1/2?replicas=1", "redis://h:1/2?replicas=1"),
            ("redis+sentinel://a:1/main/2?replicas=2", "redis+sentinel://a:1/main/2?replicas=2"),
        ):
            backend = backend_from_url(url, Clock())
            assert isinstance(backend, RedisBackend)
            self.assertEqual(backend.url, name)
            self.assertEqual(backend.pool_size, 1)
        plain = backend_from_url("redis://h:1/0", Clock())
        assert isinstance(plain, RedisBackend)
        self.assertEqual(plain.replicas, 0)

    def test_bad_options(self) -> None:
        """
        An unknown option or a replicas that is no number is refused.
        """
        for url in (
            "redis://h:1/0?replica=1",
            "redis://h:1/0?replicas=x",
            "redis://h/0?replicas=-1",
        ):
            with self.subTest(url=url):
                self.assertRaises(BackendURLError, replicas_of, url)
