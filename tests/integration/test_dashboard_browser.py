"""
The dashboard in headless Chromium (Debian's ``chromium``), driven through
its DevTools protocol over ``--remote-debugging-pipe`` (file descriptors 3
and 4, NUL-separated JSON: no Python package needed): two real daemons
appear on the page, a slow task shows as running on its daemon and leaves
"running" once done; an operator with the token pauses a periodic task and
terminates a running one.  With ``DASHBOARD_SCREENSHOT=path`` the test also
saves a screenshot of the busy page there (``doc/dashboard.png``).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.integration.servers import ROOT, Daemon, amqp_url, redis_url, unique_queue

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TOKEN = "dashboard-test-token"

PUBLISH = """
import json, sys
from twistedq.client import Client
from twistedq.task import TaskSet
broker, backend, queue = sys.argv[1:4]
plan = json.loads(sys.argv[4])
client = Client(broker_url=broker, result_backend=backend, queue=queue)
ids = [client.delay_task(name, *args).task_id for name, args in plan.get("tasks", [])]
tasksets = [
    TaskSet(name, [((*args,), {}) for args in each], client).run().taskset_id
    for name, each in plan.get("tasksets", [])
]
print(json.dumps({"ids": ids, "tasksets": tasksets}))
client.close()
"""


def publish(queue: str, backend: str, plan: dict[str, Any], exchange: str) -> dict[str, Any]:
    """
    Publish tasks (``{"tasks": [[name, args]], "tasksets": [[name, [args]]]}``)
    to ``exchange`` from a process of their own, without waiting for them.
    """
    completed = subprocess.run(
        [sys.executable, "-c", PUBLISH, amqp_url(), backend, queue, json.dumps(plan)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(ROOT), TWISTEDQ_EXCHANGE=exchange),
        cwd=ROOT,
    )
    if completed.returncode != 0:
        raise AssertionError(f"publisher failed:\n{completed.stdout}\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


class Browser:
    """
    A headless Chromium with one page, spoken to over its DevTools pipe.
    """

    def __init__(self, width: int = 1280, height: int = 1000) -> None:
        assert CHROMIUM is not None
        self.profile = tempfile.mkdtemp(prefix="twistedq-chromium-")
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()

        def onto_3_and_4() -> None:
            # Out of the way first, so that neither lands on the other.
            a = fcntl.fcntl(commands_read, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(replies_write, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.process = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-pipe",
                f"--user-data-dir={self.profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            preexec_fn=onto_3_and_4,
            pass_fds=(3, 4),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(commands_read)
        os.close(replies_write)
        self._buffer = b""
        self._next_id = 0
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=True,
        )

    def call(self, method: str, params: dict[str, Any], session: bool = False) -> Any:
        """
        Send one command and wait for its answer (events are skipped).
        """
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._replies, 1 << 16)
                if not chunk:
                    raise RuntimeError("chromium closed its DevTools pipe")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    def open(self, url: str) -> None:
        self.call("Page.navigate", {"url": url}, session=True)

    def evaluate(self, expression: str) -> Any:
        """
        The value of a JavaScript expression in the page.
        """
        result = self.call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=True
        )
        return result.get("result", {}).get("value")

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", {"format": "png"}, session=True)["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.call("Browser.close", {})
        except Exception:
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._commands)
        os.close(self._replies)
        shutil.rmtree(self.profile, ignore_errors=True)


#: The daemons on the page: [[name, gone?]...]
DAEMONS = (
    "Array.from(document.querySelectorAll('#daemons tbody tr[data-name]'))"
    ".map(r => [r.dataset.name, r.className === 'gone'])"
)
#: The tasks running on the page: [[id, daemon cell]...]
RUNNING = (
    "Array.from(document.querySelectorAll('#running tbody tr[data-id]'))"
    ".map(r => [r.dataset.id, r.cells[4].textContent])"
)


class DashboardInBrowserTests(SynchronousTestCase):
    """
    Two daemons on one queue, results in Redis, the dashboard of the
    first open in Chromium.
    """

    def setUp(self) -> None:
        if CHROMIUM is None:
            raise SkipTest("chromium is not installed")
        self.backend = redis_url()
        self.queue = unique_queue()
        self.daemons = []
        self.beat = f"tests.dashboard.beat.{uuid.uuid4().hex[:8]}"
        # An exchange of its own: the events of other tests' daemons on the
        # same broker stay off this page.
        self.exchange = f"dashboard-{uuid.uuid4().hex[:8]}"
        for number in range(2):
            directory = Path(tempfile.mkdtemp(prefix="twistedq-dashboard-"))
            daemon = Daemon(
                directory,
                queue=self.queue,
                result_backend=self.backend,
                tasks="tests.integration.tasks,tests.integration.periodic_tasks",
                extra=(
                    "--name",
                    f"daemon-{number + 1}",
                    "--operator-token",
                    TOKEN,
                    "--exchange",
                    self.exchange,
                ),
                env={
                    "TWISTEDQ_TEST_BEAT_FILE": str(directory / "beats"),
                    "TWISTEDQ_TEST_BEAT_NAME": self.beat,
                    "TWISTEDQ_TEST_BEAT_EVERY": "20",
                },
            )
            self.addCleanup(daemon.stop)
            self.daemons.append(daemon)
        for daemon in self.daemons:
            daemon.wait_ready()
        self.browser = Browser(height=1600)
        self.addCleanup(self.browser.close)
        self.browser.open(f"http://127.0.0.1:{self.daemons[0].status_port}/dashboard/")

    def wait_for(self, expression: str, holds: Callable[[Any], bool], timeout: float = 30) -> Any:
        """
        Evaluate ``expression`` in the page until ``holds`` of its value.
        """
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.browser.evaluate(expression)
            if holds(value):
                return value
            time.sleep(0.2)
        self.fail(f"{expression} is still {value!r} after {timeout} s")

    def test_daemons_and_running_task(self) -> None:
        """
        The page shows both daemons, then a slow task running on one of
        them, then no longer once it is done; it fits 1280 px without
        horizontal scrolling.
        """
        self.wait_for(DAEMONS, lambda found: found == [["daemon-1", False], ["daemon-2", False]])
        self.assertEqual(
            self.browser.evaluate("document.getElementById('live').textContent"), "live"
        )
        slow = publish(
            self.queue, self.backend, exchange=self.exchange, plan={"tasks": [["sleep", [4]]]}
        )["ids"][0]
        running = self.wait_for(RUNNING, lambda found: bool(found) and found[0][0] == slow)
        self.assertIn(running[0][1], ("daemon-1", "daemon-2"))
        self.wait_for(RUNNING, lambda found: found == [])
        width = self.browser.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        self.assertLessEqual(width[0], width[1])

    def test_busy_screenshot(self) -> None:
        """
        A busy page (tasks running on both daemons, failures, a taskset in
        progress, the chart filled) shows them all; its screenshot is kept
        when asked for.
        """
        self.wait_for(DAEMONS, lambda found: len(found) == 2)
        publish(
            self.queue,
            self.backend,
            exchange=self.exchange,
            plan={
                "tasks": [["add", [i, i]] for i in range(40)]
                + [["fail", [f"bad input {i}"]] for i in range(3)]
                + [["sleep", [12]] for _ in range(3)],
                "tasksets": [["sleep", [[0.5]] * 16]],
            },
        )
        self.wait_for(RUNNING, lambda found: len(found) >= 3)
        self.wait_for(
            "document.querySelectorAll('#failures tbody tr[data-id]').length",
            lambda count: count == 3,
        )
        self.wait_for(
            "document.querySelectorAll('#tasksets li[data-id]').length", lambda count: count == 1
        )
        self.browser.evaluate("document.querySelector('#failures tbody tr[data-id]').click()")
        self.wait_for(
            "document.getElementById('traceback').textContent",
            lambda text: "TaskFailed" in (text or "") and "operators only" in text,
        )
        # With the operator token, the traceback itself.
        self.browser.evaluate(
            f"document.getElementById('token').value = {json.dumps(TOKEN)};"
            "document.querySelector('#token-form button').click();"
            "document.querySelector('#failures tbody tr[data-id]').click()"
        )
        self.wait_for(
            "document.getElementById('traceback').textContent",
            lambda text: "Traceback (most recent call last)" in (text or ""),
        )
        self.wait_for(
            "Array.from(document.querySelectorAll('#periodic tbody tr[data-name]'))"
            ".map(r => r.dataset.name)",
            lambda names: names == [self.beat],
        )
        target = os.environ.get("DASHBOARD_SCREENSHOT")
        if target:
            time.sleep(1.5)  # let the taskset's bar move on and the chart fill
            self.browser.evaluate("document.getElementById('message').textContent = ''")
            # The documentation's picture names no folder of this machine:
            # the traceback's paths are shown from the checkout's root.
            root = json.dumps(str(Path(__file__).resolve().parents[2]) + os.sep)
            self.browser.evaluate(
                "const pane = document.getElementById('traceback');"
                f"pane.textContent = pane.textContent.split({root}).join('')"
            )
            self.browser.screenshot(Path(target))

    def test_operator_actions(self) -> None:
        """
        With the operator token typed in, pausing the periodic task shows
        it paused, and terminating a 60-second task takes it off
        "running" at once, REVOKED.
        """
        self.wait_for(DAEMONS, lambda found: len(found) == 2)
        self.browser.evaluate(
            f"document.getElementById('token').value = {json.dumps(TOKEN)};"
            "document.querySelector('#token-form button').click()"
        )
        pause = f"document.querySelector('#periodic tr[data-name=\"{self.beat}\"] button')"
        self.wait_for(f"{pause} && {pause}.textContent", lambda text: text == "pause")
        self.browser.evaluate(f"{pause}.click()")
        self.wait_for(f"{pause} && {pause}.textContent", lambda text: text == "resume")
        slow = publish(
            self.queue, self.backend, exchange=self.exchange, plan={"tasks": [["sleep", [60]]]}
        )["ids"][0]
        row = f"document.querySelector('#running tr[data-id=\"{slow}\"]')"
        self.wait_for(f"!!{row}", bool)
        self.browser.evaluate(f"{row}.querySelector('button.danger').click()")
        self.wait_for(f"!{row}", bool, timeout=15)
        answer = self.wait_for(
            "document.getElementById('message').textContent",
            lambda text: "terminate:" in (text or ""),
        )
        answered = json.loads(answer.split(":", 1)[1])
        # Running already: the daemon running it killed its child and
        # revoked it (the store's revoke could not: its claim was held).
        self.assertEqual((answered["terminated"], answered["running"]), ([slow], []))
        status = f"http://127.0.0.1:{self.daemons[0].status_port}/celery/{slow}/status/"
        deadline = time.monotonic() + 30
        while True:
            with urllib.request.urlopen(status, timeout=10) as response:
                found = json.loads(response.read())["task"]["status"]
            if found == "REVOKED" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(found, "REVOKED")
