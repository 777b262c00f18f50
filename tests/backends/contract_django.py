"""
The contract on the Django database backend.  Django's settings are global
to a process, so ``test_django_stores`` runs this module in a trial process
of its own per database, with ``DJANGO_SETTINGS_MODULE`` and
``CLICKCOUNTER_DATABASE_URL`` set.
"""

from __future__ import annotations

import django
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from tests.backends.contract import BackendContract, ClaimStoreContract, ScheduleStoreContract
from twistedq.backends.base import IResultBackend

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
