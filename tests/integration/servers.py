"""
Where the integration servers are, and a running daemon for tests.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SkipTest

REQUIRE = os.environ.get("TWISTEDQ_REQUIRE_SERVERS") == "1"
ROOT = Path(__file__).resolve().parents[2]


def server_url(variable: str) -> str:
    """
    The URL of a test server from the environment.  Without it the test is
    skipped, unless ``TWISTEDQ_REQUIRE_SERVERS=1`` (as in ``scripts/test``),
    where a missing server is an error.
    """
    url = os.environ.get(variable)
    if not url:
        message = f"{variable} is not set: start the servers with scripts/services"
        if REQUIRE:
            raise RuntimeError(message)
        raise SkipTest(message)
    return url


def amqp_url() -> str:
    return server_url("TWISTEDQ_TEST_AMQP_URL")


def redis_url() -> str:
    return server_url("TWISTEDQ_TEST_REDIS_URL")


def unique_queue() -> str:
    """
    A queue name no other test uses.
    """
    return f"test-{uuid.uuid4().hex[:12]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def services(*args: str) -> None:
    """
    Run ``scripts/services`` with ``args`` (``stop redis``, ``restart
    rabbitmq``...) on the servers the tests use.
    """
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "services"), *args],
        check=True,
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )


class Daemon:
    """
    A ``twistd -n twistedq`` process started for a test.
    """

    def __init__(
        self,
        directory: Path,
        queue: str,
        result_backend: str,
        concurrency: int = 2,
        tasks: str = "tests.integration.tasks",
        extra: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.directory = directory
        self.queue = queue
        self.result_backend = result_backend
        self.status_port = free_port()
        self.log_path = directory / "twistd.log"
        self.concurrency = concurrency
        env = dict(os.environ, **(env or {}))
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        self.args = [
            twistd,
            "-n",
            "--pidfile=",
            "--logfile",
            str(self.log_path),
            "twistedq",
            "--broker",
            amqp_url(),
            "--queue",
            queue,
            "--result-backend",
            result_backend,
            "--concurrency",
            str(concurrency),
            "--tasks",
            tasks,
            "--status",
            f"tcp:{self.status_port}:interface=127.0.0.1",
            *extra,
        ]
        self.process = subprocess.Popen(self.args, cwd=directory, env=env)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stats(self) -> dict[str, Any]:
        """
        The daemon's ``/stats`` document (answered 200 or 503 alike).
        """
        url = f"http://127.0.0.1:{self.status_port}/stats"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.loads(response.read())  # type: ignore[no-any-return]
        except urllib.error.HTTPError as e:
            return json.loads(e.read())  # type: ignore[no-any-return]

    def wait_ready(self, timeout: float = 30.0) -> None:
        """
        Wait until every child started and the consumer is consuming.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log()
            if "Consuming" in text and text.count("Started Process-") >= self.concurrency:
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.process.returncode}:\n{text}")
            time.sleep(0.05)
        raise RuntimeError(f"daemon not ready within {timeout} s:\n{self.log()}")

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@contextmanager
def running_daemon(directory: Path, **kwargs: object) -> Iterator[Daemon]:
    daemon = Daemon(directory, **kwargs)  # type: ignore[arg-type]
    try:
        daemon.wait_ready()
        yield daemon
    finally:
        daemon.stop()
