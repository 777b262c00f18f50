"""
Tests for :py:mod:`twistedq.backends.resp`: the same bytes as txredisapi's
own command encoder, built faster.
"""

import txredisapi
from twisted.trial.unittest import SynchronousTestCase

from twistedq.backends.redis import StoreProtocol
from twistedq.backends.resp import encode_command


class EncodeCommandTests(SynchronousTestCase):
    def test_same_bytes_as_txredisapi(self):
        """
        Text (ASCII and not), bytes (empty too), integers, floats and a
        bytearray encode to exactly what txredisapi sends.
        """
        stock = txredisapi.RedisProtocol(charset=None)
        args = ("EVALSHA", "abc", 3, "clé-ü", b"", b"\x00\xff\r\n", 1.5, -7, bytearray(b"ba"))
        self.assertEqual(encode_command(args, stock._encode_value), stock._build_command(*args))

    def test_store_protocol(self):
        """
        The store's protocol builds its commands so; with a charset of its
        own it leaves them to txredisapi.
        """
        args = ("SET", "k", "välue", 10)
        stock = txredisapi.RedisProtocol(charset=None)
        self.assertEqual(
            StoreProtocol(charset=None)._build_command(*args), stock._build_command(*args)
        )
        latin = StoreProtocol(charset="latin-1")
        self.assertEqual(
            latin._build_command(*args),
            txredisapi.RedisProtocol(charset="latin-1")._build_command(*args),
        )
        self.assertIn("välue".encode("latin-1"), latin._build_command(*args))

    def test_unencodable_argument(self):
        """
        What txredisapi cannot encode fails as it does there.
        """
        stock = txredisapi.RedisProtocol(charset=None)
        self.assertRaises(
            txredisapi.InvalidData, encode_command, ("SET", "\ud800"), stock._encode_value
        )
