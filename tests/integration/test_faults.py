"""
The fault-injection suite: real RabbitMQ and Redis, faults by signals and
by stopping servers.  Each scenario publishes 1,000 tasks while a fault
strikes, waits until every confirmed task has its final outcome, and prints
how many were lost, run more than once and dead-lettered:

- the broker restarted mid-stream;
- the daemon killed with SIGKILL mid-stream and started again;
- a child killed with SIGKILL every half second;
- the result store (Redis) stopped for 30 seconds;
- the broker's consumer timeout lowered to 5 s and Redis stopped for 12 s:
  the broker closes the consuming channel and the daemon consumes again;
- the same, with ``--give-back-after 2``: the held deliveries go back to
  the queue in time, and the broker closes nothing;
- a store that refuses one outcome of the 1,000 for good (Redis taking
  values up to 1 MiB, one task returning 2 MiB): that task FAILED with
  ``StoreRefused``, every other task stored.

Lost must be 0 in every scenario, no task may run after its result was
committed, and the tasks run more than once are bounded by the attempts a
fault can interrupt (the daemon's prefetch per fault).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.servers import (
    ROOT,
    Daemon,
    amqp_url,
    redis_url,
    server_url,
    services,
    unique_queue,
)
from tests.integration.test_consumer_channel import lower_consumer_timeout

TASKS = 1000
CONCURRENCY = 2
BATCH = 8
PREFETCH = CONCURRENCY * BATCH * 2


def stop_server(name: str, seconds: float) -> Callable[[subprocess.Popen[str]], int]:
    """
    A fault: 1.5 s into the stream, stop the server ``name`` for
    ``seconds``, then start it again on the same data.
    """

    def fault(publisher: subprocess.Popen[str]) -> int:
        time.sleep(1.5)
        services("stop", name)
        try:
            time.sleep(seconds)
        finally:
            services("restart", name)
        return 1

    return fault


def python(*args: str, timeout: float = 120) -> Any:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    completed = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )
    if completed.returncode != 0:
        raise AssertionError(f"{args} failed:\n{completed.stdout}\n{completed.stderr[-5000:]}")
    return completed.stdout


class FaultTests(SynchronousTestCase):
    def setUp(self) -> None:
        server_url("TWISTEDQ_TEST_AMQP_URL")
        server_url("TWISTEDQ_TEST_REDIS_URL")
        self.directory = Path(tempfile.mkdtemp(prefix="twistedq-faults-"))
        self.runs = self.directory / "runs"
        self.queue = unique_queue()
        self.daemons: list[Daemon] = []
        self.addCleanup(self.stop_daemons)

    def stop_daemons(self) -> None:
        for daemon in self.daemons:
            daemon.stop()

    def start_daemon(
        self, extra: tuple[str, ...] = (), env: dict[str, str] | None = None
    ) -> Daemon:
        directory = self.directory / f"daemon-{len(self.daemons)}"
        directory.mkdir()
        daemon = Daemon(
            directory,
            self.queue,
            redis_url(),
            concurrency=CONCURRENCY,
            tasks="tests.integration.fault_tasks",
            extra=("--batch", str(BATCH), "--prefetch", str(PREFETCH), *extra),
            env={"TWISTEDQ_TEST_RUNS_FILE": str(self.runs), **(env or {})},
        )
        self.daemons.append(daemon)
        daemon.wait_ready(60)
        return daemon

    def run_scenario(
        self,
        name: str,
        fault: Callable[[subprocess.Popen[str]], int],
        spread: float = 4.0,
        extra: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        refused: int = 0,
    ) -> dict[str, str]:
        """
        Publish the tasks over ``spread`` seconds while ``fault(publisher)``
        strikes (it returns how many faults it caused), then check and
        print the counts; the daemon runs with the options ``extra`` and
        the environment ``env``.  ``refused`` tasks are expected to fail
        without a dead letter (their outcome refused by the store).
        Return the status of each confirmed task.
        """
        self.start_daemon(extra, env)
        started = time.monotonic()
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        publisher = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.fault_publisher",
                amqp_url(),
                redis_url(),
                self.queue,
                str(TASKS),
                str(spread),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        faults = fault(publisher)
        out, err = publisher.communicate(timeout=300)
        self.assertEqual(publisher.returncode, 0, err[-5000:])
        published = json.loads(out.strip().splitlines()[-1])
        confirmed = published["ids"]
        self.assertEqual(len(confirmed), TASKS)

        statuses = self.wait_final(confirmed, deadline=started + 240)
        lost = [task_id for task_id in confirmed if statuses.get(task_id) not in FINAL]
        lines = [line.split() for line in self.runs.read_text().splitlines()]
        runs = Counter(line[0] for line in lines)
        after_commit = [line[0] for line in lines if line[-1] == "after-commit"]
        duplicated = sum(count - 1 for count in runs.values() if count > 1)
        failed = sum(1 for task_id in confirmed if statuses.get(task_id) == "FAILURE")
        dead = self.dead_letters()
        print(
            f"\n{name}: {len(confirmed)} confirmed ({published['retries']} publish retries), "
            f"{len(lost)} lost, {duplicated} duplicated runs, {len(after_commit)} runs after "
            f"commit, {failed} failed, {dead} dead-lettered, {faults} faults, "
            f"{time.monotonic() - started:.1f} s"
        )
        self.assertEqual(lost, [], f"{name}: confirmed tasks without a final outcome")
        self.assertEqual(after_commit, [], f"{name}: tasks run after their result was committed")
        never_ran = [task_id for task_id in confirmed if task_id not in runs]
        self.assertEqual(
            sorted(statuses[task_id] for task_id in never_ran),
            [],
            f"{name}: tasks with an outcome that never ran",
        )
        self.assertLessEqual(duplicated, faults * PREFETCH, f"{name}: too many duplicate runs")
        self.assertEqual(failed - refused, dead, f"{name}: every failure is dead-lettered")
        return statuses

    def wait_final(self, ids: list[str], deadline: float) -> dict[str, str]:
        """
        Poll the store until every task has a final outcome, or the deadline.
        """
        code = (
            "import json, sys\n"
            "from twistedq.client import Client\n"
            "client = Client(broker_url=sys.argv[1], result_backend=sys.argv[2], queue='x')\n"
            "ids = json.load(sys.stdin)\n"
            "print(json.dumps([str(o.status) for o in client.get_outcomes(ids)]))\n"
            "client.close()\n"
        )
        statuses: dict[str, str] = {}
        while True:
            env = dict(os.environ, PYTHONPATH=str(ROOT))
            completed = subprocess.run(
                [sys.executable, "-c", code, amqp_url(), redis_url()],
                input=json.dumps(ids),
                capture_output=True,
                text=True,
                timeout=60,
                env=env,
                cwd=ROOT,
            )
            if completed.returncode == 0:
                found = json.loads(completed.stdout.strip().splitlines()[-1])
                statuses = dict(zip(ids, found, strict=True))
                if all(status in FINAL for status in found):
                    return statuses
            if time.monotonic() > deadline:
                return statuses
            time.sleep(1)

    def dead_letters(self) -> int:
        out = python(
            "-m", "twistedq.deadletter", "--broker", amqp_url(), "--queue", self.queue, "list"
        )
        return len([line for line in out.splitlines() if line.strip()])

    # the scenarios

    def test_broker_restart(self) -> None:
        """
        RabbitMQ stops 1.5 s into the stream and starts again on the same
        data: the publisher publishes again what was not confirmed, the
        daemon reconnects, the messages it held unacknowledged come back,
        and nothing is lost.
        """

        self.run_scenario("broker restart", stop_server("rabbitmq", 1))

    def test_daemon_killed(self) -> None:
        """
        The daemon is killed with SIGKILL 1.5 s into the stream and a new
        one starts: the tasks it held go to the new one.
        """

        def kill_daemon(publisher: subprocess.Popen[str]) -> int:
            time.sleep(1.5)
            daemon = self.daemons[-1]
            daemon.process.send_signal(signal.SIGKILL)
            daemon.process.wait()
            self.start_daemon()
            return 1

        self.run_scenario("daemon SIGKILL", kill_daemon)

    def test_children_killed(self) -> None:
        """
        A child is killed with SIGKILL every half second while the tasks
        run: the tasks of a dead child run again, and a task whose child
        dies on each of its three attempts fails and is dead-lettered.
        """

        def kill_children(publisher: subprocess.Popen[str]) -> int:
            daemon = self.daemons[-1]
            kills = 0
            while publisher.poll() is None or kills < 12:
                time.sleep(0.5)
                found = subprocess.run(
                    ["pgrep", "-P", str(daemon.process.pid)], capture_output=True, text=True
                ).stdout.split()
                if found:
                    try:
                        os.kill(int(random.choice(found)), signal.SIGKILL)
                        kills += 1
                    except ProcessLookupError:
                        pass
            return kills

        self.run_scenario("child SIGKILL every 0.5 s", kill_children, spread=6.0)

    def test_store_stopped(self) -> None:
        """
        Redis stops for 30 s mid-stream: the daemon starts no task it could
        not record, and goes on once Redis is back.
        """

        self.run_scenario("result store stopped 30 s", stop_server("redis", 30))

    def test_consumer_channel_closed(self) -> None:
        """
        The broker's consumer timeout is 5 s and Redis stops for 12 s: the
        deliveries held meanwhile (neither claimed nor parked) pass the
        timeout, the broker closes the consuming channel (406) and puts
        them back; the daemon consumes again on a new channel, and once
        Redis is back, runs everything.
        """
        lower_consumer_timeout(self, 5000)
        # Nothing is given back in time: the broker's close is what is tried.
        self.run_scenario(
            "consumer channel closed by the broker",
            stop_server("redis", 12),
            extra=("--give-back-after", "3600"),
        )
        daemon = self.daemons[-1]
        closes = [line for line in daemon.log().splitlines() if "closed the consuming" in line]
        self.assertTrue(any("406" in line for line in closes), "no channel closed by the broker")
        self.assertTrue(daemon.stats()["consuming"])

    def test_store_down_past_consumer_timeout(self) -> None:
        """
        The same outage with ``--give-back-after 2``: what the daemon holds
        goes back to the queue before the broker's timeout, so the broker
        closes no channel, and nothing is lost.
        """
        lower_consumer_timeout(self, 5000)
        self.run_scenario(
            "store down past the consumer timeout",
            stop_server("redis", 12),
            extra=("--park-after", "1", "--give-back-after", "2"),
        )
        daemon = self.daemons[-1]
        closes = [line for line in daemon.log().splitlines() if "closed the consuming" in line]
        self.assertEqual(closes, [], "the broker closed the consuming channel")
        self.assertIn("could not be parked", daemon.log())
        stats = daemon.stats()
        self.assertTrue(stats["consuming"])
        self.assertGreater(stats["dispatcher"]["given_back"], 0)

    def test_store_refuses_one_outcome(self) -> None:
        """
        Redis takes values up to 1 MiB (``proto-max-bulk-len``, lowered
        for the test) and one task of the 1,000 returns 2 MiB: the store
        refuses that outcome for good, before sending it.  It is no outage:
        that task is FAILED with ``StoreRefused``, every other task
        SUCCEEDED, nothing is lost and the daemon consumes on.
        """
        redis_command("CONFIG", "SET", "proto-max-bulk-len", "1mb")
        self.addCleanup(redis_command, "CONFIG", "SET", "proto-max-bulk-len", "512mb")
        statuses = self.run_scenario(
            "store refuses one outcome",
            lambda publisher: 0,
            env={"TWISTEDQ_TEST_HUGE_INDEX": "500"},
            refused=1,
        )
        [refused] = [task_id for task_id, status in statuses.items() if status == "FAILURE"]
        document = redis_command("GET", f"twistedq:result:{refused}")
        self.assertIn(b'"type":"StoreRefused"', document)
        self.assertLess(len(document), 10_000)
        daemon = self.daemons[-1]
        stats = daemon.stats()
        self.assertTrue(stats["consuming"])
        self.assertTrue(stats["dispatcher"]["store_available"])
        self.assertEqual(stats["dispatcher"]["store_refused"], 1)
        self.assertEqual(stats["dispatcher"]["store_retries"], 0)


def redis_command(*args: str) -> bytes:
    """
    Send one command to the test Redis (raw RESP, so nothing but the
    standard library) and return its reply as it came.
    """
    url = urlsplit(redis_url())
    request = b"*%d\r\n" % len(args) + b"".join(
        b"$%d\r\n%s\r\n" % (len(arg.encode()), arg.encode()) for arg in args
    )
    with socket.create_connection((url.hostname or "127.0.0.1", url.port or 6379), 10) as sock:
        sock.sendall(request)
        reply = b""
        while True:
            chunk = sock.recv(1 << 20)
            reply += chunk
            if not chunk or _reply_complete(reply):
                return reply


def _reply_complete(reply: bytes) -> bool:
    if not reply.endswith(b"\r\n"):
        return False
    if not reply.startswith(b"$"):
        return True
    header, _, rest = reply.partition(b"\r\n")
    length = int(header[1:])
    return length < 0 or len(rest) >= length + 2


FINAL = {"SUCCESS", "FAILURE", "REVOKED"}
