"""
AMQP 0-9-1 frame and field-table codec.

txAMQP 0.8.2's own codec decodes a body as ``str`` when it happens to be valid
UTF-8 (and silently truncates multi-frame bodies whose later chunk is not),
knows only four field-table types and hangs the connection when asked to
encode anything else.  This module replaces it on both the incoming and the
outgoing path: bodies are always ``bytes``, field tables cover every type
RabbitMQ sends or accepts, and frames are packed with precompiled
:py:obj:`struct.Struct` objects.

It still produces txAMQP's own value objects (:py:obj:`txamqp.message.Message`,
:py:obj:`txamqp.content.Content`) so the rest of txAMQP keeps working on top of it.
"""

from __future__ import annotations

import datetime
import decimal
import struct
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "FRAME_BODY",
    "FRAME_END",
    "FRAME_HEADER",
    "FRAME_HEARTBEAT",
    "FRAME_METHOD",
    "FrameError",
    "MethodCodec",
    "decode_table",
    "encode_table",
]

FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = 206
FRAME_END_BYTE = bytes([FRAME_END])
#: type octet, channel short, size long
FRAME_HEADER_STRUCT = struct.Struct("!BHI")
FRAME_OVERHEAD = FRAME_HEADER_STRUCT.size + 1

_B = struct.Struct("!B")
_b = struct.Struct("!b")
_H = struct.Struct("!H")
_h = struct.Struct("!h")
_I = struct.Struct("!I")
_i = struct.Struct("!i")
_Q = struct.Struct("!Q")
_q = struct.Struct("!q")
_f = struct.Struct("!f")
_d = struct.Struct("!d")
_HH = struct.Struct("!HH")
_HHQ = struct.Struct("!HHQ")

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


class FrameError(ValueError):
    """
    Bytes received from the broker do not form a valid frame or value.
    """


# Field tables ---------------------------------------------------------------


def _encode_value(value: Any, out: list[bytes]) -> None:
    """
    Append the type octet and encoding of one field value to ``out``.
    """
    if value is None:
        out.append(b"V")
    elif isinstance(value, bool):
        out.append(b"t\x01" if value else b"t\x00")
    elif isinstance(value, int):
        if -(2**31) <= value < 2**31:
            out.append(b"I" + _i.pack(value))
        elif -(2**63) <= value < 2**63:
            out.append(b"l" + _q.pack(value))
        else:
            raise ValueError(f"integer {value} does not fit in 64 bits")
    elif isinstance(value, float):
        out.append(b"d" + _d.pack(value))
    elif isinstance(value, str):
        data = value.encode("utf-8")
        out.append(b"S" + _I.pack(len(data)) + data)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        out.append(b"x" + _I.pack(len(data)) + data)
    elif isinstance(value, decimal.Decimal):
        sign, digits, exponent = value.as_tuple()
        if not isinstance(exponent, int) or exponent > 0 or -exponent > 255:
            raise ValueError(f"decimal {value} has no AMQP encoding")
        unscaled = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
        if not -(2**31) <= unscaled < 2**31:
            raise ValueError(f"decimal {value} has too many digits for AMQP")
        out.append(b"D" + _B.pack(-exponent) + _i.pack(unscaled))
    elif isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        seconds = int((value - _EPOCH).total_seconds())
        if seconds < 0:
            raise ValueError(f"timestamp {value} is before 1970")
        out.append(b"T" + _Q.pack(seconds))
    elif isinstance(value, Mapping):
        out.append(b"F" + encode_table(value))
    elif isinstance(value, (list, tuple)):
        items: list[bytes] = []
        for item in value:
            _encode_value(item, items)
        data = b"".join(items)
        out.append(b"A" + _I.pack(len(data)) + data)
    else:
        raise TypeError(f"{type(value).__name__} has no AMQP field encoding")


