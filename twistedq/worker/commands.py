"""
The AMP commands between the daemon and its child processes.

One AMP value holds at most 65,535 bytes; :py:obj:`ChunkedBytes` carries values of
any size by splitting them over several keys, so large arguments and
results travel in the same call.  Batches of task bodies and of outcome
documents are packed by :py:obj:`pack`/:py:obj:`unpack` as length-prefixed records, so
nothing is parsed or re-encoded on the way.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

from twisted.protocols import amp

__all__ = [
    "ChunkedBytes",
    "Hello",
    "RunTasks",
    "Shutdown",
    "pack",
    "unpack",
]

_CHUNK = 0xFFFF
_LENGTH = struct.Struct("!I")


class ChunkedBytes(amp.Argument):
    """
    A ``bytes`` value of any size, sent as ``name``, ``name.1``, ``name.2`` ...
    each at most one AMP value long.
    """

    def toBox(
        self, name: bytes, strings: dict[bytes, bytes], objects: dict[str, Any], proto: Any
    ) -> None:
        value = objects[name.decode("ascii")]
        strings[name] = value[:_CHUNK]
        for index, start in enumerate(range(_CHUNK, len(value), _CHUNK), 1):
            strings[name + b".%d" % index] = value[start : start + _CHUNK]

    def fromBox(
        self, name: bytes, strings: dict[bytes, bytes], objects: dict[str, Any], proto: Any
    ) -> None:
        parts = [strings[name]]
        index = 1
        while (key := name + b".%d" % index) in strings:
            parts.append(strings[key])
            index += 1
        objects[name.decode("ascii")] = b"".join(parts)


def pack(records: Iterable[bytes]) -> bytes:
    """
    Join byte strings into one, each preceded by its length.
    """
    return b"".join(_LENGTH.pack(len(record)) + record for record in records)


def unpack(data: bytes) -> list[bytes]:
    """
    Split what :py:obj:`pack` joined.

    :raises ValueError: the data is not a sequence of records.
    """
    records = []
    offset = 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise ValueError("truncated record length")
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += 4
        if offset + length > len(data):
            raise ValueError("truncated record")
        records.append(data[offset : offset + length])
        offset += length
    return records


class Hello(amp.Command):
    """
    Asked of a child once it started: who it is and what it can run.
    ``tasks`` is a JSON object: task name to ``[soft_time_limit,
    time_limit]`` (seconds or null).  ``periodic`` is a JSON object:
    periodic task name to its schedule
    (:py:meth:`twistedq.task.PeriodicTask.schedule_spec`).
    """

    arguments = []
    response = [
        (b"pid", amp.Integer()),
        (b"tasks", ChunkedBytes()),
        (b"periodic", ChunkedBytes()),
    ]


class RunTasks(amp.Command):
    """
    Run a batch of tasks, one after the other, in the child.

    ``bodies`` is message bodies joined by :py:obj:`pack`; the answer
    ``outcomes`` is the outcome documents joined by :py:obj:`pack`, in the same
    order, and ``rss`` the child's resident memory afterwards, in KiB.  A
    task's own exception is an outcome, not an AMP error.

    ``max_rss`` (KiB, optional): the child stops after a task that leaves
    its resident memory above it, before the next task of the batch; it
    then answers fewer outcomes than bodies, those of the tasks it ran.
    ``max_result_size`` (bytes, optional): an outcome document longer than
    this becomes a ``ResultTooLarge`` failure in the child
    (:py:class:`twistedq.exceptions.ResultTooLarge`), so the value never
    crosses the pipe.
    """

    arguments = [
        (b"bodies", ChunkedBytes()),
        (b"max_rss", amp.Integer(optional=True)),
        (b"max_result_size", amp.Integer(optional=True)),
    ]
    response = [(b"outcomes", ChunkedBytes()), (b"rss", amp.Integer())]


class Shutdown(amp.Command):
    """
    Ask a child to exit once its current work is done.
    """

    arguments = []
    response = []
    requiresAnswer = False
