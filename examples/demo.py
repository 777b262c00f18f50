"""
The demo: start ``twistd -n twistedq`` on the demo tasks, publish real
tasks from the blocking client, print their results and status JSON, and
stop the daemon.  ``scripts/demo`` starts RabbitMQ and Redis first.

    python -m examples.demo [--broker URL] [--result-backend URL]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from twistedq.client import Client

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(log_path: Path, process: subprocess.Popen[bytes], concurrency: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = log_path.read_text() if log_path.exists() else ""
        if "Consuming" in text and text.count("Started Process-") >= concurrency:
            return
        if process.poll() is not None:
            sys.exit(f"the daemon exited with {process.returncode}:\n{text}")
        time.sleep(0.1)
    sys.exit("the daemon did not start within 30 s")


def status_json(port: int, task_id: str) -> str:
    url = f"http://127.0.0.1:{port}/celery/{task_id}/status/"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.dumps(json.load(response))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--result-backend", default="redis://127.0.0.1:6379/0")
    options = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="twistedq-demo-"))
    port = free_port()
    log_path = workdir / "twistd.log"
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    command = [
        twistd,
        "-n",
        "--pidfile=",
        "--logfile",
        str(log_path),
        "twistedq",
        "--broker",
        options.broker,
        "--result-backend",
        options.result_backend,
        "--queue",
        "twistedq-demo",
        "--concurrency",
        "2",
        "--tasks",
        "examples.demo_tasks",
        "--status",
        f"tcp:{port}:interface=127.0.0.1",
    ]
    print("$", " ".join([*command[:1], "-n", *command[5:]]))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    daemon = subprocess.Popen(command, cwd=workdir, env=env)
    try:
        wait_for(log_path, daemon, 2)
        print(f"daemon ready; status resource on http://127.0.0.1:{port}/")
        client = Client(
            broker_url=options.broker, result_backend=options.result_backend, queue="twistedq-demo"
        )

        result = client.delay_task("add", 2, 3)
        print(f'\n>>> result = delay_task("add", 2, 3)   # task id {result.task_id}')
        print(">>> result.get()")
        print(result.get(timeout=30))
        print(">>> result.status")
        print(repr(str(result.status)))
        print("GET /celery/<id>/status/ ->", status_json(port, result.task_id))

        failing = client.delay_task("divide", 1, 0)
        print(f'\n>>> failing = delay_task("divide", 1, 0)   # task id {failing.task_id}')
        print(">>> failing.get()")
        try:
            failing.get(timeout=30)
        except ZeroDivisionError as e:
            print(f"raised ZeroDivisionError: {e}")
        print(">>> failing.status, failing.result")
        print(repr(str(failing.status)), repr(failing.result))
        print("GET /celery/<id>/status/ ->", status_json(port, failing.task_id)[:200] + "...")

        results = [client.delay_task("add", i, i) for i in range(10)]
        print("\n>>> [delay_task('add', i, i).get() for i in range(10)]")
        print([r.get(timeout=30) for r in results])
        client.close()
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        print("\nwhat the children logged, and how the daemon stopped:")
        lines = log_path.read_text().splitlines() if log_path.exists() else []
        for line in lines:
            if ("Process-" in line and "stderr" in line) or "Drained" in line:
                print("   ", line[:160])
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
