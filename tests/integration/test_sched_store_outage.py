"""
An outage of the result store (which holds the slot claims) under a
periodic task, on the real RabbitMQ and Redis, with two daemons: Redis
stopped for 22 s under a five-second task, as an outside tester did.
While it is down the store keeps the daemons' claims waiting (and gives
up on each after ten seconds, the command left to run); when it is back
they are all answered at once.  The slots that came due meanwhile still
follow the task's catch-up policy across the daemons: one run for the
gap under ``"once"``, none under ``"skip"``, and every slot on time
again once Redis is back.

The test stops and starts the Redis of ``scripts/services`` (the one its
``TWISTEDQ_REDIS_PORT`` and ``TWISTEDQ_SERVICES_DIR`` name).
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from pathlib import Path

from twisted.trial.unittest import TestCase

from tests.integration.servers import Daemon, redis_url, server_url, services, unique_queue
from twistedq.scheduler import slot_task_id

#: The task's period, in seconds.
EVERY = 5
#: Seconds Redis stays down.
DOWN_FOR = 22.0


class StoreOutageTests(TestCase):
    timeout = 240

    def outage(self, catch_up: str) -> tuple[Counter[float], list[int], list[int], list[int], str]:
        """
        Run two daemons under a five-second task with ``catch_up``, stop
        Redis for 22 s, start it again, and wait 30 s more.  Answers the
        runs of each slot; the slots that came due while Redis was surely
        down (before it was started again); those due until it was surely
        back (the restart returned); those due from 10 s after; and the
        daemons' logs.
        """
        server_url("TWISTEDQ_TEST_AMQP_URL")
        server_url("TWISTEDQ_TEST_REDIS_URL")
        directory = Path(tempfile.mkdtemp(prefix="twistedq-store-outage-"))
        beats = directory / "beats"
        name = f"tests.beat.{unique_queue()}"
        queue = unique_queue()
        daemons = []
        for number in range(2):
            home = directory / f"daemon-{number}"
            home.mkdir()
            daemon = Daemon(
                home,
                queue,
                redis_url(),
                concurrency=1,
                tasks="tests.integration.periodic_tasks",
                env={
                    "TWISTEDQ_TEST_BEAT_FILE": str(beats),
                    "TWISTEDQ_TEST_BEAT_NAME": name,
                    "TWISTEDQ_TEST_BEAT_EVERY": str(EVERY),
                    "TWISTEDQ_TEST_BEAT_CATCH_UP": catch_up,
                },
            )
            self.addCleanup(daemon.stop)
            daemons.append(daemon)
        for daemon in daemons:
            daemon.wait_ready()
        # Stop Redis just after a slot, so that the outage spans whole slots.
        time.sleep(EVERY + 1 - time.time() % EVERY)
        services("stop", "redis")
        try:
            down_from = time.time()
            time.sleep(DOWN_FOR)
            restart = time.time()
        finally:
            services("restart", "redis")
        back = time.time()
        time.sleep(30)
        end = time.time()
        for daemon in daemons:
            daemon.stop()
        logs = "\n".join(daemon.log()[-3000:] for daemon in daemons)
        runs: Counter[float] = Counter()
        slots = {
            slot_task_id(name, float(slot)): float(slot)
            for slot in range(int(down_from) - 60, int(end) + 1)
            if slot % EVERY == 0
        }
        for line in beats.read_text().splitlines():
            runs[slots[line.split()[0]]] += 1
        down = [slot for slot in range(int(down_from) + 1, int(restart) + 1) if slot % EVERY == 0]
        # The daemons see Redis back when they reconnect, up to 10 s after
        # it is (their reconnection backs off): the slot due then stands for
        # the gap.
        gap = [slot for slot in range(int(down_from) + 1, int(back) + 11) if slot % EVERY == 0]
        later = [slot for slot in range(int(back) + 10, int(end) - 2) if slot % EVERY == 0]
        return runs, down, gap, later, logs

    def test_store_outage_runs_the_gap_once(self) -> None:
        """
        ``catch_up="once"``: of the slots that came due while Redis was
        down, at most one runs between the two daemons, and one of those
        due until the daemons see it back does (the latest due then: the
        first after the outage when they reconnect after it came due); no
        slot runs twice; every slot from 10 s after Redis is back runs.
        """
        runs, down, gap, later, logs = self.outage("once")
        self.assertEqual(set(runs.values()), {1}, f"a slot ran twice: {runs}\n{logs}")
        ran_down = [slot for slot in down if slot in runs]
        self.assertLessEqual(len(ran_down), 1, f"slots of the outage {down} that ran: {ran_down}")
        self.assertNotEqual([slot for slot in gap if slot in runs], [], logs)
        self.assertEqual([slot for slot in later if slot not in runs], [], logs)

    def test_store_outage_skip(self) -> None:
        """
        ``catch_up="skip"``: none of the slots that came due while Redis
        was down runs; every slot from 10 s after it is back runs, once.
        """
        runs, down, _, later, logs = self.outage("skip")
        self.assertEqual(set(runs.values()), {1}, f"a slot ran twice: {runs}\n{logs}")
        self.assertEqual([slot for slot in down if slot in runs], [], logs)
        self.assertEqual([slot for slot in later if slot not in runs], [], logs)
