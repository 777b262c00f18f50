"""
Tests for :py:obj:`twistedq.amqp.codec`.
"""

import datetime
import struct
from decimal import Decimal

from twisted.trial.unittest import SynchronousTestCase

from twistedq.amqp.codec import (
    FRAME_BODY,
    FRAME_END,
    FRAME_HEADER,
    FRAME_METHOD,
    MAX_HEADER_LAYOUTS,
    FrameError,
    MethodCodec,
    decode_table,
    encode_table,
)
from twistedq.amqp.protocol import load_spec

UTC = datetime.timezone.utc


def split_frames(data):
    """
    Split bytes into ``(type, channel, payload)`` frames, checking each
    frame-end octet and that nothing is left over.
    """
    frames = []
    offset = 0
    while offset < len(data):
        kind, channel, size = struct.unpack_from("!BHI", data, offset)
        offset += 7
        payload = data[offset : offset + size]
        assert len(payload) == size, "truncated frame"
        offset += size
        assert data[offset] == FRAME_END, "missing frame-end"
        offset += 1
        frames.append((kind, channel, payload))
    return frames


def field(name, kind, value):
    """
    Hand-build one field-table entry: short name, type octet, raw value.
    """
    encoded = name.encode()
    return bytes([len(encoded)]) + encoded + kind + value


def table(*entries):
    data = b"".join(entries)
    return struct.pack("!I", len(data)) + data


class TableRoundTripTests(SynchronousTestCase):
    """
    ``decode_table(encode_table(t))`` gives ``t`` back for every supported type.
    """

    def assertRoundTrip(self, value):
        data = encode_table(value)
        decoded, end = decode_table(data)
        self.assertEqual(decoded, value)
        self.assertEqual(end, len(data))
        return data

    def test_empty(self):
        """
        An empty table (or None) encodes as a zero length and decodes empty.
        """
        self.assertEqual(encode_table({}), b"\x00\x00\x00\x00")
        self.assertEqual(encode_table(None), b"\x00\x00\x00\x00")
        self.assertEqual(decode_table(b"\x00\x00\x00\x00"), ({}, 4))

    def test_none(self):
        """
        None travels as the void type ``V``.
        """
        data = self.assertRoundTrip({"n": None})
        self.assertEqual(data, table(field("n", b"V", b"")))

    def test_bools(self):
        """
        Booleans travel as ``t`` and come back as ``bool``, not ``int``.
        """
        self.assertRoundTrip({"yes": True, "no": False})
        decoded, _ = decode_table(encode_table({"yes": True}))
        self.assertIs(decoded["yes"], True)

    def test_int32(self):
        """
        Integers within 32 bits, negative included, travel as signed ``I``.
        """
        values = {"zero": 0, "max": 2**31 - 1, "min": -(2**31), "neg": -5}
        self.assertRoundTrip(values)
        self.assertEqual(encode_table({"a": -5}), table(field("a", b"I", struct.pack("!i", -5))))

    def test_int64(self):
        """
        Integers beyond 32 bits up to 64 bits travel as signed ``l``.
        """
        values = {"big": 2**31, "max": 2**63 - 1, "min": -(2**63), "neg": -(2**40)}
        self.assertRoundTrip(values)
        self.assertEqual(
            encode_table({"a": 2**31}), table(field("a", b"l", struct.pack("!q", 2**31)))
        )

    def test_float(self):
        """
        Floats travel as doubles and keep their exact value.
        """
        self.assertRoundTrip({"pi": 3.141592653589793, "neg": -0.1, "tiny": 5e-324})

    def test_str(self):
        """
        Text, non-ASCII included, travels as UTF-8 ``S`` and comes back ``str``.
        """
        data = self.assertRoundTrip({"text": "héllo ☃ 日本", "empty": ""})
        self.assertIn("héllo ☃ 日本".encode(), data)

    def test_non_ascii_key(self):
        """
        Field names may be non-ASCII.
        """
        self.assertRoundTrip({"clé": 1})

    def test_bytes(self):
        """
        Bytes travel as the byte array ``x`` and come back as ``bytes``, even
        when they are valid UTF-8.
        """
        self.assertRoundTrip({"raw": b"\x00\xff\xfe", "ascii": b"abc"})
        decoded, _ = decode_table(encode_table({"ascii": b"abc"}))
        self.assertIsInstance(decoded["ascii"], bytes)

    def test_decimal(self):
        """
        Decimals keep their digits and scale, negative included.
        """
        values = {"a": Decimal("1.50"), "b": Decimal("-12.345"), "c": Decimal("7")}
        self.assertRoundTrip(values)
        decoded, _ = decode_table(encode_table({"a": Decimal("1.50")}))
        self.assertEqual(str(decoded["a"]), "1.50")

    def test_decimal_out_of_range(self):
        """
        A decimal whose unscaled value does not fit in 32 bits raises
        ``ValueError``, as documented, not ``struct.error``.
        """
        self.assertRaises(ValueError, encode_table, {"d": Decimal("12345678901")})

    def test_datetime(self):
        """
        An aware datetime with whole seconds comes back equal, in UTC.
        """
        when = datetime.datetime(2026, 11, 24, 10, 0, 5, tzinfo=UTC)
        self.assertRoundTrip({"when": when})

    def test_naive_datetime(self):
        """
        A naive datetime is taken as UTC.
        """
        data = encode_table({"when": datetime.datetime(2000, 1, 1)})
        self.assertEqual(decode_table(data)[0], {"when": datetime.datetime(2000, 1, 1, tzinfo=UTC)})

    def test_nested_table(self):
        """
        Tables nest inside tables.
        """
        self.assertRoundTrip({"outer": {"inner": {"x": 1, "y": "z"}, "empty": {}}})

    def test_list(self):
        """
        Lists of mixed items (nested lists and tables included) travel as ``A``;
        tuples come back as lists.
        """
        self.assertRoundTrip({"l": [1, "two", 3.0, None, True, b"x", [4, [5]], {"k": "v"}, []]})
        decoded, _ = decode_table(encode_table({"t": (1, 2)}))
        self.assertEqual(decoded, {"t": [1, 2]})

    def test_offset(self):
        """
        A table that starts at an offset decodes from there and returns the
        offset just past it.
        """
        data = b"junk" + encode_table({"a": 1}) + b"tail"
        decoded, end = decode_table(data, 4)
        self.assertEqual(decoded, {"a": 1})
        self.assertEqual(data[end:], b"tail")


