"""
Runs the blocking client in a process of its own, as a Django view or a
script would, and prints what it saw as one JSON line.

    python -m tests.integration.client_script BROKER BACKEND QUEUE < request.json

The request is ``{"mode": ..., "count": N, "task": name, "args": [...]}``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from twistedq.client import Client


def main() -> None:
    broker, backend, queue = sys.argv[1:4]
    request = json.load(sys.stdin)
    mode = request["mode"]
    count = request.get("count", 0)
    client = Client(broker_url=broker, result_backend=backend, queue=queue)
    report: dict[str, object] = {}
    if mode == "add":
        started = time.monotonic()
        results = [client.delay_task("add", i, i) for i in range(count)]
        report["ids"] = [r.task_id for r in results]
        report["values"] = [r.get(timeout=60) for r in results]
        report["statuses"] = sorted({str(r.status) for r in results})
        report["seconds"] = time.monotonic() - started
    elif mode == "fail":
        from tests.integration.tasks import TaskFailed

        result = client.delay_task("fail", "boom")
        try:
            result.get(timeout=30)
        except TaskFailed as e:
            report["raised"] = ["TaskFailed", str(e)]
        report["status"] = str(result.status)
        report["result_type"] = type(result.result).__name__
        report["traceback"] = result.traceback
        report["ready"] = result.ready()
        report["successful"] = result.successful()
        report["id"] = result.task_id
        builtin = client.delay_task("fail_builtin", "bad value")
        try:
            builtin.get(timeout=30)
        except ValueError as e:
            report["builtin"] = ["ValueError", str(e)]
        unknown = client.delay_task("no-such-task")
        try:
            unknown.get(timeout=30)
        except KeyError as e:
            report["unknown"] = [type(e).__name__, str(e)]
    elif mode == "one":
        result = client.delay_task(request["task"], *request["args"])
        report["id"] = result.task_id
        report["value"] = result.get(timeout=30)
    elif mode == "threads":
        import threading

        values: dict[int, list[int]] = {}

        def work(thread: int) -> None:
            results = [client.delay_task("add", thread, i) for i in range(count)]
            values[thread] = [r.get(timeout=60) for r in results]

        threads = [threading.Thread(target=work, args=(t,)) for t in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        report["values"] = {str(t): v for t, v in sorted(values.items())}
    elif mode == "fork":
        import os

        from twistedq.reactor_thread import ForkError

        fresh = Client(broker_url=broker, result_backend=backend, queue=queue)
        pid = os.fork()
        if pid == 0:
            # A client first used after the fork works in the child.
            code = 0 if fresh.delay_task("add", 1, 1).get(timeout=30) == 2 else 3
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        report["fresh_child_exit"] = os.waitstatus_to_exitcode(status)
        report["parent_after_fork"] = fresh.delay_task("add", 2, 2).get(timeout=30)
        pid = os.fork()
        if pid == 0:
            # The reactor thread of the parent does not exist here.
            try:
                fresh.delay_task("add", 3, 3)
            except ForkError as e:
                os._exit(0 if "os.fork()" in str(e) else 4)
            os._exit(5)
        _, status = os.waitpid(pid, 0)
        report["used_child_exit"] = os.waitstatus_to_exitcode(status)
        fresh.close()
    elif mode == "revoke":
        from twistedq.task import publish_task

        result = publish_task(
            "echo", ["must not run"], countdown=request.get("countdown"), client=client
        )
        report["id"] = result.task_id
        report["revoked"] = result.revoke()
        report["again"] = result.revoke()
    elif mode == "apply":
        from twistedq.task import publish_task

        report["publishing_at"] = time.time()
        result = publish_task(
            request["task"], request["args"], countdown=request.get("countdown"), client=client
        )
        report["id"] = result.task_id
        if request.get("wait", True):
            try:
                report["value"] = result.get(timeout=request.get("timeout", 60))
            except Exception as e:
                report["raised"] = [type(e).__name__, str(e)]
            report["status"] = str(result.status)
    elif mode == "status":
        outcome = client.get_outcomes([request["id"]])[0]
        report["status"] = str(outcome.status)
        report["retries"] = outcome.retries
        report["eta"] = outcome.eta
    elif mode == "revoke_running":
        result = client.delay_task("sleep", 2)
        time.sleep(1)
        report["revoked"] = result.revoke()
        report["value"] = result.get(timeout=30)
    elif mode == "send":
        report["id"] = client.delay_task(request["task"], *request["args"]).task_id
    elif mode == "statuses":
        report["statuses"] = [
            str(outcome.status) for outcome in client.get_outcomes(request["ids"])
        ]
    elif mode == "publish":
        results = [client.delay_task("add", i, 1) for i in range(count)]
        report["ids"] = [r.task_id for r in results]
    elif mode in OUTAGE_MODES:
        report = OUTAGE_MODES[mode](broker, backend, queue, request)
        if not request.get("close", True):
            print(json.dumps(report))
            return
    else:
        raise SystemExit(f"unknown mode {mode}")
    client.close()
    print(json.dumps(report))


def _attempt(call: Any) -> dict[str, object]:
    """
    Call ``call()``; what it returned or raised, and how long it took.
    """
    started = time.monotonic()
    try:
        value = call()
    except Exception as e:
        return {
            "raised": type(e).__name__,
            "module": type(e).__module__,
            "text": str(e),
            "seconds": time.monotonic() - started,
        }
    return {"value": value, "seconds": time.monotonic() - started}


def _publish_tries(broker: str, backend: str, queue: str, request: Any) -> dict[str, object]:
    """
    Publish ``count`` times to ``request["broker"]`` with ``timeout``.
    """
    client = Client(
        broker_url=request["broker"],
        result_backend=backend,
        queue=queue,
        timeout=request["timeout"],
    )
    tries = [
        _attempt(lambda: client.delay_task("add", 1, 2).task_id)
        for _ in range(request.get("count", 1))
    ]
    client.close()
    return {"tries": tries}


class Proxy:
    """
    A TCP proxy in threads, in front of the broker: it can stop passing
    the broker's answers on, cut its connections, and stop listening.
    """

    def __init__(self, host: str, port: int) -> None:
        import socket
        import threading

        self.upstream = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.hold = threading.Event()
        self.sockets: list[Any] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            self.sockets += [downstream, upstream]
            threading.Thread(
                target=self._pump, args=(downstream, upstream, False), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(upstream, downstream, True), daemon=True
            ).start()

    def _pump(self, source: Any, sink: Any, answers: bool) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                return
            if answers and self.hold.is_set():
                continue
            try:
                sink.sendall(data)
            except OSError:
                return

    def cut(self) -> None:
        import socket

        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self.sockets = []

    def close(self) -> None:
        self.listener.close()
        self.cut()


def _die_in_flight(broker: str, backend: str, queue: str, request: Any) -> dict[str, object]:
    """
    Publish through a proxy; then publish while the proxy holds back the
    broker's answers and cut the connection under the publish; then stop
    the proxy and publish again.
    """
    import threading
    from urllib.parse import urlsplit

    parts = urlsplit(broker)
    proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 5672)
    address = broker.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}")
    client = Client(broker_url=address, result_backend=backend, queue=queue, timeout=10)
    report: dict[str, object] = {}
    report["first"] = _attempt(lambda: client.delay_task("add", 1, 1).task_id)
    proxy.hold.set()
    threading.Timer(1.0, proxy.cut).start()
    report["in_flight"] = _attempt(lambda: client.delay_task("add", 2, 2).task_id)
    proxy.close()
    report["gone"] = _attempt(lambda: client.delay_task("add", 3, 3).task_id)
    client.close()
    return report


def _store_hangs(broker: str, backend: str, queue: str, request: Any) -> dict[str, object]:
    """
    Publish with a result store that accepts connections and never
    answers: the caller gets its result handle all the same.
    """
    import socket

    silent = socket.create_server(("127.0.0.1", 0))
    store = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
    client = Client(broker_url=broker, result_backend=store, queue=queue, timeout=2)
    handle: list[Any] = []
    report = {"publish": _attempt(lambda: handle.append(client.delay_task("add", 1, 2)))}
    if handle:
        report["publish"]["value"] = handle[0].task_id
        report["get"] = _attempt(lambda: handle[0].get(timeout=1))
    report["purged"] = _attempt(lambda: client.purge())
    return report


def _taskset_broker_gone(broker: str, backend: str, queue: str, request: Any) -> dict[str, object]:
    """
    Run a TaskSet while the broker refuses connections; read the
    taskset's record afterwards.
    """
    from twistedq.task import TaskSet

    client = Client(broker_url=request["broker"], result_backend=backend, queue=queue, timeout=5)
    taskset = TaskSet("add", [((i, i), {}) for i in range(3)], client)
    report = {"run": _attempt(taskset.run)}
    import re

    match = re.search(r"taskset ([0-9a-f-]{36})", str(report["run"].get("text", "")))
    if match:
        state = client.get_taskset(match.group(1))
        report["taskset"] = None if state is None else [*state, state.ready]
    client.close()
    return report


def _read_one(broker: str, backend: str, queue: str, request: Any) -> dict[str, object]:
    """
    Publish one task and wait for it with a first client, closed; then,
    as a script that only reads would, read its result with a fresh client
    (woken by the store's notification unless ``notify`` is false) and
    leave (closing that client first when ``close_client`` is true).
    """
    from twistedq.result import AsyncResult

    notify = request.get("notify", True)
    publisher = Client(broker_url=broker, result_backend=backend, queue=queue, notify=notify)
    task_id = publisher.delay_task("add", 20, 22).task_id
    publisher.wait_outcome(task_id, timeout=30)
    publisher.close()
    reader = Client(
        broker_url=broker,
        result_backend=backend,
        queue=queue,
        notify=notify,
    )
    value = AsyncResult(task_id, reader).get(timeout=30)
    if request.get("close_client"):
        reader.close()
    return {"value": value}


OUTAGE_MODES = {
    "publish_tries": _publish_tries,
    "die_in_flight": _die_in_flight,
    "store_hangs": _store_hangs,
    "taskset_broker_gone": _taskset_broker_gone,
    "read_one": _read_one,
}


if __name__ == "__main__":
    main()