def encode_table(table: Mapping[str, Any] | None) -> bytes:
    """
    Encode a field table, length prefix included.

    :raises TypeError: a value has no AMQP encoding.
    :raises ValueError: a key or a value is out of range.
    """
    if not table:
        return b"\x00\x00\x00\x00"
    out: list[bytes] = []
    for key, value in table.items():
        name = key.encode("utf-8")
        if len(name) > 255:
            raise ValueError(f"field name {key!r} is longer than 255 bytes")
        out.append(_B.pack(len(name)) + name)
        _encode_value(value, out)
    data = b"".join(out)
    return _I.pack(len(data)) + data


def _text(data: bytes) -> str | bytes:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


def _decode_value(data: bytes, offset: int) -> tuple[Any, int]:
    kind = data[offset : offset + 1]
    offset += 1
    if kind == b"S":
        (size,) = _I.unpack_from(data, offset)
        offset += 4
        return _text(data[offset : offset + size]), offset + size
    if kind == b"I":
        return _i.unpack_from(data, offset)[0], offset + 4
    if kind == b"l":
        return _q.unpack_from(data, offset)[0], offset + 8
    if kind == b"t":
        return data[offset] != 0, offset + 1
    if kind == b"F":
        return decode_table(data, offset)
    if kind == b"A":
        (size,) = _I.unpack_from(data, offset)
        offset += 4
        end = offset + size
        items = []
        while offset < end:
            item, offset = _decode_value(data, offset)
            items.append(item)
        if offset != end:
            raise FrameError("array overruns its length")
        return items, offset
    if kind == b"V":
        return None, offset
    if kind == b"T":
        (seconds,) = _Q.unpack_from(data, offset)
        return _EPOCH + datetime.timedelta(seconds=seconds), offset + 8
    if kind == b"x":
        (size,) = _I.unpack_from(data, offset)
        offset += 4
        return data[offset : offset + size], offset + size
    if kind == b"b":
        return _b.unpack_from(data, offset)[0], offset + 1
    if kind == b"B":
        return data[offset], offset + 1
    if kind == b"s":
        return _h.unpack_from(data, offset)[0], offset + 2
    if kind == b"u":
        return _H.unpack_from(data, offset)[0], offset + 2
    if kind == b"i":
        return _I.unpack_from(data, offset)[0], offset + 4
    if kind == b"L":
        return _Q.unpack_from(data, offset)[0], offset + 8
    if kind == b"f":
        return _f.unpack_from(data, offset)[0], offset + 4
    if kind == b"d":
        return _d.unpack_from(data, offset)[0], offset + 8
    if kind == b"D":
        scale = data[offset]
        (unscaled,) = _i.unpack_from(data, offset + 1)
        return decimal.Decimal(unscaled).scaleb(-scale), offset + 5
    raise FrameError(f"unknown field type {kind!r}")


def decode_table(data: bytes, offset: int = 0) -> tuple[dict[str, Any], int]:
    """
    Decode the field table that starts at ``offset`` (its length prefix).

    :return: the table and the offset just past it.
    :raises FrameError: the bytes are not a valid table.
    """
    try:
        (size,) = _I.unpack_from(data, offset)
        offset += 4
        end = offset + size
        if end > len(data):
            raise FrameError("table overruns its frame")
        table: dict[str, Any] = {}
        while offset < end:
            length = data[offset]
            name = data[offset + 1 : offset + 1 + length].decode("utf-8")
            value, offset = _decode_value(data, offset + 1 + length)
            table[name] = value
    except (struct.error, IndexError, UnicodeDecodeError, OverflowError) as e:
        raise FrameError(f"malformed field table: {e}") from None
    if offset != end:
        raise FrameError("field table overruns its length")
    return table, offset


# Method and header frames ---------------------------------------------------


