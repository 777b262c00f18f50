"""
Results in an SQLite file: the embedded default, needing no server.

The database is reached through :py:obj:`twisted.enterprise.adbapi` on one thread
(SQLite has one writer at a time), in WAL mode so readers in other processes
do not block the daemon's writes.  A batch of outcomes is one transaction.
Expired rows are removed by :py:obj:`SQLiteBackend.delete_expired`.

Documents are stored as BLOBs, byte for byte.  The largest is SQLite's
length limit (``SQLITE_LIMIT_LENGTH``, 1,000,000,000 bytes unless built
otherwise) less 512 bytes for the rest of the row, read when connecting: a
larger document is refused with
:py:class:`~twistedq.backends.base.StoreRefused` before it is written, as
is one SQLite finds too big itself.  A taskset id holding a lone surrogate
(which SQLite's text cannot hold) is stored as a digest of it.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import implementer

from twistedq.backends.base import (
    DEFAULT_RESULT_TTL,
    IClaimStore,
    IFencedLeases,
    IPendingRecords,
    IResultBackend,
    IScheduleStore,
    OutcomeRecord,
    ParkedTask,
    PeriodicState,
    SlotClaim,
    StoreRefused,
    TasksetState,
)
from twistedq.backends.claims import FencedClaims, holds_any
from twistedq.backends.limits import check_sizes, fitted_id

__all__ = ["DEFAULT_PATH", "SQLiteBackend"]

DEFAULT_PATH = "twistedq-results.sqlite3"

#: SQLite's number of its length limit (``sqlite3.SQLITE_LIMIT_LENGTH``).
_LIMIT_LENGTH = 0

#: Room in a row for what is not the document.
_ROW_ROOM = 512

#: A taskset id SQLite's text holds as it is: no lone surrogate.
_SQLITE_TEXT = re.compile(r"[^\ud800-\udfff]*")

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS twistedq_result (
        task_id TEXT PRIMARY KEY,
        document BLOB NOT NULL,
        expires_at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS twistedq_taskset (
        taskset_id TEXT PRIMARY KEY,
        total INTEGER NOT NULL,
        expires_at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS twistedq_taskset_member (
        taskset_id TEXT NOT NULL,
        task_id TEXT NOT NULL,
        failed INTEGER NOT NULL,
        PRIMARY KEY (taskset_id, task_id)
    )""",
    """CREATE TABLE IF NOT EXISTS twistedq_claim (
        task_id TEXT PRIMARY KEY,
        token INTEGER NOT NULL,
        lease_until REAL NOT NULL,
        expires_at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS twistedq_parked (
        task_id TEXT PRIMARY KEY,
        token INTEGER NOT NULL,
        queue TEXT NOT NULL,
        body BLOB NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS twistedq_periodic_slot (
        slot_key TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        done INTEGER NOT NULL DEFAULT 0,
        expires_at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS twistedq_periodic (
        name TEXT PRIMARY KEY,
        enabled INTEGER NOT NULL DEFAULT 1,
        last_run_at REAL,
        total_run_count INTEGER NOT NULL DEFAULT 0,
        next_run_at REAL
    )""",
]


def _open(connection: sqlite3.Connection) -> None:
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA busy_timeout=10000")
    for statement in _SCHEMA:
        connection.execute(statement)
    connection.commit()


def _live_document(cursor: sqlite3.Cursor, task_id: str, now: float) -> bytes | None:
    cursor.execute(
        "SELECT document FROM twistedq_result WHERE task_id = ? AND expires_at > ?",
        (task_id, now),
    )
    row = cursor.fetchone()
    return None if row is None else bytes(row[0])


