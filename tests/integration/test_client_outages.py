"""
The blocking client when the broker or the store is down or misbehaves
(issue #13, points 7, 8, 9, 10), against real servers.  Each case runs the
client in a process of its own (``client_script``), as a Django view or a
script would.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.servers import ROOT, Daemon, amqp_url, free_port, redis_url, unique_queue


def run_script(queue: str, limit: float = 120, **request: Any) -> tuple[Any, str]:
    """
    Run the client script; return what it reported and its standard error.
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    completed = subprocess.run(
        [sys.executable, "-m", "tests.integration.client_script", amqp_url(), redis_url(), queue],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=limit,
        env=env,
        cwd=ROOT,
    )
    if completed.returncode != 0:
        raise AssertionError(f"client failed:\n{completed.stdout}\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1]), completed.stderr


class FailFastTests(SynchronousTestCase):
    """
    A broker that cannot be reached fails a publish at once with
    BrokerUnavailable and the reason, not after the whole timeout.
    """

    def test_refused(self):
        """
        A port that refuses connections: every publish, the first and the
        ones after it, fails within two seconds (the timeout is 30 s),
        saying the connection was refused.
        """
        port = free_port()
        report, _ = run_script(
            unique_queue(),
            mode="publish_tries",
            broker=f"amqp://guest:guest@127.0.0.1:{port}/",
            timeout=30,
            count=3,
        )
        for attempt in report["tries"]:
            self.assertEqual(attempt["raised"], "BrokerUnavailable")
            self.assertIn("refused", attempt["text"])
            self.assertIn(f"127.0.0.1:{port}", attempt["text"])
            self.assertLess(attempt["seconds"], 2.0)

    def test_unknown_host(self):
        """
        A host name that does not resolve fails at once, saying so.
        """
        report, _ = run_script(
            unique_queue(),
            mode="publish_tries",
            broker="amqp://guest:guest@no-such-host.invalid/",
            timeout=30,
        )
        [attempt] = report["tries"]
        self.assertEqual(attempt["raised"], "BrokerUnavailable")
        self.assertIn("DNS", attempt["text"])
        self.assertLess(attempt["seconds"], 10.0)

    def test_login_refused(self):
        """
        A wrong password fails at once with the broker's reason.
        """
        url = amqp_url()
        wrong = url.replace("guest:guest@", "guest:wrong@")
        self.assertNotEqual(wrong, url, "the test broker URL has no guest:guest@")
        report, _ = run_script(unique_queue(), mode="publish_tries", broker=wrong, timeout=30)
        [attempt] = report["tries"]
        self.assertEqual(attempt["raised"], "BrokerUnavailable")
        self.assertIn("ACCESS_REFUSED", attempt["text"])
        self.assertLess(attempt["seconds"], 5.0)

    def test_silent_broker_gets_the_timeout(self):
        """
        A server that accepts connections and never answers is waited for
        until the client's timeout, and no longer.
        """
        silent = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(silent.close)
        accepted: list[socket.socket] = []

        def accept() -> None:
            while True:
                try:
                    accepted.append(silent.accept()[0])
                except OSError:
                    return

        threading.Thread(target=accept, daemon=True).start()
        self.addCleanup(lambda: [s.close() for s in accepted])
        port = silent.getsockname()[1]
        report, _ = run_script(
            unique_queue(),
            mode="publish_tries",
            broker=f"amqp://guest:guest@127.0.0.1:{port}/",
            timeout=2,
        )
        [attempt] = report["tries"]
        self.assertEqual(attempt["raised"], "BrokerUnavailable")
        self.assertIn("within 2", attempt["text"])
        self.assertGreater(attempt["seconds"], 1.9)
        self.assertLess(attempt["seconds"], 4.0)


class InFlightTests(SynchronousTestCase):
    """
    Every failure of a publish is one of the documented exceptions.
    """

    def test_broker_dies_under_a_publish(self):
        """
        The connection cut after the message was sent and before its
        confirm: PublishUncertain (not txAMQP's Closed), naming the task;
        then with the broker gone: BrokerUnavailable.
        """
        report, _ = run_script(unique_queue(), mode="die_in_flight")
        self.assertIn("value", report["first"])
        self.assertEqual(report["in_flight"]["raised"], "PublishUncertain")
        self.assertEqual(report["in_flight"]["module"], "twistedq.amqp.broker")
        self.assertIn("may or may not be queued", report["in_flight"]["text"])
        self.assertEqual(report["gone"]["raised"], "BrokerUnavailable")


class StoreOutageTests(SynchronousTestCase):
    """
    Once the broker confirmed, the caller gets its result handle whatever
    the store does.
    """

    def test_store_never_answers(self):
        """
        With a store that never answers and a client timeout of 2 s, the
        publish returns its task id after the confirm and at most a second
        more; the message is in the queue.
        """
        report, _ = run_script(unique_queue(), mode="store_hangs")
        self.assertIn("value", report["publish"], report)
        self.assertLess(report["publish"]["seconds"], 3.0)
        self.assertEqual(report["purged"]["value"], 1)

    def test_get_timeout_bounds_a_store_that_never_answers(self):
        """
        ``get(timeout=1)`` with a store that never answers raises Python's
        ``TimeoutError`` after about a second, not after the store's own
        call timeout (10 s).
        """
        report, _ = run_script(unique_queue(), mode="store_hangs")
        self.assertEqual(report["get"]["raised"], "TimeoutError", report)
        self.assertEqual(report["get"]["module"], "builtins")
        self.assertLess(report["get"]["seconds"], 2.0)
        self.assertIn("did not answer", report["get"]["text"])

    def test_taskset_publish_fails(self):
        """
        A TaskSet whose publish fails raises BrokerUnavailable, and its
        record completes: every subtask is recorded as REVOKED, counted as
        failed.
        """
        report, _ = run_script(
            unique_queue(),
            mode="taskset_broker_gone",
            broker=f"amqp://guest:guest@127.0.0.1:{free_port()}/",
        )
        self.assertEqual(report["run"]["raised"], "BrokerUnavailable")
        self.assertIn("3 others are recorded as REVOKED", report["run"]["text"])
        self.assertEqual(report["taskset"], [3, 3, 3, True])


class QuietExitTests(SynchronousTestCase):
    """
    A script that publishes, reads one result and exits writes nothing on
    its standard error, whether or not it closes the client.
    """

    def setUp(self) -> None:
        self.queue = unique_queue()
        directory = Path(tempfile.mkdtemp(prefix="twistedq-quiet-"))
        self.daemon = Daemon(directory, queue=self.queue, result_backend=redis_url())
        self.addCleanup(self.daemon.stop)
        self.daemon.wait_ready()

    def test_exit_without_close(self):
        """
        Interpreter exit with the connections open is silent.
        """
        report, stderr = run_script(self.queue, mode="read_one", close=False)
        self.assertEqual(report["value"], 42)
        self.assertEqual(stderr, "")

    def test_close_then_exit(self):
        """
        ``close()`` after a read, then exit, is silent.
        """
        report, stderr = run_script(self.queue, mode="read_one", close=False, close_client=True)
        self.assertEqual(report["value"], 42)
        self.assertEqual(stderr, "")

    def test_exit_without_notification(self):
        """
        Without the store's notification subscriber (see below), exit and
        close are silent today: the broker connection, the store and the
        reactor thread stop without a word.
        """
        for close_client in (False, True):
            report, stderr = run_script(
                self.queue, mode="read_one", close=False, close_client=close_client, notify=False
            )
            self.assertEqual(report["value"], 42)
            self.assertEqual(stderr, "")
