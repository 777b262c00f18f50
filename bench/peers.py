"""
The peers twistedq is measured beside, on the same broker and the same
result store: Celery (prefork) and Dramatiq (processes x threads).  Each
system offers what :py:func:`bench.throughput.measure` drives: start and
stop its worker, publish a batch as fast as its client can, publish one
task, read when each task was done, and make one round trip.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from bench.processes import stop, wait_for_log

ROOT = Path(__file__).resolve().parent.parent


class PeerSystem:
    """
    A peer's worker, started from its command line (:py:meth:`command`,
    logging to ``log``) and ready once its log holds :py:attr:`ready`.
    """

    name = "peer"
    ready = ""
    workdir: Path
    processes: list[subprocess.Popen[bytes]]

    def command(self, log: Path) -> list[str]:
        raise NotImplementedError

    def start_worker(self) -> None:
        log = self.workdir / f"{self.name}.log"
        log.unlink(missing_ok=True)
        process = subprocess.Popen(
            self.command(log), cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT))
        )
        self.processes = [process]
        try:
            wait_for_log(log, process, [self.ready])
        except BaseException:
            stop(process, wait=5)  # not left behind, retrying
            raise

    def stop_worker(self) -> None:
        for process in self.processes:
            stop(process)


def program(name: str) -> str:
    """
    The path of the console script ``name`` of this Python's environment.
    """
    return os.path.join(os.path.dirname(sys.executable), name)


class CelerySystem(PeerSystem):
    """
    Celery's prefork pool with ``--concurrency`` processes; its client
    publishes one ``apply_async`` after another (it has no batch publish).
    """

    name = "celery"
    ready = "ready."

    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.queue = f"bench-celery-{uuid.uuid4().hex[:8]}"
        os.environ["BENCH_BROKER"] = options.broker
        os.environ["BENCH_RESULT_BACKEND"] = options.result_backend
        os.environ["BENCH_QUEUE"] = self.queue
        from bench.celery_app import app, noop

        self.app = app
        self.noop = noop
        self.workdir = Path(tempfile.mkdtemp(prefix="celery-bench-"))
        self.processes: list[subprocess.Popen[bytes]] = []

    def command(self, log: Path) -> list[str]:
        return [
            *(program("celery"), "-A", "bench.celery_app", "worker", "-P", "prefork"),
            *("-c", str(self.options.concurrency), "-Q", self.queue, "--loglevel", "INFO"),
            *("--without-gossip", "--without-mingle", "--without-heartbeat", "-f", str(log)),
        ]

    def publish(self, count: int) -> list[str]:
        return [self.noop.apply_async().id for _ in range(count)]

    def publish_one(self) -> str:
        return str(self.noop.apply_async().id)

    def done_times(self, ids: list[str]) -> list[float] | None:
        backend = self.app.backend
        times = []
        for start in range(0, len(ids), 5000):
            chunk = ids[start : start + 5000]
            keys = [backend.get_key_for_task(task_id) for task_id in chunk]
            for raw in backend.client.mget(keys):
                if raw is None:
                    return None
                done = backend.decode_result(raw).get("date_done")
                if isinstance(done, str):
                    done = datetime.datetime.fromisoformat(done)
                if done.tzinfo is None:
                    done = done.replace(tzinfo=datetime.timezone.utc)
                times.append(done.timestamp())
        return times

    def round_trip(self) -> None:
        self.noop.apply_async().get(timeout=30)


class DramatiqSystem(PeerSystem):
    """
    Dramatiq's worker with ``--dramatiq-processes`` processes of
    ``--dramatiq-threads`` threads, on RabbitMQ (with publisher confirms
    only when ``--dramatiq-confirms`` asks: Dramatiq's default is without)
    and Redis results; its client sends one message after another.  The
    task returns the time it ran, which is when it was done.
    """

    name = "dramatiq"
    ready = "is ready for action"

    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.queue = f"bench-dramatiq-{uuid.uuid4().hex[:8]}"
        os.environ["BENCH_BROKER"] = options.broker
        os.environ["BENCH_RESULT_BACKEND"] = options.result_backend
        os.environ["BENCH_QUEUE"] = self.queue
        os.environ["BENCH_DRAMATIQ_CONFIRMS"] = "1" if options.dramatiq_confirms else ""
        from bench.dramatiq_app import broker, noop, results

        self.broker = broker
        self.noop = noop
        self.results = results
        self.messages: dict[str, Any] = {}
        self.workdir = Path(tempfile.mkdtemp(prefix="dramatiq-bench-"))
        self.processes: list[subprocess.Popen[bytes]] = []

    def command(self, log: Path) -> list[str]:
        return [
            *(program("dramatiq"), "bench.dramatiq_app", "--queues", self.queue),
            *("--processes", str(self.options.dramatiq_processes)),
            *("--threads", str(self.options.dramatiq_threads), "--log-file", str(log)),
        ]

    def publish_one(self) -> str:
        message = self.noop.send()
        self.messages[message.message_id] = message
        return str(message.message_id)

    def publish(self, count: int) -> list[str]:
        return [self.publish_one() for _ in range(count)]

    def done_times(self, ids: list[str]) -> list[float] | None:
        times = []
        for start in range(0, len(ids), 5000):
            with self.results.client.pipeline(transaction=False) as pipe:
                for message_id in ids[start : start + 5000]:
                    pipe.lindex(self.results.build_message_key(self.messages[message_id]), 0)
                for raw in pipe.execute():
                    if raw is None:
                        return None
                    times.append(
                        float(self.results.unwrap_result(self.results.encoder.decode(raw)))
                    )
        return times

    def round_trip(self) -> None:
        message = self.noop.send()
        self.results.get_result(message, block=True, timeout=30_000)