@implementer(IResultBackend, IScheduleStore, IClaimStore, IFencedLeases, IPendingRecords)
class SQLiteBackend(FencedClaims):
    """
    A result backend in one SQLite file.

    :ivar max_document_size: the largest document it writes, in bytes:
        SQLite's length limit less 512 once connected, unless given.
    """

    def __init__(
        self,
        path: str,
        reactor: Any,
        ttl: int = DEFAULT_RESULT_TTL,
        max_document_size: int | None = None,
    ) -> None:
        self.path = os.path.abspath(path)
        self.url = f"sqlite:///{self.path}"
        self.ttl = ttl
        self._max_given = max_document_size
        self.max_document_size = max_document_size or 1_000_000_000 - _ROW_ROOM
        self._reactor = reactor
        self._pool: adbapi.ConnectionPool | None = None

    @classmethod
    def from_url(cls, url: str, reactor: Any, ttl: int = DEFAULT_RESULT_TTL) -> SQLiteBackend:
        """
        Build from ``sqlite:///relative/path``, ``sqlite:////absolute/path`` or
        ``sqlite://`` (the default file in the working directory).
        """
        path = unquote(urlsplit(url).path)
        path = path[1:] if path.startswith("/") else path
        return cls(path or DEFAULT_PATH, reactor, ttl=ttl)

    def connect(self) -> defer.Deferred[None]:
        self._pool = adbapi.ConnectionPool(
            "sqlite3",
            self.path,
            check_same_thread=False,
            cp_min=1,
            cp_max=1,
            cp_openfun=_open,
            cp_reactor=self._reactor,
        )
        return self._pool.runInteraction(self._read_limit)

    def _read_limit(self, cursor: sqlite3.Cursor) -> None:
        # Connection.getlimit is Python 3.11's; before, the default is assumed.
        getlimit = getattr(cursor.connection, "getlimit", None)
        if self._max_given is None and getlimit is not None:
            self.max_document_size = getlimit(_LIMIT_LENGTH) - _ROW_ROOM

    def _written(
        self, records: Sequence[tuple[str, bytes]], write: Any, *args: Any
    ) -> defer.Deferred[Any]:
        """
        Run the interaction ``write`` of these documents, unless one is over
        the limit; SQLite's own refusal of a value as too big is a
        StoreRefused too.
        """
        try:
            check_sizes(records, self.max_document_size, self.url)
        except StoreRefused:
            return defer.fail()

        def refused(failure: Failure) -> None:
            failure.trap(sqlite3.DataError)
            task_id = records[0][0] if len(records) == 1 else None
            raise StoreRefused(f"{self.url} refused a value: {failure.value}", task_id)

        return self._require_pool().runInteraction(write, *args).addErrback(refused)

    def _taskset(self, taskset_id: str) -> str:
        return fitted_id(taskset_id, len(taskset_id) + 65, _SQLITE_TEXT)

    def _require_pool(self) -> adbapi.ConnectionPool:
        if self._pool is None:
            raise RuntimeError(f"the result store {self.url} is not connected")
        return self._pool

    def store_results(self, records: Sequence[OutcomeRecord]) -> defer.Deferred[None]:
        documents = [(record.task_id, record.document) for record in records]
        return self._written(documents, self._write_outcomes, list(records))

    def _write_outcomes(self, cursor: sqlite3.Cursor, records: list[OutcomeRecord]) -> None:
        expires_at = time.time() + self.ttl
        rows = [(r.task_id, r.document, expires_at) for r in records]
        members = [
            (self._taskset(r.taskset), r.task_id, int(r.failed)) for r in records if r.taskset
        ]
        cursor.executemany("INSERT OR REPLACE INTO twistedq_result VALUES (?, ?, ?)", rows)
        if members:
            cursor.executemany(
                "INSERT OR REPLACE INTO twistedq_taskset_member VALUES (?, ?, ?)", members
            )

    # task claims: one row per task, its latest token kept as its fence

    def take_leases(
        self, task_ids: Sequence[str], lease: float, unless: Sequence[bytes] = ()
    ) -> defer.Deferred[list[tuple[int | None, bytes | None]]]:
        def take(cursor: sqlite3.Cursor) -> list[tuple[int | None, bytes | None]]:
            # Take the write lock before reading, so that of two daemons
            # claiming one task, the second sees the first's claim.
            cursor.execute("BEGIN IMMEDIATE")
            now = time.time()
            answers: list[tuple[int | None, bytes | None]] = []
            for task_id in task_ids:
                document = _live_document(cursor, task_id, now)
                cursor.execute(
                    "SELECT token, lease_until FROM twistedq_claim WHERE task_id = ?", (task_id,)
                )
                row = cursor.fetchone()
                token = None
                if (row is None or row[1] <= now) and not holds_any(document, unless):
                    token = (row[0] if row is not None else 0) + 1
                    cursor.execute(
                        "INSERT OR REPLACE INTO twistedq_claim VALUES (?, ?, ?, ?)",
                        (task_id, token, now + lease, now + self.ttl),
                    )
                answers.append((token, document))
            return answers

        return self._require_pool().runInteraction(take)

    def extend_leases(
        self, claims: Sequence[tuple[str, int]], lease: float
    ) -> defer.Deferred[list[bool]]:
        def renew(cursor: sqlite3.Cursor) -> list[bool]:
            now = time.time()
            renewed = []
            for task_id, token in claims:
                cursor.execute(
                    "UPDATE twistedq_claim SET lease_until = ?, expires_at = ?"
                    " WHERE task_id = ? AND token = ? AND lease_until > ?",
                    (now + lease, now + self.ttl, task_id, token, now),
                )
                renewed.append(cursor.rowcount == 1)
            return renewed

        return self._require_pool().runInteraction(renew)

    def end_leases(self, claims: Sequence[tuple[str, int]]) -> defer.Deferred[None]:
        def release(cursor: sqlite3.Cursor) -> None:
            cursor.executemany(
                "UPDATE twistedq_claim SET lease_until = 0 WHERE task_id = ? AND token = ?",
                list(claims),
            )

        return self._require_pool().runInteraction(release)

    def commit_fenced(
        self, records: Sequence[OutcomeRecord], tokens: Sequence[int]
    ) -> defer.Deferred[list[bool]]:
        def commit(cursor: sqlite3.Cursor) -> list[bool]:
            committed = []
            for record, token in zip(records, tokens, strict=True):
                cursor.execute(
                    "UPDATE twistedq_claim SET lease_until = 0 WHERE task_id = ? AND token = ?",
                    (record.task_id, token),
                )
                committed.append(cursor.rowcount == 1)
            done = [r for r, ok in zip(records, committed, strict=True) if ok]
            self._write_outcomes(cursor, done)
            cursor.executemany(
                "DELETE FROM twistedq_parked WHERE task_id = ?", [(r.task_id,) for r in done]
            )
            return committed

        return self._written([(r.task_id, r.document) for r in records], commit)

    def mark_sent(self, records: Sequence[tuple[str, bytes]]) -> defer.Deferred[None]:
        expires_at = time.time() + self.ttl
        rows = [(task_id, document, expires_at) for task_id, document in records]

        def write(cursor: sqlite3.Cursor) -> None:
            cursor.executemany("INSERT OR IGNORE INTO twistedq_result VALUES (?, ?, ?)", rows)

        return self._written(records, write)

    def unmark_sent(self, records: Sequence[tuple[str, bytes]]) -> defer.Deferred[None]:
        pool = self._require_pool()
        rows = list(records)

        def delete(cursor: sqlite3.Cursor) -> None:
            cursor.executemany(
                "DELETE FROM twistedq_result WHERE task_id = ? AND document = ?", rows
            )

        return pool.runInteraction(delete)

    def forget(self, task_ids: Sequence[str]) -> defer.Deferred[None]:
        pool = self._require_pool()
        rows = [(task_id,) for task_id in task_ids]

        def delete(cursor: sqlite3.Cursor) -> None:
            cursor.executemany("DELETE FROM twistedq_result WHERE task_id = ?", rows)

        return pool.runInteraction(delete)

    def create_taskset(self, taskset_id: str, total: int) -> defer.Deferred[None]:
        pool = self._require_pool()
        row = (self._taskset(taskset_id), total, time.time() + self.ttl)

        def write(cursor: sqlite3.Cursor) -> None:
            cursor.execute("INSERT OR REPLACE INTO twistedq_taskset VALUES (?, ?, ?)", row)

        return pool.runInteraction(write)

    def get_taskset(self, taskset_id: str) -> defer.Deferred[TasksetState | None]:
        pool = self._require_pool()

        def read(cursor: sqlite3.Cursor) -> TasksetState | None:
            cursor.execute(
                "SELECT total,"
                " (SELECT COUNT(*) FROM twistedq_taskset_member m"
                "  WHERE m.taskset_id = t.taskset_id),"
                " (SELECT COUNT(*) FROM twistedq_taskset_member m"
                "  WHERE m.taskset_id = t.taskset_id AND m.failed)"
                " FROM twistedq_taskset t WHERE taskset_id = ? AND expires_at > ?",
                (self._taskset(taskset_id), time.time()),
            )
            row = cursor.fetchone()
            return None if row is None else TasksetState(*row)

        return pool.runInteraction(read)

    def get_result(self, task_id: str) -> defer.Deferred[bytes | None]:
        return self.get_results([task_id]).addCallback(lambda found: found[0])

    def get_results(self, task_ids: Sequence[str]) -> defer.Deferred[list[bytes | None]]:
        pool = self._require_pool()
        ids = list(task_ids)

        def read(cursor: sqlite3.Cursor) -> list[bytes | None]:
            found: dict[str, bytes] = {}
            now = time.time()
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                cursor.execute(
                    f"SELECT task_id, document FROM twistedq_result "
                    f"WHERE task_id IN ({marks}) AND expires_at > ?",
                    (*chunk, now),
                )
                for task_id, document in cursor.fetchall():
                    found[task_id] = bytes(document)
            return [found.get(task_id) for task_id in ids]

        return pool.runInteraction(read)

    def delete_expired(self) -> defer.Deferred[int]:
        """
        Remove expired outcomes; fires with how many were removed.
        """
        pool = self._require_pool()

        def delete(cursor: sqlite3.Cursor) -> int:
            now = time.time()
            cursor.execute("DELETE FROM twistedq_result WHERE expires_at <= ?", (now,))
            removed = cursor.rowcount
            cursor.execute(
                "DELETE FROM twistedq_taskset_member WHERE taskset_id IN"
                " (SELECT taskset_id FROM twistedq_taskset WHERE expires_at <= ?)",
                (now,),
            )
            cursor.execute("DELETE FROM twistedq_taskset WHERE expires_at <= ?", (now,))
            cursor.execute("DELETE FROM twistedq_periodic_slot WHERE expires_at <= ?", (now,))
            cursor.execute(
                "DELETE FROM twistedq_claim WHERE expires_at <= ? AND lease_until <= ?", (now, now)
            )
            return removed

        return pool.runInteraction(delete)

    def park_leased(self, parked: Sequence[ParkedTask]) -> defer.Deferred[list[bool]]:
        def park(cursor: sqlite3.Cursor) -> list[bool]:
            cursor.execute("BEGIN IMMEDIATE")
            answers = []
            for task in parked:
                cursor.execute(
                    "SELECT 1 FROM twistedq_claim WHERE task_id = ? AND token = ?"
                    " AND lease_until > ?",
                    (task.task_id, task.token, time.time()),
                )
                current = cursor.fetchone() is not None
                if current:
                    cursor.execute(
                        "INSERT OR REPLACE INTO twistedq_parked VALUES (?, ?, ?, ?)",
                        (task.task_id, task.token, task.queue, task.body),
                    )
                answers.append(current)
            return answers

        return self._require_pool().runInteraction(park)

    def unleased_parked(self, most: int) -> defer.Deferred[list[tuple[ParkedTask, bytes | None]]]:
        def find(cursor: sqlite3.Cursor) -> list[tuple[ParkedTask, bytes | None]]:
            now = time.time()
            cursor.execute(
                "SELECT p.task_id, p.token, p.queue, p.body, r.document"
                " FROM twistedq_parked p"
                " LEFT JOIN twistedq_claim c ON c.task_id = p.task_id"
                " LEFT JOIN twistedq_result r ON r.task_id = p.task_id AND r.expires_at > ?"
                " WHERE c.lease_until IS NULL OR c.lease_until <= ? LIMIT ?",
                (now, now, most),
            )
            return [
                (ParkedTask(task_id, token, queue, bytes(body)), document)
                for task_id, token, queue, body, document in cursor.fetchall()
            ]

        return self._require_pool().runInteraction(find)

    def drop_parked(self, task_ids: Sequence[str]) -> defer.Deferred[None]:
        return self._require_pool().runInteraction(
            lambda cursor: cursor.executemany(
                "DELETE FROM twistedq_parked WHERE task_id = ?", [(i,) for i in task_ids]
            )
        )

    # periodic schedules

    def claim_slot(self, key: str, owner: str, lease: float) -> defer.Deferred[SlotClaim]:
        def claim(cursor: sqlite3.Cursor) -> SlotClaim:
            now = time.time()
            cursor.execute(
                "DELETE FROM twistedq_periodic_slot WHERE slot_key = ? AND expires_at <= ?",
                (key, now),
            )
            cursor.execute(
                "INSERT OR IGNORE INTO twistedq_periodic_slot (slot_key, owner, expires_at)"
                " VALUES (?, ?, ?)",
                (key, owner, now + lease),
            )
            if cursor.rowcount == 1:
                return SlotClaim.WON
            cursor.execute("SELECT done FROM twistedq_periodic_slot WHERE slot_key = ?", (key,))
            (done,) = cursor.fetchone()
            return SlotClaim.DONE if done else SlotClaim.HELD

        return self._require_pool().runInteraction(claim)

    def release_slot(self, key: str, owner: str) -> defer.Deferred[None]:
        return self._require_pool().runOperation(
            "DELETE FROM twistedq_periodic_slot WHERE slot_key = ? AND owner = ? AND done = 0",
            (key, owner),
        )

    def commit_slot(
        self, key: str, name: str, slot: float, next_run_at: float, keep: float
    ) -> defer.Deferred[None]:
        def commit(cursor: sqlite3.Cursor) -> None:
            cursor.execute(
                "INSERT OR REPLACE INTO twistedq_periodic_slot"
                " (slot_key, owner, done, expires_at) VALUES (?, '', 1, ?)",
                (key, time.time() + keep),
            )
            cursor.execute(
                "INSERT INTO twistedq_periodic (name, last_run_at, total_run_count, next_run_at)"
                " VALUES (?, ?, 1, ?) ON CONFLICT (name) DO UPDATE SET"
                " last_run_at = max(coalesce(last_run_at, excluded.last_run_at),"
                " excluded.last_run_at),"
                " total_run_count = total_run_count + 1, next_run_at = excluded.next_run_at",
                (name, slot, next_run_at),
            )

        return self._require_pool().runInteraction(commit)

    def note_schedule(self, name: str, next_run_at: float) -> defer.Deferred[None]:
        return self._require_pool().runOperation(
            "INSERT INTO twistedq_periodic (name, next_run_at) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET next_run_at = excluded.next_run_at",
            (name, next_run_at),
        )

    def get_periodic_states(self, names: Sequence[str]) -> defer.Deferred[dict[str, PeriodicState]]:
        def read(cursor: sqlite3.Cursor) -> dict[str, PeriodicState]:
            states = {}
            for name in names:
                cursor.execute(
                    "SELECT enabled, last_run_at, total_run_count, next_run_at"
                    " FROM twistedq_periodic WHERE name = ?",
                    (name,),
                )
                row = cursor.fetchone()
                if row is not None:
                    enabled, last_run_at, count, next_run_at = row
                    states[name] = PeriodicState(
                        name, bool(enabled), last_run_at, count, next_run_at
                    )
            return states

        return self._require_pool().runInteraction(read)

    def set_periodic_enabled(self, name: str, enabled: bool) -> defer.Deferred[None]:
        return self._require_pool().runOperation(
            "INSERT INTO twistedq_periodic (name, enabled) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET enabled = excluded.enabled",
            (name, int(enabled)),
        )

    def close(self) -> defer.Deferred[None]:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.close()
        return defer.succeed(None)
