"""
The contract on the Django database backend.  Django's settings are global
to a process, so ``test_django_stores`` runs this module in a trial process
of its own per database, with ``DJANGO_SETTINGS_MODULE`` and
``CLICKCOUNTER_DATABASE_URL`` set.
"""

from __future__ import annotations

import json

import django
from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from tests.backends.contract import (
    ODD_TEXT,
    BackendContract,
    ClaimStoreContract,
    ScheduleStoreContract,
    odd_documents,
)
from twistedq.backends.base import IResultBackend, OutcomeRecord, StoreRefused
from twistedq.message import new_task_id
from twistedq.outcome import success_document

_migrated = False


class DjangoContractTests(BackendContract, ScheduleStoreContract, ClaimStoreContract, TestCase):
    expiry_slack = 0.3

    def setUp(self) -> None:
        global _migrated
        django.setup()
        if not _migrated:
            from django.core.management import call_command

            call_command("migrate", verbosity=0)
            _migrated = True

    def make_backend(self, ttl: int) -> IResultBackend:
        from twistedq.contrib.django.store import DjangoBackend

        return DjangoBackend(reactor, ttl=ttl)

    async def test_delete_expired(self) -> None:
        """
        The cleanup removes expired outcomes and tasksets.
        """
        from twisted.internet.task import deferLater

        from twistedq.backends.base import OutcomeRecord
        from twistedq.message import new_task_id
        from twistedq.outcome import success_document

        backend = await self.backend(ttl=1)
        ids = [new_task_id() for _ in range(5)]
        await backend.store_results([OutcomeRecord(i, success_document(i, "t", 1)) for i in ids])
        await backend.create_taskset(new_task_id(), 5)
        await deferLater(reactor, 1.2, lambda: None)
        self.assertGreaterEqual(await backend.delete_expired(), 5)
        self.assertEqual(await backend.get_results(ids), [None] * 5)

    async def test_admin_columns_hold_odd_text(self) -> None:
        """
        The columns that repeat parts of an outcome for the admin hold
        what the database can of odd text: a NUL and lone surrogates as
        backslash escapes, the name cut to its column; the document, and
        the model's ``result``, keep it all.
        """
        from twistedq.contrib.django.models import TaskResult

        backend = await self.backend()
        ok, bad = new_task_id(), new_task_id()
        documents = odd_documents(ok, bad)
        await backend.store_results(
            [OutcomeRecord(ok, documents[0]), OutcomeRecord(bad, documents[1])]
        )
        rows = await deferToThread(
            lambda: {row.task_id: row for row in TaskResult.objects.filter(task_id__in=[ok, bad])}
        )
        escaped = "nul\\x00 high\\ud800 low\\udfff astral"
        self.assertTrue(rows[ok].task_name.startswith("task " + escaped))
        self.assertEqual(len(rows[ok].task_name), 255)
        self.assertIn("ValueError: " + escaped, rows[bad].traceback)
        self.assertNotIn("\x00", rows[bad].traceback)
        self.assertEqual(rows[ok].result, {ODD_TEXT: [ODD_TEXT]})
        self.assertEqual(rows[bad].result, ODD_TEXT)

    async def test_refused_by_the_database(self) -> None:
        """
        A write the database refuses for good (here a task id longer than
        its column, where the database checks lengths) is a StoreRefused
        naming the task, not an outage; the store serves on.
        """
        from django.db import connections

        backend = await self.backend()
        long_id = new_task_id() + "-far-too-long"
        written = backend.store_results([OutcomeRecord(long_id, success_document(long_id, "t", 1))])
        if connections["default"].vendor == "sqlite":  # SQLite checks no length
            await written
        else:
            self.assertEqual((await self.assertFailure(written, StoreRefused)).task_id, long_id)
        fine = new_task_id()
        document = success_document(fine, "t", 1)
        await backend.store_results([OutcomeRecord(fine, document)])
        self.assertEqual(await backend.get_result(fine), document)

    async def test_limit_read_from_the_database(self) -> None:
        """
        The largest document is a quarter of the database's largest
        statement: MySQL's max_allowed_packet, SQLite's length limit,
        PostgreSQL's 1 GiB.
        """
        from django.db import connections

        backend = await self.backend()
        vendor = connections["default"].vendor
        if vendor == "mysql":

            def packet() -> int:
                with connections["default"].cursor() as cursor:
                    cursor.execute("SELECT @@max_allowed_packet")
                    return int(cursor.fetchone()[0])

            statement = await deferToThread(packet)
        elif vendor == "sqlite":
            statement = 1_000_000_000
        else:
            statement = 1024 * 1024 * 1024
        self.assertEqual(backend.max_document_size, statement // 4)

    async def test_packet_refused_by_mysql(self) -> None:
        """
        On MySQL, a statement over max_allowed_packet (the store's limit
        set higher) is refused by the server: a StoreRefused naming the
        task, and the store serves again on a new connection.
        """
        from django.db import connections

        if connections["default"].vendor != "mysql":
            raise SkipTest("MySQL's max_allowed_packet")
        backend = await self.backend()
        packet = backend.max_document_size * 4
        backend.max_document_size = 2 * packet
        big = new_task_id()
        document = success_document(big, "t", "x" * (packet + 1024))
        refused = backend.store_results([OutcomeRecord(big, document)])
        error = await self.assertFailure(refused, StoreRefused)
        self.assertEqual(error.task_id, big)
        self.assertIn("max_allowed_packet", str(error))
        fine = new_task_id()
        small = success_document(fine, "t", 1)
        await backend.store_results([OutcomeRecord(fine, small)])
        self.assertEqual(await backend.get_results([fine, big]), [small, None])

    async def test_narrow_mysql_columns(self) -> None:
        """
        On MySQL columns in utf8mb3 (MySQL's old "utf8"), which lack
        characters past U+FFFF, odd outcomes are stored all the same: the
        document whole (a raw UTF-8 one escaped to the same JSON value),
        the admin columns with those characters as backslash escapes.
        """
        from django.db import connections

        if connections["default"].vendor != "mysql":
            raise SkipTest("MySQL's character sets")

        def columns(charset: str) -> None:
            with connections["default"].cursor() as cursor:
                # Not strict: rows of earlier tests whose characters utf8mb3
                # lacks are converted with '?', not refused.
                cursor.execute("SET SESSION sql_mode = ''")
                cursor.execute(
                    "ALTER TABLE twistedq_taskresult"
                    f" MODIFY task_name varchar(255) CHARACTER SET {charset} NOT NULL,"
                    f" MODIFY document longtext CHARACTER SET {charset} NOT NULL,"
                    f" MODIFY traceback longtext CHARACTER SET {charset} NOT NULL"
                )
            connections["default"].close()

        self.addCleanup(deferToThread, columns, "utf8mb4")
        await deferToThread(columns, "utf8mb3")
        backend = await self.backend()
        ok, bad, raw = new_task_id(), new_task_id(), new_task_id()
        documents = odd_documents(ok, bad)
        raw_doc = json.dumps(
            {"id": raw, "task": "t \U0001f600", "status": "SUCCESS", "result": "\U0001f600 é"},
            ensure_ascii=False,
        ).encode("utf-8")
        await backend.store_results(
            [
                OutcomeRecord(ok, documents[0]),
                OutcomeRecord(bad, documents[1]),
                OutcomeRecord(raw, raw_doc),
            ]
        )
        found = await backend.get_results([ok, bad, raw])
        self.assertEqual(found[:2], documents)
        self.assertEqual(json.loads(found[2]), json.loads(raw_doc))

        from twistedq.contrib.django.models import TaskResult

        names = await deferToThread(
            lambda: dict(
                TaskResult.objects.filter(task_id__in=[ok, raw]).values_list("task_id", "task_name")
            )
        )
        self.assertIn("astral\\U0001f600 é", names[ok])
        self.assertEqual(names[raw], "t \\U0001f600")

    async def test_batch_over_one_statement(self) -> None:
        """
        A batch of outcomes each under the limit but together over the
        database's largest statement (MySQL's max_allowed_packet) is
        stored whole, in several statements of one transaction.
        """
        from django.db import connections

        if connections["default"].vendor != "mysql":
            raise SkipTest("MySQL's max_allowed_packet")
        backend = await self.backend()
        size = backend.max_document_size * 9 // 10
        ids = [new_task_id() for _ in range(5)]
        records = [OutcomeRecord(i, success_document(i, "t", "x" * (size - 200))) for i in ids]
        await backend.store_results(records)
        self.assertEqual(await backend.get_results(ids), [record.document for record in records])

    async def test_result_details(self) -> None:
        """
        The columns the admin shows: the arguments an outcome keeps (whole
        as JSON text, cut as the cut text), the taskset it counts in and
        the daemon that stored it; a pending record keeps none.
        """
        from twistedq.arguments import with_arguments
        from twistedq.contrib.django.models import TaskResult
        from twistedq.outcome import pending_document

        backend = await self.backend()
        backend.worker = "daemon-7"
        whole, cut, pending, taskset = new_task_id(), new_task_id(), new_task_id(), new_task_id()
        await backend.mark_sent([(pending, pending_document(pending, "t"))])
        outcome = success_document(whole, "t", 3)
        await backend.store_results(
            [
                OutcomeRecord(whole, with_arguments(outcome, [1, "é"], {"k": None}, 100), taskset),
                OutcomeRecord(cut, with_arguments(outcome, ["x" * 50], {}, 10)),
            ]
        )
        rows = await deferToThread(
            lambda: {
                row.task_id: row
                for row in TaskResult.objects.filter(task_id__in=[whole, cut, pending])
            }
        )
        self.assertEqual(json.loads(rows[whole].task_args), [1, "é"])
        self.assertEqual(json.loads(rows[whole].task_kwargs), {"k": None})
        self.assertEqual(rows[whole].taskset_id, taskset)
        self.assertEqual(rows[whole].worker, "daemon-7")
        self.assertEqual(rows[cut].task_args, '["xxxxxxxx\u2026')
        self.assertEqual((rows[cut].task_kwargs, rows[cut].taskset_id), ("{}", ""))
        self.assertEqual((rows[pending].task_args, rows[pending].worker), ("", ""))

    async def test_periodic_task_marked(self) -> None:
        """
        A slot's commit names its periodic task on the task's result row:
        on the outcome stored before it, or on a pending record made for
        it, which the outcome then keeps.
        """
        from twistedq.contrib.django.models import TaskResult

        backend = await self.backend()
        before, after = new_task_id(), new_task_id()
        await backend.store_results([OutcomeRecord(before, success_document(before, "t", 1))])
        for key in (before, after):
            await backend.commit_slot(key, "every-minute", 1.8e9, 1.8e9 + 60, 60)
        pending = await deferToThread(
            lambda: TaskResult.objects.values_list("status", flat=True).get(task_id=after)
        )
        self.assertEqual(pending, "PENDING")
        await backend.store_results([OutcomeRecord(after, success_document(after, "t", 2))])
        rows = await deferToThread(
            lambda: dict(
                TaskResult.objects.filter(task_id__in=[before, after]).values_list(
                    "task_id", "periodic_task"
                )
            )
        )
        self.assertEqual(rows, {before: "every-minute", after: "every-minute"})
