"""
Tokyo Tyrant's own binary protocol, on Twisted: the client side of the
commands the Tyrant store (:py:mod:`twistedq.backends.tyrant`) sends.

Every request starts with the magic byte ``0xC8`` and a command byte;
numbers are big-endian 32-bit integers; a reply starts with a status byte
(0 for success).  Requests are pipelined on one connection and answered
in order.  The layouts are those of ``doc/spex.html`` in Tokyo Tyrant
1.1.41 (section "Original Binary Protocol").
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, cast

from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

__all__ = ["TyrantError", "TyrantProtocol", "TyrantTimeout"]

_MAGIC = 0xC8
PUT, PUTKEEP, OUT, GET, MGET, VSIZ, FWMKEYS, ADDINT, STAT, MISC = (
    0x10,
    0x11,
    0x20,
    0x30,
    0x31,
    0x38,
    0x58,
    0x60,
    0x88,
    0x90,
)

_INT = struct.Struct(">I")
_SIGNED = struct.Struct(">i")


class TyrantError(Exception):
    """
    Tokyo Tyrant answered a command with a failure status (other than the
    "no such record" or "record exists" a command expects).
    """


class TyrantTimeout(Exception):
    """
    Tokyo Tyrant did not answer within the reply timeout; the connection
    is dropped, since its replies can no longer be matched to requests.
    """


class _Short(Exception):
    """
    The reply is not all here yet.
    """


class _Reader:
    """
    Reads one reply from the front of a buffer; raises :py:class:`_Short`
    when the buffer ends first.
    """

    def __init__(self, buffer: bytearray) -> None:
        self.buffer = buffer
        self.at = 0

    def take(self, size: int) -> bytes:
        end = self.at + size
        if end > len(self.buffer):
            raise _Short()
        data = bytes(self.buffer[self.at : end])
        self.at = end
        return data

    def byte(self) -> int:
        return self.take(1)[0]

    def int32(self) -> int:
        return int(_INT.unpack(self.take(4))[0])

    def signed(self) -> int:
        return int(_SIGNED.unpack(self.take(4))[0])

    def chunk(self) -> bytes:
        return self.take(self.int32())

    def need(self, size: int) -> None:
        if self.at + size > len(self.buffer):
            raise _Short()


def _pack(*parts: bytes | int) -> bytes:
    return b"".join(part if isinstance(part, bytes) else _INT.pack(part) for part in parts)


def _signed(number: int) -> bytes:
    return _SIGNED.pack(number)


# Reply readers: each reads one whole reply or raises _Short.


def _code(reader: _Reader) -> int:
    return reader.byte()


def _value(reader: _Reader) -> bytes | None:
    if reader.byte() != 0:
        return None
    size = reader.int32()
    reader.need(size)
    return reader.take(size)


def _size(reader: _Reader) -> int | None:
    return reader.int32() if reader.byte() == 0 else None


def _records(reader: _Reader) -> tuple[int, dict[bytes, bytes]]:
    code = reader.byte()
    count = reader.int32()
    found = {}
    for _ in range(count):
        key_size, value_size = reader.int32(), reader.int32()
        reader.need(key_size + value_size)
        key = reader.take(key_size)
        found[key] = reader.take(value_size)
    return code, found


def _list(reader: _Reader) -> tuple[int, list[bytes]]:
    code = reader.byte()
    return code, [reader.chunk() for _ in range(reader.int32())]


def _sum(reader: _Reader) -> int | None:
    return reader.signed() if reader.byte() == 0 else None


def _text(reader: _Reader) -> tuple[int, bytes]:
    code = reader.byte()
    return code, reader.chunk()


class TyrantProtocol(Protocol, TimeoutMixin):
    """
    One connection to ttserver.  Each method sends one request and returns
    a Deferred of its answer; requests are pipelined and their replies
    read in order.  A reply not complete within ``timeout`` seconds of the
    last byte received fails every request in flight with
    :py:class:`TyrantTimeout` and drops the connection.

    :ivar closed: the connection is lost.
    """

    closed = False

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self._buffer = bytearray()
        self._waiting: deque[tuple[Callable[[_Reader], Any], defer.Deferred[Any]]] = deque()

    # Twisted's side

    def dataReceived(self, data: bytes) -> None:
        self.resetTimeout()
        self._buffer += data
        while self._waiting:
            read, waiting = self._waiting[0]
            reader = _Reader(self._buffer)
            try:
                answer = read(reader)
            except _Short:
                return
            del self._buffer[: reader.at]
            self._waiting.popleft()
            if not self._waiting:
                self.setTimeout(None)
            waiting.callback(answer)
        if self._buffer:
            # Bytes no request asked for: the replies can no longer be
            # matched, so the connection is of no more use.
            self._fail_all(
                TyrantError(f"unexpected bytes from Tyrant: {bytes(self._buffer[:32])!r}")
            )
            self._transport().loseConnection()

    def timeoutConnection(self) -> None:
        self._fail_all(TyrantTimeout(f"Tyrant did not answer within {self.timeout} s"))
        self._transport().abortConnection()

    @property
    def lost(self) -> bool:
        """
        The connection is lost, or closing: it takes no more requests.
        """
        return self.closed or bool(getattr(self.transport, "disconnecting", False))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed = True
        self.setTimeout(None)
        self._fail_all(reason.value if reason.value is not None else ConnectionDone())

    def _transport(self) -> ITCPTransport:
        return cast(ITCPTransport, self.transport)

    def _fail_all(self, error: BaseException) -> None:
        waiting, self._waiting = self._waiting, deque()
        self._buffer.clear()
        for _, deferred in waiting:
            deferred.errback(Failure(error))

    def _send(
        self, command: int, body: bytes, read: Callable[[_Reader], Any]
    ) -> defer.Deferred[Any]:
        if self.lost:
            return defer.fail(ConnectionDone("the connection to Tyrant is lost"))
        deferred: defer.Deferred[Any] = defer.Deferred()
        if not self._waiting:
            self.setTimeout(self.timeout)
        self._waiting.append((read, deferred))
        self._transport().write(bytes((_MAGIC, command)) + body)
        return deferred

    # The commands

    def put(self, key: bytes, value: bytes) -> defer.Deferred[None]:
        """
        Store ``value`` under ``key``, replacing any record.
        """
        return self._send(PUT, _pack(len(key), len(value), key, value), _code).addCallback(
            _ok, "put", key
        )

    def putkeep(self, key: bytes, value: bytes) -> defer.Deferred[bool]:
        """
        Store ``value`` under ``key`` only if no record is there: True if
        it was stored, False if a record was there.
        """
        return self._send(PUTKEEP, _pack(len(key), len(value), key, value), _code).addCallback(
            lambda code: code == 0
        )

    def out(self, key: bytes) -> defer.Deferred[bool]:
        """
        Remove the record ``key``: True if there was one.
        """
        return self._send(OUT, _pack(len(key), key), _code).addCallback(lambda code: code == 0)

    def get(self, key: bytes) -> defer.Deferred[bytes | None]:
        """
        The value of ``key``, or None.
        """
        return self._send(GET, _pack(len(key), key), _value)

    def mget(self, keys: Sequence[bytes]) -> defer.Deferred[dict[bytes, bytes]]:
        """
        The records found of ``keys``, as a dictionary.
        """
        body = _pack(len(keys), *(part for key in keys for part in (len(key), key)))
        return self._send(MGET, body, _records).addCallback(_checked, "mget")

    def vsiz(self, key: bytes) -> defer.Deferred[int | None]:
        """
        The size of the value of ``key``, or None.
        """
        return self._send(VSIZ, _pack(len(key), key), _size)

    def fwmkeys(self, prefix: bytes, most: int = -1) -> defer.Deferred[list[bytes]]:
        """
        Up to ``most`` keys starting with ``prefix`` (all of them if
        negative), in key order on a B+ tree database.
        """
        body = _pack(len(prefix)) + _signed(most) + prefix
        return self._send(FWMKEYS, body, _list).addCallback(_checked, "fwmkeys")

    def addint(self, key: bytes, number: int) -> defer.Deferred[int]:
        """
        Add ``number`` to the integer record ``key`` (created at 0) and
        answer the sum.
        """

        def summed(total: int | None) -> int:
            if total is None:
                raise TyrantError(f"addint refused on {key!r}: the record is not an integer")
            return total

        body = _pack(len(key)) + _signed(number) + key
        return self._send(ADDINT, body, _sum).addCallback(summed)

    def stat(self) -> defer.Deferred[dict[str, str]]:
        """
        The server's status, as a dictionary of text.
        """

        def parsed(reply: tuple[int, bytes]) -> dict[str, str]:
            lines = reply[1].decode("utf-8", "replace").splitlines()
            return dict(line.split("\t", 1) for line in lines if "\t" in line)

        return self._send(STAT, b"", _text).addCallback(parsed)

    def misc(
        self, name: bytes, args: Sequence[bytes], opts: int = 0
    ) -> defer.Deferred[list[bytes]]:
        """
        The ``misc`` function ``name`` (``putlist``, ``outlist``,
        ``getlist``...) with ``args``; answers its list.
        """
        body = _pack(len(name), opts, len(args), name) + b"".join(
            _INT.pack(len(arg)) + arg for arg in args
        )
        return self._send(MISC, body, _list).addCallback(_checked, name.decode())


def _ok(code: int, command: str, key: bytes) -> None:
    if code != 0:
        raise TyrantError(f"{command} of {key[:100]!r} failed (status {code})")


def _checked(reply: tuple[int, Any], command: str) -> Any:
    code, answer = reply
    if code != 0:
        raise TyrantError(f"{command} failed (status {code})")
    return answer