class RabbitTypesTests(SynchronousTestCase):
    """
    Every field type RabbitMQ sends decodes from hand-built bytes.
    """

    def assertDecodes(self, kind, raw, expected):
        decoded, _ = decode_table(table(field("f", kind, raw)))
        self.assertEqual(decoded, {"f": expected})
        self.assertEqual(type(decoded["f"]), type(expected))

    def test_signed_octet(self):
        """
        ``b`` is a signed 8-bit integer.
        """
        self.assertDecodes(b"b", b"\xfe", -2)

    def test_unsigned_octet(self):
        """
        ``B`` is an unsigned 8-bit integer.
        """
        self.assertDecodes(b"B", b"\xfe", 254)

    def test_signed_short(self):
        """
        ``s`` is a signed 16-bit integer.
        """
        self.assertDecodes(b"s", struct.pack("!h", -300), -300)

    def test_unsigned_short(self):
        """
        ``u`` is an unsigned 16-bit integer.
        """
        self.assertDecodes(b"u", struct.pack("!H", 65000), 65000)

    def test_unsigned_long(self):
        """
        ``i`` is an unsigned 32-bit integer.
        """
        self.assertDecodes(b"i", struct.pack("!I", 4000000000), 4000000000)

    def test_unsigned_longlong(self):
        """
        ``L`` is an unsigned 64-bit integer.
        """
        self.assertDecodes(b"L", struct.pack("!Q", 2**64 - 1), 2**64 - 1)

    def test_float32(self):
        """
        ``f`` is a 32-bit float.
        """
        self.assertDecodes(b"f", struct.pack("!f", 1.5), 1.5)

    def test_byte_array(self):
        """
        ``x`` is a byte array with a 32-bit length.
        """
        self.assertDecodes(b"x", struct.pack("!I", 3) + b"\x00\x01\xff", b"\x00\x01\xff")

    def test_void(self):
        """
        ``V`` is None and has no value bytes.
        """
        decoded, _ = decode_table(table(field("a", b"V", b""), field("b", b"B", b"\x07")))
        self.assertEqual(decoded, {"a": None, "b": 7})

    def test_timestamp(self):
        """
        ``T`` is seconds since the epoch, decoded as an aware UTC datetime.
        """
        self.assertDecodes(
            b"T",
            struct.pack("!Q", 1700000000),
            datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC),
        )

    def test_timestamp_out_of_range(self):
        """
        A timestamp beyond what ``datetime`` holds raises
        :py:obj:`FrameError`, not ``OverflowError``.
        """
        data = table(field("f", b"T", struct.pack("!Q", 2**63)))
        self.assertRaises(FrameError, decode_table, data)

    def test_array(self):
        """
        ``A`` is an array of typed values with a 32-bit byte length.
        """
        items = b"I" + struct.pack("!i", -1) + b"S" + struct.pack("!I", 2) + b"ok" + b"V"
        self.assertDecodes(b"A", struct.pack("!I", len(items)) + items, [-1, "ok", None])

    def test_long_string_not_utf8(self):
        """
        An ``S`` value that is not UTF-8 comes back as bytes.
        """
        self.assertDecodes(b"S", struct.pack("!I", 2) + b"\xff\xfe", b"\xff\xfe")

    def test_x_death(self):
        """
        An ``x-death`` header (an array of tables with a 64-bit count and a
        timestamp) decodes fully.
        """
        death = table(
            field("count", b"l", struct.pack("!q", 3)),
            field("reason", b"S", struct.pack("!I", 8) + b"rejected"),
            field("queue", b"S", struct.pack("!I", 8) + b"twistedq"),
            field("time", b"T", struct.pack("!Q", 1700000000)),
            field("exchange", b"S", struct.pack("!I", 0)),
            field(
                "routing-keys",
                b"A",
                struct.pack("!I", 13) + b"S" + struct.pack("!I", 8) + b"twistedq",
            ),
        )
        array = b"F" + death + b"F" + death
        headers = table(field("x-death", b"A", struct.pack("!I", len(array)) + array))
        decoded, end = decode_table(headers)
        self.assertEqual(end, len(headers))
        entry = {
            "count": 3,
            "reason": "rejected",
            "queue": "twistedq",
            "time": datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC),
            "exchange": "",
            "routing-keys": ["twistedq"],
        }
        self.assertEqual(decoded, {"x-death": [entry, entry]})


