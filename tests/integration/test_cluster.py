"""
A three-node RabbitMQ cluster on loopback (``scripts/rabbitmq-cluster``,
started by ``scripts/services start rabbitmq-cluster``) with quorum queues
(issue #19): 2,000 tasks streamed to two daemons, both given the three
nodes' URLs, while the node leading the task queue is killed with SIGKILL
and later started again.  No confirmed task is lost, the tasks run twice
are no more than the deliveries the crash interrupted, and both daemons
consume afterwards.

Runs only when ``TWISTEDQ_TEST_AMQP_CLUSTER_URLS`` names the cluster (see
``scripts/services env``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.servers import ROOT, Daemon, redis_url, server_url, unique_queue
from tests.integration.test_faults import FINAL

TASKS = 2000
#: The failures a publish may raise while a node dies.
PUBLISH_FAILURES = {"PublishRefused", "BrokerUnavailable", "PublishUncertain"}
CONCURRENCY = 1
BATCH = 8
PREFETCH = 32


def cluster_urls() -> str:
    return server_url("TWISTEDQ_TEST_AMQP_CLUSTER_URLS")


def cluster(*args: str, timeout: float = 180) -> str:
    """
    Run ``scripts/rabbitmq-cluster`` on the cluster the tests use.
    """
    ports = ",".join(str(urlsplit(url).port) for url in cluster_urls().split(","))
    completed = subprocess.run(
        ["bash", str(ROOT / "scripts" / "rabbitmq-cluster"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, TWISTEDQ_RABBITMQ_CLUSTER_PORTS=ports),
    )
    if completed.returncode != 0:
        raise AssertionError(f"rabbitmq-cluster {args} failed: {completed.stderr[-2000:]}")
    return completed.stdout


def leader_port(queue: str, ask: int) -> int:
    """
    The AMQP port of the node leading the quorum queue ``queue``, asked of
    the node of port ``ask``.
    """
    out = cluster(
        "rabbitmqctl", str(ask), "-q", "list_queues", "name", "leader", "--formatter=json"
    )
    for row in json.loads(out):
        if row["name"] == queue:
            return int(row["leader"].split("@")[0].removeprefix("twistedqc"))
    raise AssertionError(f"no queue {queue} in {out}")


def python(code: str, *args: str, stdin: str = "", timeout: float = 120) -> str:
    completed = subprocess.run(
        [sys.executable, "-c", code, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        cwd=ROOT,
    )
    if completed.returncode != 0:
        raise AssertionError(f"failed:\n{completed.stdout}\n{completed.stderr[-5000:]}")
    return completed.stdout


STATUSES = (
    "import json, sys\n"
    "from twistedq.client import Client\n"
    "client = Client(broker_url=sys.argv[1], result_backend=sys.argv[2], queue='x')\n"
    "ids = json.load(sys.stdin)\n"
    "print(json.dumps([str(o.status) for o in client.get_outcomes(ids)]))\n"
    "client.close()\n"
)


class ClusterTests(SynchronousTestCase):
    def setUp(self) -> None:
        cluster_urls()
        redis_url()
        server_url("TWISTEDQ_TEST_AMQP_URL")  # the Daemon helper's default broker
        self.directory = Path(tempfile.mkdtemp(prefix="twistedq-cluster-"))
        self.queue = unique_queue()
        self.daemons: list[Daemon] = []
        self.addCleanup(self.stop_daemons)

    def stop_daemons(self) -> None:
        for daemon in self.daemons:
            daemon.stop()

    def start_daemon(self) -> Daemon:
        directory = self.directory / f"daemon-{len(self.daemons)}"
        directory.mkdir()
        daemon = Daemon(
            directory,
            self.queue,
            redis_url(),
            concurrency=CONCURRENCY,
            tasks="tests.integration.fault_tasks",
            extra=(
                "--broker",
                cluster_urls(),
                "--queue-type",
                "quorum",
                "--batch",
                str(BATCH),
                "--prefetch",
                str(PREFETCH),
            ),
            env={"TWISTEDQ_TEST_RUNS_FILE": str(directory / "runs")},
        )
        self.daemons.append(daemon)
        daemon.wait_ready(60)
        return daemon

    def publish(self, count: int, seconds: float) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.fault_publisher",
                cluster_urls(),
                redis_url(),
                self.queue,
                str(count),
                str(seconds),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            cwd=ROOT,
        )

    def confirmed(self, publisher: subprocess.Popen[str]) -> list[str]:
        out, err = publisher.communicate(timeout=300)
        self.assertEqual(publisher.returncode, 0, err[-5000:])
        published = json.loads(out.strip().splitlines()[-1])
        self.retries = published["retries"]
        # Every failed publish says what became of the message: refused
        # (nacked while the queue elects a leader), not sent, or uncertain.
        failures = [line for line in err.splitlines() if line.startswith("publish failed")]
        self.failures = Counter(line.split("(")[1].split(":")[0] for line in failures)
        self.assertLessEqual(set(self.failures), PUBLISH_FAILURES, err[-3000:])
        ids: list[str] = published["ids"]
        return ids

    def wait_final(self, ids: list[str], seconds: float) -> dict[str, str]:
        deadline = time.monotonic() + seconds
        while True:
            found = json.loads(
                python(STATUSES, cluster_urls(), redis_url(), stdin=json.dumps(ids))
                .strip()
                .splitlines()[-1]
            )
            statuses = dict(zip(ids, found, strict=True))
            if all(status in FINAL for status in found) or time.monotonic() > deadline:
                return statuses
            time.sleep(1)

    def runs(self) -> list[Counter[str]]:
        """
        Per daemon, how many times each task ran there.
        """
        counts = []
        for daemon in self.daemons:
            path = daemon.directory / "runs"
            text = path.read_text() if path.exists() else ""
            counts.append(Counter(line.split()[0] for line in text.splitlines() if line))
        return counts

    def test_leader_killed_mid_stream(self) -> None:
        """
        The node leading the task queue is killed with SIGKILL 1.5 s into
        a stream of 2,000 tasks and started again 5 s later: every
        confirmed task ends SUCCESS, none runs after its outcome was
        committed, a publish that failed raised PublishRefused,
        BrokerUnavailable or PublishUncertain (and was published again with
        the same ids), the tasks run twice are at most the two daemons'
        prefetch windows, and both daemons run tasks published afterwards.
        """
        started = time.monotonic()
        self.start_daemon()
        self.start_daemon()
        ports = [urlsplit(url).port or 5672 for url in cluster_urls().split(",")]
        leader = leader_port(self.queue, ports[1])
        publisher = self.publish(TASKS, 6.0)
        time.sleep(1.5)
        cluster("kill", str(leader))
        time.sleep(5)
        cluster("restart", str(leader))
        confirmed = self.confirmed(publisher)
        self.assertEqual(len(confirmed), TASKS)
        statuses = self.wait_final(confirmed, 180)
        lost = [task_id for task_id in confirmed if statuses.get(task_id) not in FINAL]
        per_daemon = self.runs()
        runs = sum(per_daemon, Counter())
        duplicated = sum(count - 1 for count in runs.values() if count > 1)
        print(
            f"\nleader {leader} killed: {len(confirmed)} confirmed "
            f"({self.retries} publish retries: {dict(self.failures)}), {len(lost)} lost, "
            f"{duplicated} duplicated runs, runs per daemon "
            f"{[sum(c.values()) for c in per_daemon]}, {time.monotonic() - started:.1f} s"
        )
        self.assertEqual(lost, [])
        self.assertEqual({statuses[task_id] for task_id in confirmed}, {"SUCCESS"})
        self.assertLessEqual(duplicated, len(self.daemons) * PREFETCH)
        for daemon in self.daemons:
            log = daemon.log()
            self.assertNotIn("after-commit", (daemon.directory / "runs").read_text())
            self.assertIn("Lost the connection to the broker", log)

        # Both daemons consume afterwards.
        before = [sum(c.values()) for c in self.runs()]
        more = self.confirmed(self.publish(200, 1.0))
        self.assertEqual(set(self.wait_final(more, 60).values()), {"SUCCESS"})
        after = [sum(c.values()) for c in self.runs()]
        self.assertTrue(all(a > b for a, b in zip(after, before, strict=True)), (before, after))