def _encode_field(kind: str, value: Any, out: list[bytes]) -> None:
    if kind == "shortstr":
        data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        if len(data) > 255:
            raise ValueError(f"short string {value!r} is longer than 255 bytes")
        out.append(_B.pack(len(data)) + data)
    elif kind == "longstr":
        if isinstance(value, Mapping):
            out.append(encode_table(value))
        else:
            data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
            out.append(_I.pack(len(data)) + data)
    elif kind == "table":
        out.append(encode_table(value))
    elif kind == "octet":
        out.append(_B.pack(value))
    elif kind == "short":
        out.append(_H.pack(value))
    elif kind == "long":
        out.append(_I.pack(value))
    elif kind in ("longlong", "timestamp"):
        out.append(_Q.pack(value))
    else:
        raise ValueError(f"unknown field type {kind!r}")


def _decode_field(kind: str, data: bytes, offset: int) -> tuple[Any, int]:
    if kind == "shortstr":
        length = data[offset]
        return _text(data[offset + 1 : offset + 1 + length]), offset + 1 + length
    if kind == "longstr":
        (size,) = _I.unpack_from(data, offset)
        offset += 4
        return data[offset : offset + size], offset + size
    if kind == "table":
        return decode_table(data, offset)
    if kind == "octet":
        return data[offset], offset + 1
    if kind == "short":
        return _H.unpack_from(data, offset)[0], offset + 2
    if kind == "long":
        return _I.unpack_from(data, offset)[0], offset + 4
    if kind in ("longlong", "timestamp"):
        return _Q.unpack_from(data, offset)[0], offset + 8
    raise FrameError(f"unknown field type {kind!r}")


def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return FRAME_HEADER_STRUCT.pack(kind, channel, len(payload)) + payload + FRAME_END_BYTE


