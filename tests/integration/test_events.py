"""
Events of a real ``twistd twistedq`` daemon on RabbitMQ, seen by an
:py:class:`~twistedq.amqp.events.EventReceiver` in another process
(``tests/integration/events_listener.py``): a task's whole path, a
failure's exception type, the daemon's online, heartbeat and offline;
nothing at all with ``--no-events``; events again after the broker
restarted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.servers import ROOT, Daemon, amqp_url, redis_url, services, unique_queue
from tests.integration.test_metrics import run_client

Document = dict[str, Any]


class Listener:
    """
    The events listener script, appending every document it receives to a
    file.
    """

    def __init__(self, directory: Path, *patterns: str) -> None:
        self.path = directory / f"events-{uuid.uuid4().hex[:6]}.jsonl"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.events_listener",
                amqp_url(),
                "twistedq",
                str(self.path),
                *patterns,
            ],
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
        self.wait_for(lambda docs: any(d["type"] == "listener.ready" for d in docs))

    def documents(self) -> list[Document]:
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.endswith("}")]

    def wait_for(
        self, condition: Callable[[list[Document]], bool], timeout: float = 60.0
    ) -> list[Document]:
        """
        Read the documents until ``condition`` holds of them; fail after
        ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            documents = self.documents()
            if condition(documents):
                return documents
            if self.process.poll() is not None:
                raise AssertionError(f"the listener exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                types = sorted({d["type"] for d in documents})
                raise AssertionError(f"not seen within {timeout} s; seen: {types}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


def of(documents: list[Document], daemon: str, kind: str | None = None) -> list[Document]:
    """
    The documents of ``daemon`` (of type ``kind``).
    """
    return [
        d for d in documents if d.get("daemon") == daemon and (kind is None or d["type"] == kind)
    ]


def path_of(documents: list[Document], task_id: str) -> list[str]:
    """
    The types of a task's events, in the order of their times.
    """
    mine = sorted((d for d in documents if d.get("id") == task_id), key=lambda d: d["time"])
    return [d["type"] for d in mine]


class EventsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="twistedq-events-"))
        self.queue = unique_queue()
        self.backend = redis_url()
        self.name = f"events-{uuid.uuid4().hex[:8]}"

    def listen(self, *patterns: str) -> Listener:
        listener = Listener(self.directory, *patterns)
        self.addCleanup(listener.stop)
        return listener

    def start_daemon(self, *extra: str) -> Daemon:
        directory = self.directory / f"daemon-{uuid.uuid4().hex[:6]}"
        directory.mkdir()
        daemon = Daemon(
            directory,
            queue=self.queue,
            result_backend=self.backend,
            extra=("--name", self.name, "--heartbeat-interval", "0.5", *extra),
        )
        self.addCleanup(daemon.stop)
        daemon.wait_ready()
        return daemon

    def test_whole_path_and_daemon(self) -> None:
        """
        A listener bound before the daemon starts sees it come online,
        its heartbeats with its load, each task received, claimed, started
        and succeeded (with its runtime and child), a failure's exception
        type, and the daemon going offline when it stops.
        """
        listener = self.listen("#")
        daemon = self.start_daemon()
        documents = listener.wait_for(lambda docs: of(docs, self.name, "daemon.online"))
        [online] = of(documents, self.name, "daemon.online")
        self.assertEqual((online["queue"], online["pid"]), (self.queue, daemon.process.pid))
        self.assertEqual(online["concurrency"], 2)

        report = run_client(self.queue, self.backend, mode="add", count=3)
        ids = report["ids"]
        documents = listener.wait_for(
            lambda docs: all("task.succeeded" in path_of(docs, i) for i in ids)
        )
        for task_id in ids:
            self.assertEqual(
                path_of(documents, task_id),
                ["task.received", "task.claimed", "task.started", "task.succeeded"],
            )
        mine = [d for d in documents if d.get("id") == ids[1]]
        received = next(d for d in mine if d["type"] == "task.received")
        self.assertEqual((received["name"], received["daemon"]), ("add", self.name))
        self.assertEqual(received["args"], "(1, 1), {}")
        succeeded = next(d for d in mine if d["type"] == "task.succeeded")
        self.assertGreaterEqual(succeeded["runtime"], 0.0)
        self.assertLess(succeeded["runtime"], 30.0)
        self.assertTrue(succeeded["child"].startswith("Process-"), succeeded)

        report = run_client(self.queue, self.backend, mode="fail")
        documents = listener.wait_for(lambda docs: len(of(docs, self.name, "task.failed")) >= 3)
        failed = {d["name"]: d for d in of(documents, self.name, "task.failed")}
        self.assertEqual(failed["fail"]["exception"], "TaskFailed")
        self.assertEqual(failed["fail_builtin"]["exception"], "ValueError")
        self.assertEqual(failed["no-such-task"]["exception"], "NotRegistered")
        documents = listener.wait_for(lambda docs: of(docs, self.name, "task.dead-lettered"))
        [dead] = of(documents, self.name, "task.dead-lettered")
        self.assertEqual((dead["name"], dead["reason"]), ("no-such-task", "unknown-task"))

        beats = of(documents, self.name, "daemon.heartbeat")
        self.assertTrue(beats)
        self.assertEqual(beats[-1]["interval"], 0.5)
        for field in ("children", "busy", "held", "processed", "rss_kib", "children_rss_kib"):
            self.assertIsInstance(beats[-1][field], int, field)
        documents = listener.wait_for(
            lambda docs: any(d["processed"] >= 6 for d in of(docs, self.name, "daemon.heartbeat"))
        )

        counted = daemon.stats()["events"]
        self.assertGreaterEqual(counted["listeners"], 1)
        self.assertEqual(counted["dropped"], 0)
        self.assertGreater(counted["published"], 24)
        daemon.stop()
        documents = listener.wait_for(lambda docs: of(docs, self.name, "daemon.offline"))
        [offline] = of(documents, self.name, "daemon.offline")
        self.assertGreaterEqual(offline["processed"], 6)

    def test_first_tasks_of_a_daemon_starting(self) -> None:
        """
        With tasks waiting in the queue and a listener running, a daemon
        that starts has the events of its very first tasks seen: it keeps
        them until the listener answered its query.
        """
        listener = self.listen("task.received", "task.claimed")
        ids = run_client(self.queue, self.backend, mode="publish", count=20)["ids"]
        self.start_daemon()
        documents = listener.wait_for(
            lambda docs: all(
                {"task.received", "task.claimed"} <= set(path_of(docs, i)) for i in ids
            )
        )
        self.assertEqual(path_of(documents, ids[0]), ["task.received", "task.claimed"])

    def test_only_what_is_listened_to(self) -> None:
        """
        A listener of ``task.failed`` alone receives failures only.
        """
        listener = self.listen("task.failed")
        self.start_daemon()
        run_client(self.queue, self.backend, mode="add", count=2)
        run_client(self.queue, self.backend, mode="fail")
        documents = listener.wait_for(lambda docs: len(of(docs, self.name)) >= 3)
        self.assertEqual({d["type"] for d in of(documents, self.name)}, {"task.failed"})

    def test_no_events(self) -> None:
        """
        With ``--no-events`` a listener gets nothing of the daemon, not
        even while it runs tasks for a few heartbeat intervals.
        """
        listener = self.listen("#")
        daemon = self.start_daemon("--no-events")
        report = run_client(self.queue, self.backend, mode="add", count=5)
        self.assertEqual(report["statuses"], ["SUCCESS"])
        time.sleep(2.0)  # four heartbeat intervals: what would have come has
        self.assertIsNone(daemon.stats()["events"])
        daemon.stop()
        self.assertEqual(of(listener.documents(), self.name), [])
        self.assertIn("Consuming", daemon.log())

    def test_broker_restart(self) -> None:
        """
        After RabbitMQ restarts, the daemon and the listener find each
        other again: a task run then has its events seen.
        """
        listener = self.listen("#")
        daemon = self.start_daemon()
        listener.wait_for(lambda docs: of(docs, self.name, "daemon.heartbeat"))
        services("restart", "rabbitmq")
        restarted = time.time()
        listener.wait_for(
            lambda docs: any(
                d["time"] > restarted + 0.5 for d in of(docs, self.name, "daemon.heartbeat")
            ),
            timeout=90,
        )
        report = run_client(self.queue, self.backend, mode="add", count=2)
        documents = listener.wait_for(
            lambda docs: all("task.succeeded" in path_of(docs, i) for i in report["ids"])
        )
        self.assertIn("task.received", path_of(documents, report["ids"][0]))
        self.assertGreaterEqual(daemon.log().count("Connected to"), 2)
