"""
A broker outage under a periodic task, on the real RabbitMQ and Redis:
when the broker comes back, the slots missed meanwhile follow the task's
catch-up policy (``"once"``: one run for the whole gap), instead of all
being published at once.

The test stops and starts the RabbitMQ of ``scripts/services`` (the one
its ``TWISTEDQ_RABBITMQ_PORT`` and ``TWISTEDQ_SERVICES_DIR`` name), as the
fault-injection suite does.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from pathlib import Path

from twisted.trial.unittest import TestCase

from tests.integration.servers import Daemon, redis_url, server_url, services, unique_queue
from twistedq.scheduler import slot_task_id

#: Seconds the broker stays down.
DOWN_FOR = 12.0


class BrokerOutageTests(TestCase):
    timeout = 180

    def test_broker_outage_runs_the_gap_once(self) -> None:
        """
        A one-second task while the broker is down for 12 s: of the slots
        that came due during the outage at most one runs (the default
        ``catch_up="once"``), none runs twice, and once the daemon is
        connected again every slot runs on time.
        """
        server_url("TWISTEDQ_TEST_AMQP_URL")
        directory = Path(tempfile.mkdtemp(prefix="twistedq-outage-"))
        beats = directory / "beats"
        name = f"tests.beat.{unique_queue()}"
        daemon = Daemon(
            directory,
            unique_queue(),
            redis_url(),
            concurrency=1,
            tasks="tests.integration.periodic_tasks",
            env={"TWISTEDQ_TEST_BEAT_FILE": str(beats), "TWISTEDQ_TEST_BEAT_NAME": name},
        )
        self.addCleanup(daemon.stop)
        daemon.wait_ready()
        time.sleep(3)
        services("stop", "rabbitmq")
        try:
            down_from = time.time()
            time.sleep(DOWN_FOR)
            down_until = time.time()
        finally:
            services("restart", "rabbitmq")
        back = time.time()
        time.sleep(25)
        end = time.time()
        daemon.stop()

        runs = Counter(line.split()[0] for line in beats.read_text().splitlines())
        ran = {
            slot
            for slot in range(int(down_from) - 10, int(end) + 1)
            if slot_task_id(name, float(slot)) in runs
        }
        self.assertEqual(set(runs.values()), {1}, "a slot ran twice")
        gap = [slot for slot in ran if down_from + 1 <= slot <= down_until]
        self.assertLessEqual(len(gap), 1, f"slots of the outage that ran: {sorted(gap)}")
        # Connected again within 15 s of the restart: from then on, every slot.
        later = range(int(back) + 15, int(end) - 2)
        self.assertEqual([s for s in later if s not in ran], [], daemon.log()[-3000:])