class TableErrorTests(SynchronousTestCase):
    """
    Bad bytes and unencodable values are refused.
    """

    def test_truncated_table(self):
        """
        A table cut short raises :py:obj:`FrameError`.
        """
        data = encode_table({"a": "hello", "b": 1})
        for cut in range(1, len(data)):
            self.assertRaises(FrameError, decode_table, data[:cut])

    def test_truncated_value(self):
        """
        A value cut short inside a table whose length is consistent raises
        :py:obj:`FrameError`.
        """
        self.assertRaises(FrameError, decode_table, table(field("a", b"I", b"\x00\x01")))
        self.assertRaises(
            FrameError, decode_table, table(field("a", b"S", struct.pack("!I", 10) + b"abc"))
        )

    def test_unknown_type(self):
        """
        An unknown type octet raises :py:obj:`FrameError` naming it.
        """
        error = self.assertRaises(FrameError, decode_table, table(field("a", b"Z", b"")))
        self.assertIn("b'Z'", str(error))

    def test_object_has_no_encoding(self):
        """
        A value with no AMQP encoding raises ``TypeError`` naming its type.
        """
        error = self.assertRaises(TypeError, encode_table, {"a": object()})
        self.assertIn("object", str(error))
        self.assertRaises(TypeError, encode_table, {"a": [1, {2, 3}]})

    def test_int_over_64_bits(self):
        """
        An integer that does not fit in 64 bits raises ``ValueError``.
        """
        self.assertRaises(ValueError, encode_table, {"a": 2**63})
        self.assertRaises(ValueError, encode_table, {"a": -(2**63) - 1})

    def test_long_key(self):
        """
        A field name over 255 bytes raises ``ValueError``.
        """
        self.assertRaises(ValueError, encode_table, {"k" * 256: 1})


