"""
``GET /metrics`` of two real daemons sharing one queue: what each exposes
parses with ``prometheus_client``'s parser, and their counters add up to
the tasks that ran.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SynchronousTestCase

from tests.integration.servers import ROOT, Daemon, amqp_url, redis_url, unique_queue

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def run_client(queue: str, backend: str, **request: Any) -> Any:
    """
    Run the blocking client in its own process; return what it printed.
    """
    completed = subprocess.run(
        [sys.executable, "-m", "tests.integration.client_script", amqp_url(), backend, queue],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        cwd=ROOT,
    )
    if completed.returncode != 0:
        raise AssertionError(f"client failed:\n{completed.stdout}\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def scrape(daemon: Daemon) -> tuple[str, Samples]:
    """
    ``GET /metrics`` of ``daemon``: its content type and its samples,
    parsed by ``prometheus_client``.
    """
    url = f"http://127.0.0.1:{daemon.status_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        kind = response.headers["Content-Type"]
        text = response.read().decode("utf-8")
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return kind, samples


def total(samples: list[Samples], name: str, **labels: str) -> float:
    """
    The sum of the samples called ``name`` whose labels include
    ``labels``, over every daemon's samples.
    """
    wanted = set(labels.items())
    return sum(
        value
        for found in samples
        for (sample, sample_labels), value in found.items()
        if sample == name and wanted <= sample_labels
    )


class TwoDaemonsMetricsTests(SynchronousTestCase):
    """
    Two daemons with two children each consume one queue and store in
    Redis.
    """

    def setUp(self) -> None:
        self.backend = redis_url()
        self.queue = unique_queue()
        self.daemons = []
        for _ in range(2):
            directory = Path(tempfile.mkdtemp(prefix="twistedq-metrics-"))
            daemon = Daemon(directory, queue=self.queue, result_backend=self.backend)
            self.addCleanup(daemon.stop)
            self.daemons.append(daemon)
        for daemon in self.daemons:
            daemon.wait_ready()

    def scrape_until(self, settled: Callable[[list[Samples]], bool]) -> list[Samples]:
        """
        Scrape both daemons until ``settled`` holds of their samples (an
        outcome is counted once its write is answered, which the client
        may see a moment before), or 10 s have passed.
        """
        deadline = time.monotonic() + 10
        while True:
            scraped = [scrape(daemon) for daemon in self.daemons]
            for kind, _ in scraped:
                self.assertTrue(kind.startswith("text/plain; version="), kind)
            samples = [found for _, found in scraped]
            if settled(samples) or time.monotonic() > deadline:
                return samples
            time.sleep(0.1)

    def test_counters_add_up(self) -> None:
        """
        After 60 tasks that succeed and 3 rounds of three that fail (one of
        them of a task no child knows), the two daemons' counters add up to
        exactly those tasks: received, started, by name and outcome, timed
        once each; the unknown task's messages are dead-lettered; the
        claims are those of the tasks; the pool gauges show two children
        each.
        """
        succeeding = 60
        report = run_client(self.queue, self.backend, mode="add", count=succeeding)
        self.assertEqual(report["statuses"], ["SUCCESS"])
        rounds = 3
        for _ in range(rounds):
            report = run_client(self.queue, self.backend, mode="fail")
            self.assertEqual(report["unknown"][0], "NotRegistered")
        failing = 3 * rounds
        ran = succeeding + failing

        samples = self.scrape_until(
            lambda found: (
                total(found, "twistedq_tasks_total") == ran
                and total(found, "twistedq_dead_letters_total") == rounds
            )
        )
        self.assertEqual(total(samples, "twistedq_tasks_received_total"), ran)
        self.assertEqual(total(samples, "twistedq_tasks_started_total"), ran)
        self.assertEqual(total(samples, "twistedq_tasks_total"), ran)
        self.assertEqual(
            total(samples, "twistedq_tasks_total", task="add", outcome="succeeded"), succeeding
        )
        for name in ("fail", "fail_builtin", "no-such-task"):
            self.assertEqual(
                total(samples, "twistedq_tasks_total", task=name, outcome="failed"), rounds
            )
        self.assertEqual(total(samples, "twistedq_tasks_total", outcome="retried"), 0)
        self.assertEqual(total(samples, "twistedq_task_runtime_seconds_count"), ran)
        self.assertEqual(total(samples, "twistedq_task_queue_wait_seconds_count"), ran)
        self.assertEqual(total(samples, "twistedq_task_runtime_seconds_bucket", le="+Inf"), ran)
        self.assertEqual(
            total(samples, "twistedq_dead_letters_total", reason="unknown-task"), rounds
        )
        self.assertEqual(total(samples, "twistedq_messages_rejected_total"), 0)
        self.assertEqual(total(samples, "twistedq_claims_total", outcome="claimed"), ran)
        self.assertEqual(total(samples, "twistedq_pool_tasks_total"), ran)
        self.assertEqual(total(samples, "twistedq_child_restarts_total"), 0)
        self.assertEqual(total(samples, "twistedq_metrics_timings_dropped_total"), 0)
        for found in samples:
            self.assertEqual(total([found], "twistedq_pool_children"), 2)
            self.assertEqual(total([found], "twistedq_store_available"), 1)
            self.assertEqual(total([found], "twistedq_consuming"), 1)
            self.assertEqual(total([found], "twistedq_broker_connected"), 1)
            self.assertEqual(total([found], "twistedq_in_flight"), 0)
            self.assertGreater(total([found], "process_resident_memory_bytes"), 0)