class MethodCodec:
    """
    Encode and decode method and content-header frames for one loaded
    txAMQP spec.

    :ivar spec: the txAMQP spec object.
    """

    def __init__(self, spec: Any) -> None:
        self.spec = spec
        self._field_kinds: dict[Any, tuple[str, ...]] = {}
        for klass in spec.classes:
            for method in klass.methods:
                self._field_kinds[method] = tuple(f.type for f in method.fields)
        self._property_kinds: dict[Any, tuple[tuple[str, str], ...]] = {
            klass: tuple((f.name, f.type) for f in klass.fields) for klass in spec.classes
        }
        # (class id, property flags) -> the class and its properties present,
        # for headers whose flags fit in one word (all of a publisher's
        # messages share a few such layouts)
        self._layouts: dict[tuple[int, int], tuple[Any, tuple[tuple[str, str], ...]]] = {}

    # methods

    def encode_method(self, channel: int, method: Any, args: Sequence[Any]) -> bytes:
        """
        Encode one method frame.
        """
        out = [_HH.pack(method.klass.id, method.id)]
        bits: list[bool] = []
        for kind, value in zip(self._field_kinds[method], args, strict=True):
            if kind == "bit":
                bits.append(bool(value))
                continue
            if bits:
                out.append(_pack_bits(bits))
                bits = []
            _encode_field(kind, value, out)
        if bits:
            out.append(_pack_bits(bits))
        return _frame(FRAME_METHOD, channel, b"".join(out))

    def decode_method(self, payload: bytes) -> tuple[Any, tuple[Any, ...]]:
        """
        Decode the payload of a method frame.

        :return: the spec method and its arguments.
        :raises FrameError: the payload is not a known, well-formed method.
        """
        try:
            class_id, method_id = _HH.unpack_from(payload, 0)
            method = self.spec.classes.byid[class_id].methods.byid[method_id]
        except (struct.error, KeyError):
            raise FrameError("unknown or truncated method frame") from None
        offset = 4
        args: list[Any] = []
        bit_octet = 0
        bit_index = 8
        try:
            for kind in self._field_kinds[method]:
                if kind == "bit":
                    if bit_index == 8:
                        bit_octet = payload[offset]
                        offset += 1
                        bit_index = 0
                    args.append(bool(bit_octet & (1 << bit_index)))
                    bit_index += 1
                    continue
                bit_index = 8
                value, offset = _decode_field(kind, payload, offset)
                args.append(value)
        except (struct.error, IndexError) as e:
            raise FrameError(f"truncated {method.klass.name}.{method.name}: {e}") from None
        return method, tuple(args)

    # content

    def encode_content(
        self,
        channel: int,
        klass: Any,
        body: bytes,
        properties: Mapping[str, Any],
        frame_max: int,
    ) -> bytes:
        """
        Encode the content header frame and the body frames of one message.

        :param frame_max: the negotiated largest frame, overhead included.
        """
        if not isinstance(body, (bytes, bytearray, memoryview)):
            raise TypeError(f"a message body must be bytes, not {type(body).__name__}")
        body = bytes(body)
        fields = self._property_kinds[klass]
        flags = 0
        values: list[bytes] = []
        unknown = set(properties) - {name for name, _ in fields}
        if unknown:
            raise ValueError(f"unknown message properties {sorted(unknown)}")
        for index, (name, kind) in enumerate(fields):
            value = properties.get(name)
            if value is None:
                continue
            if index >= 15:
                raise ValueError("more than 15 content properties are not supported")
            flags |= 1 << (15 - index)
            _encode_field(kind, value, values)
        header = _HHQ.pack(klass.id, 0, len(body)) + _H.pack(flags) + b"".join(values)
        frames = [_frame(FRAME_HEADER, channel, header)]
        chunk = frame_max - FRAME_OVERHEAD
        for start in range(0, len(body), chunk):
            frames.append(_frame(FRAME_BODY, channel, body[start : start + chunk]))
        return b"".join(frames)

    def decode_header(self, payload: bytes) -> tuple[Any, int, dict[str, Any]]:
        """
        Decode the payload of a content header frame.

        :return: the spec class, the body size and the properties.
        """
        try:
            class_id, _weight, size = _HHQ.unpack_from(payload, 0)
            (flags,) = _H.unpack_from(payload, 12)
            layout = self._layouts.get((class_id, flags))
            if layout is None:
                return self._decode_header_flags(payload, class_id, size)
            klass, present_fields = layout
            offset = 14
            properties: dict[str, Any] = {}
            for name, kind in present_fields:
                properties[name], offset = _decode_field(kind, payload, offset)
        except (struct.error, IndexError, KeyError, OverflowError) as e:
            raise FrameError(f"malformed content header: {e}") from None
        return klass, size, properties

    def _decode_header_flags(
        self, payload: bytes, class_id: int, size: int
    ) -> tuple[Any, int, dict[str, Any]]:
        """
        Decode a content header by its flag words, and remember the
        layout of one whose flags fit in one word.
        """
        try:
            klass = self.spec.classes.byid[class_id]
            fields = self._property_kinds[klass]
            offset = 12
            present: list[bool] = []
            while True:
                (flags,) = _H.unpack_from(payload, offset)
                offset += 2
                present.extend(bool(flags & (1 << bit)) for bit in range(15, 0, -1))
                if not flags & 1:
                    break
            properties: dict[str, Any] = {}
            for (name, kind), is_present in zip(fields, present, strict=False):
                if is_present:
                    properties[name], offset = _decode_field(kind, payload, offset)
        except (struct.error, IndexError, KeyError, OverflowError) as e:
            raise FrameError(f"malformed content header: {e}") from None
        if len(present) == 15 and len(self._layouts) < MAX_HEADER_LAYOUTS:  # one flag word
            layout = tuple(f for f, is_present in zip(fields, present, strict=False) if is_present)
            self._layouts[class_id, _H.unpack_from(payload, 12)[0]] = (klass, layout)
        return klass, size, properties


#: The most content-header layouts a codec remembers.
MAX_HEADER_LAYOUTS = 64


def _pack_bits(bits: list[bool]) -> bytes:
    out = bytearray()
    for start in range(0, len(bits), 8):
        octet = 0
        for index, bit in enumerate(bits[start : start + 8]):
            if bit:
                octet |= 1 << index
        out.append(octet)
    return bytes(out)


def heartbeat_frame() -> bytes:
    """
    Return the bytes of one heartbeat frame.
    """
    return _frame(FRAME_HEARTBEAT, 0, b"")