class MethodCodecTests(SynchronousTestCase):
    """
    Method frames and content frames, encoded and decoded with the loaded spec.
    """

    def setUp(self):
        self.spec = load_spec()
        self.codec = MethodCodec(self.spec)

    def method(self, klass, name):
        return self.spec.classes.byname[klass].methods.byname[name]

    def roundTrip(self, channel, method, args):
        data = self.codec.encode_method(channel, method, args)
        [(kind, got_channel, payload)] = split_frames(data)
        self.assertEqual(kind, FRAME_METHOD)
        self.assertEqual(got_channel, channel)
        decoded_method, decoded_args = self.codec.decode_method(payload)
        self.assertIs(decoded_method, method)
        return payload, decoded_args

    def test_basic_publish(self):
        """
        ``basic.publish`` round-trips, class 60 method 40.
        """
        method = self.method("basic", "publish")
        payload, args = self.roundTrip(3, method, (0, "exch", "route", True, False))
        self.assertEqual(args, (0, "exch", "route", True, False))
        self.assertEqual(struct.unpack_from("!HH", payload), (60, 40))
        self.assertEqual(payload[-1], 0b01)

    def test_basic_ack_multiple(self):
        """
        ``basic.ack`` with ``multiple`` round-trips with a 64-bit tag.
        """
        method = self.method("basic", "ack")
        payload, args = self.roundTrip(1, method, (2**40 + 7, True))
        self.assertEqual(args, (2**40 + 7, True))
        self.assertEqual(payload, struct.pack("!HHQB", 60, 80, 2**40 + 7, 1))

    def test_queue_declare_arguments(self):
        """
        ``queue.declare`` round-trips its bits and its arguments table.
        """
        method = self.method("queue", "declare")
        arguments = {"x-dead-letter-exchange": "dead", "x-max-priority": 10, "x-ha": True}
        _, args = self.roundTrip(1, method, (0, "q", False, True, False, True, False, arguments))
        self.assertEqual(args, (0, "q", False, True, False, True, False, arguments))

    def test_basic_consume_bits(self):
        """
        ``basic.consume`` packs no-local, no-ack, exclusive and nowait into one
        octet, first bit lowest.
        """
        method = self.method("basic", "consume")
        values = (0, "q", "tag", False, True, True, False, {})
        payload, args = self.roundTrip(2, method, values)
        self.assertEqual(args, values)
        # class, method, reserved short, "q", "tag", bit octet, empty table
        self.assertEqual(
            payload, struct.pack("!HHH", 60, 20, 0) + b"\x01q\x03tag" + b"\x06" + b"\x00" * 4
        )

    def test_all_bits_set(self):
        """
        Four set bits pack into 0x0F.
        """
        method = self.method("basic", "consume")
        payload, _ = self.roundTrip(2, method, (0, "q", "t", True, True, True, True, {}))
        self.assertEqual(payload[-5], 0x0F)

    def test_truncated_method(self):
        """
        A truncated method payload raises :py:obj:`FrameError`.
        """
        data = self.codec.encode_method(1, self.method("basic", "ack"), (5, True))
        [(_, _, payload)] = split_frames(data)
        self.assertRaises(FrameError, self.codec.decode_method, payload[:-3])
        self.assertRaises(FrameError, self.codec.decode_method, b"\x00")

    def test_unknown_method(self):
        """
        An unknown class or method id raises :py:obj:`FrameError`.
        """
        self.assertRaises(FrameError, self.codec.decode_method, struct.pack("!HH", 60, 999))
        self.assertRaises(FrameError, self.codec.decode_method, struct.pack("!HH", 999, 1))

    def test_content_split(self):
        """
        A 300,100-byte body is split into body frames no longer than
        ``frame_max``, preceded by a header that carries its size and
        properties.
        """
        basic = self.spec.classes.byname["basic"]
        body = bytes(range(256)) * 1172 + b"\xff" * 68
        self.assertEqual(len(body), 300100)
        properties = {
            "content-type": "application/json",
            "delivery-mode": 2,
            "message-id": "id-1",
            "headers": {"x-retries": 2, "nested": {"list": [1, "a", {"b": None}]}},
        }
        frame_max = 131072
        data = self.codec.encode_content(5, basic, body, properties, frame_max)
        frames = split_frames(data)
        self.assertEqual(frames[0][0], FRAME_HEADER)
        self.assertEqual({channel for _, channel, _ in frames}, {5})
        bodies = frames[1:]
        self.assertEqual([kind for kind, _, _ in bodies], [FRAME_BODY] * 3)
        for _, _, payload in bodies:
            self.assertLessEqual(len(payload) + 8, frame_max)
        self.assertEqual(len(bodies[0][2]) + 8, frame_max)
        self.assertEqual(b"".join(payload for _, _, payload in bodies), body)
        klass, size, decoded = self.codec.decode_header(frames[0][2])
        self.assertIs(klass, basic)
        self.assertEqual(size, 300100)
        self.assertEqual(decoded, properties)

    def header(self, properties, size=10):
        basic = self.spec.classes.byname["basic"]
        return split_frames(self.codec.encode_content(1, basic, b"x" * size, properties, 4096))[0][
            2
        ]

    def test_same_layout_other_values(self):
        """
        Headers with the same properties present but other values decode
        each to its own values (the layout of the first is reused), and a
        header with other properties decodes to those.
        """
        for number in range(3):
            properties = {"content-type": "application/json", "message-id": f"id-{number}"}
            _, size, decoded = self.codec.decode_header(self.header(properties, number))
            self.assertEqual((size, decoded), (number, properties))
        other = {"delivery-mode": 2, "priority": 7, "headers": {"a": [1]}}
        self.assertEqual(self.codec.decode_header(self.header(other))[2], other)

    def test_truncated_header_of_known_layout(self):
        """
        A header cut short fails with ``FrameError`` whether or not its
        layout was seen before.
        """
        properties = {"content-type": "application/json", "delivery-mode": 2}
        whole = self.header(properties)
        for _ in range(2):
            for cut in (whole[:-1], whole[:13]):
                with self.assertRaises(FrameError):
                    self.codec.decode_header(cut)
            self.assertEqual(self.codec.decode_header(whole)[2], properties)

    def test_layouts_remembered_are_bounded(self):
        """
        However many layouts arrive, a codec remembers at most
        ``MAX_HEADER_LAYOUTS``, and decodes the others all the same.
        """
        fields = ["content-type", "content-encoding", "correlation-id", "reply-to",
                  "expiration", "message-id", "type", "user-id", "app-id"]  # fmt: skip
        for mask in range(1, 2 ** len(fields)):
            properties = {name: "v" for bit, name in enumerate(fields) if mask & (1 << bit)}
            self.assertEqual(self.codec.decode_header(self.header(properties))[2], properties)
        self.assertEqual(len(self.codec._layouts), MAX_HEADER_LAYOUTS)

    def test_empty_body(self):
        """
        An empty body is a header frame with size 0 and no body frame.
        """
        basic = self.spec.classes.byname["basic"]
        frames = split_frames(self.codec.encode_content(1, basic, b"", {}, 4096))
        self.assertEqual(len(frames), 1)
        self.assertEqual(self.codec.decode_header(frames[0][2])[1:], (0, {}))

    def test_str_body(self):
        """
        A ``str`` body raises ``TypeError``.
        """
        basic = self.spec.classes.byname["basic"]
        self.assertRaises(TypeError, self.codec.encode_content, 1, basic, "text", {}, 4096)

    def test_unknown_property(self):
        """
        An unknown property raises ``ValueError`` naming it.
        """
        basic = self.spec.classes.byname["basic"]
        error = self.assertRaises(
            ValueError, self.codec.encode_content, 1, basic, b"", {"colour": "red"}, 4096
        )
        self.assertIn("colour", str(error))
