"""
End-to-end throughput, latency and memory of twistedq, side by side with
Celery and Dramatiq on the same broker and result store (each on queues of
its own, in the same run), when they are installed (``pip install -e
'.[bench]'``).

For each system it measures, with results stored:

* stream: N no-op tasks published (in windows, confirms awaited per window)
  while the worker consumes them; tasks/s from the first publish to the
  last stored result;
* drain: N tasks published while no worker runs, then the worker started;
  tasks/s between the first and the last result stored;
* publish: the rate of that batch publish with no worker running (the
  client's fastest way: twistedq's ``publish_many``, one call after
  another for the peers, which have no batch publish);
* calls: K publishes one after another from one thread (``delay_task``,
  ``apply_async``, ``send``), tasks/s;
* latency: M round trips one at a time (publish, then ``get()``), in ms;
* RSS of the workers and their children after the runs;
* CPU per task while streaming, in microseconds, in the workers' main
  processes and in their children apart (less noisy than the rates on a
  busy machine: compare versions by it).

Then twistedq's ratio to each peer.

    python -m bench.throughput [--tasks 20000] [--latency 500] [--calls 2000]
                               [--daemons N] [--no-celery] [--no-dramatiq]
                               [--source OTHER_CHECKOUT] [--events [--repeat 2]]

``--daemons N`` runs N twistedq daemons (of ``--concurrency`` children
each) on one queue.  Dramatiq runs ``--dramatiq-processes`` (2) processes
of ``--dramatiq-threads`` (8) threads, Celery ``--concurrency`` prefork
processes.  Both peers run with their defaults, so their clients publish
without publisher confirms (a message lost by the broker goes unseen),
where twistedq's always waits for them; ``--dramatiq-confirms`` turns them
on for Dramatiq.

``--source`` runs twistedq's daemon from another checkout (an older commit,
say) against the same servers, to compare two versions.

``--events`` measures twistedq alone, in four variants run in turn
``--repeat`` times each (alternated, as the machine's noise drifts):
``--no-events``; events on with nobody listening; events on with a
listener of every event (an :py:class:`~twistedq.amqp.events.EventReceiver`
bound to ``#`` in a process of its own, counting what it receives); and
the daemon's live dashboard open (its Server-Sent Events stream read in a
process of its own, as a browser tab would, counting the updates).  Each
variant serves its status site (``/metrics`` and the dashboard), as a
daemon does by default.  The
rows are printed side by side with each variant's mean relative to
``--no-events``.

It starts its own workers on queues of its own; RabbitMQ and Redis must be
running (``scripts/services start rabbitmq redis``).
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.peers import CelerySystem, DramatiqSystem
from bench.processes import (
    cpu_seconds,
    listener_pid,
    percentiles,
    rss_mib,
    stop,
    wait_for_log,
)

ROOT = Path(__file__).resolve().parent.parent


def start_twistedq(
    workdir: Path,
    broker: str,
    result_backend: str,
    queue: str,
    concurrency: int,
    source: Path = ROOT,
    extra: tuple[str, ...] = (),
) -> subprocess.Popen[bytes]:
    """
    Start ``twistd -n twistedq`` on ``bench.tasks`` from the checkout
    ``source`` and return once every child started and it consumes.
    """
    log = workdir / "twistd.log"
    log.unlink(missing_ok=True)
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    process = subprocess.Popen(
        [
            twistd,
            "-n",
            "--pidfile=",
            "--logfile",
            str(log),
            "twistedq",
            "--broker",
            broker,
            "--result-backend",
            result_backend,
            "--queue",
            queue,
            "--concurrency",
            str(concurrency),
            "--tasks",
            "bench.tasks",
            "--status",
            "none",
            *extra,
        ],
        cwd=workdir,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(source), str(ROOT)])),
    )
    try:
        wait_for_log(log, process, ["Consuming", f"Process-{concurrency}"])
    except BaseException as e:
        # Not ready (a wrong URL, a server down) or interrupted: it must not
        # stay behind, retrying for ever.
        stop(process, wait=5)
        if isinstance(e, SystemExit):
            raise SystemExit(
                f"twistedq's daemon did not start (broker {broker}, store {result_backend}): {e}"
            ) from None
        raise
    return process


class TwistedqSystem:
    """
    ``--daemons`` twistedq daemons of ``--concurrency`` children each on
    one queue; its client publishes batches with ``publish_many`` and one
    task with ``delay_task``.
    """

    name = "twistedq"

    def __init__(
        self, options: argparse.Namespace, name: str = "twistedq", extra: tuple[str, ...] = ()
    ) -> None:
        from twistedq.client import Client

        self.name = name
        self.extra = extra
        self.options = options
        self.queue = f"bench-{uuid.uuid4().hex[:8]}"
        self.client = Client(
            broker_url=options.broker, result_backend=options.result_backend, queue=self.queue
        )
        self.workdir = Path(tempfile.mkdtemp(prefix="twistedq-bench-"))
        self.processes: list[subprocess.Popen[bytes]] = []

    def start_worker(self) -> None:
        self.processes = []
        try:
            for number in range(self.options.daemons):
                workdir = self.workdir / str(number)
                workdir.mkdir(exist_ok=True)
                self.processes.append(
                    start_twistedq(
                        workdir,
                        self.options.broker,
                        self.options.result_backend,
                        self.queue,
                        self.options.concurrency,
                        self.options.source,
                        self.extra,
                    )
                )
        except BaseException:
            self.stop_worker()  # those started before the one that failed
            raise

    def stop_worker(self) -> None:
        for process in self.processes:
            stop(process)

    def publish(self, count: int) -> list[str]:
        from twistedq.message import TaskMessage, new_task_id

        ids = []
        window = 1000
        for start in range(0, count, window):
            batch = [
                TaskMessage(id=new_task_id(), task="noop")
                for _ in range(min(window, count - start))
            ]
            self.client.publish_many(batch)
            ids.extend(m.id for m in batch)
        return ids

    def publish_one(self) -> str:
        return self.client.delay_task("noop").task_id

    def done_times(self, ids: list[str]) -> list[float] | None:
        outcomes = []
        for start in range(0, len(ids), 5000):
            outcomes.extend(self.client.get_outcomes(ids[start : start + 5000]))
        if not all(o.ready for o in outcomes):
            return None
        return [datetime.datetime.fromisoformat(o.date_done).timestamp() for o in outcomes]

    def round_trip(self) -> None:
        self.client.delay_task("noop").get(timeout=30)


#: How many of the latest tasks :py:func:`wait_done` watches.
LAST_FEW = 20


def wait_done(system: Any, ids: list[str], timeout: float = 600) -> list[float]:
    """
    The completion times of ``ids``, once every one is done.  Until the
    last few published are done only they are read, so that the watching
    takes little of the CPU the systems measured share with it (reading
    every outcome every 0.2 s cost up to 90 us per task).
    """
    deadline = time.monotonic() + timeout
    last = ids[-LAST_FEW:]
    while time.monotonic() < deadline:
        if system.done_times(last) is not None:
            times = system.done_times(ids)
            if times is not None:
                return times
        time.sleep(0.05)
    raise SystemExit(f"{system.name}: not all tasks done within {timeout} s")


def cpu_of(processes: list[subprocess.Popen[bytes]]) -> tuple[float, float]:
    """
    CPU seconds so far of the workers' main processes and, apart, of their
    children, summed over the workers.
    """
    own, children = zip(*(cpu_seconds(process.pid) for process in processes), strict=True)
    return sum(own), sum(children)


class PartsCPU:
    """
    CPU time of each part of a run: the workers' main processes, their
    children, the broker and the store (when they run on this machine)
    and this benchmark process (the client, and its watching).
    """

    PARTS = ("worker", "children", "broker", "store", "client")

    def __init__(self, options: argparse.Namespace) -> None:
        self.servers = [
            listener_pid(urlsplit(url).port or default)
            for url, default in ((options.broker, 5672), (options.result_backend, 6379))
        ]

    def now(self, processes: list[subprocess.Popen[bytes]]) -> list[float]:
        servers = [cpu_seconds(pid)[0] if pid else math.nan for pid in self.servers]
        return [*cpu_of(processes), *servers, time.process_time()]

    @staticmethod
    def per_task(before: list[float], after: list[float], tasks: int) -> list[float]:
        """
        Microseconds a task of each part between two readings.
        """
        return [(b - a) / tasks * 1e6 for a, b in zip(before, after, strict=True)]


def measure(system: Any, options: argparse.Namespace) -> dict[str, Any]:
    """
    Stream, round trips, one-by-one publishes and RSS with the worker
    running; then a batch published with no worker (the client's batch
    rate) and drained.  The CPU of each part is read around the stream
    and the drain.
    """
    figures: dict[str, Any] = {}
    parts = PartsCPU(options)
    system.start_worker()
    try:
        for _ in range(200):  # warm up
            system.round_trip()
        started = time.time()
        cpu_before = parts.now(system.processes)
        ids = system.publish(options.tasks)
        times = wait_done(system, ids)
        figures["stream"] = options.tasks / (max(times) - started)
        figures["parts_stream"] = parts.per_task(
            cpu_before, parts.now(system.processes), options.tasks
        )
        figures["cpu"] = figures["parts_stream"][:2]

        samples = []
        for _ in range(options.latency):
            t0 = time.perf_counter()
            system.round_trip()
            samples.append((time.perf_counter() - t0) * 1000)
        figures["latency"] = percentiles(samples)

        t0 = time.perf_counter()
        ids = [system.publish_one() for _ in range(options.calls)]
        figures["calls"] = options.calls / (time.perf_counter() - t0)
        wait_done(system, ids)
        figures["rss"] = sum(rss_mib(process.pid) for process in system.processes)
    finally:
        system.stop_worker()

    t0 = time.perf_counter()
    ids = system.publish(options.tasks)
    figures["publish"] = options.tasks / (time.perf_counter() - t0)
    system.start_worker()
    try:
        # The worker drains from the moment it consumes, before this
        # reading: the CPU is divided over the tasks done after it.
        read_at, cpu_before = time.time(), parts.now(system.processes)
        times = wait_done(system, ids)
        figures["drain"] = options.tasks / (max(times) - min(times))
        after = sum(1 for done in times if done >= read_at)
        figures["parts_drain"] = (
            parts.per_task(cpu_before, parts.now(system.processes), after)
            if after >= options.tasks // 2
            else [math.nan] * len(PartsCPU.PARTS)  # too few to say
        )
    finally:
        system.stop_worker()
    return figures


class Listener:
    """
    An events listener of every event in a process of its own
    (``python -m bench.throughput --listen``), for the variant of
    ``--events`` where someone listens.
    """

    def __init__(self, broker: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.throughput", "--listen", "--broker", broker],
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "listening":
            sys.exit("the events listener did not start")

    def stop(self) -> int:
        """
        Stop it; how many events it received.
        """
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=60)
        return int(out.split()[-1]) if out.split() else 0


def listen(broker: str) -> None:
    """
    Listen to every event until SIGTERM, then print how many came.
    """
    from twisted.internet import defer, reactor, task

    from twistedq.amqp.broker import BrokerAddress, BrokerConnection
    from twistedq.amqp.events import EventReceiver

    received = [0]

    def count(documents: list[dict[str, Any]]) -> None:
        received[0] += len(documents)

    async def run(_: Any) -> None:
        connection = BrokerConnection(BrokerAddress.from_url(broker), reactor)
        connection.startService()
        await EventReceiver(connection, "twistedq", count).start()
        print("listening", flush=True)
        reactor.addSystemEventTrigger("before", "shutdown", lambda: print(received[0]))
        await defer.Deferred()

    task.react(lambda r: defer.Deferred.fromCoroutine(run(r)))


class DashboardViewer:
    """
    The live dashboard of a daemon held open, as a browser tab would: its
    Server-Sent Events stream read in a process of its own
    (``python -m bench.throughput --watch-dashboard PORT``), connected
    again whenever the daemon restarts, for the variant of ``--events``
    where someone watches.
    """

    def __init__(self, port: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.throughput", "--watch-dashboard", str(port)],
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdout=subprocess.PIPE,
            text=True,
        )

    def stop(self) -> int:
        """
        Stop it; how many updates it received.
        """
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=60)
        return int(out.split()[-1]) if out.split() else 0


def watch_dashboard(port: int) -> None:
    """
    Read the dashboard's stream on ``port`` until SIGTERM (connecting again
    while the daemon is down), then print how many updates came.
    """
    import urllib.request

    updates = [0]

    def stopped(*_: Any) -> None:
        print(updates[0], flush=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, stopped)
    url = f"http://127.0.0.1:{port}/dashboard/stream"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=30) as stream:
                for line in stream:
                    if line.startswith(b"data:"):
                        updates[0] += 1
        except OSError:
            time.sleep(0.1)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def compare_events(options: argparse.Namespace) -> None:
    """
    Run the three variants of ``--events`` in turn, ``--repeat`` times,
    and print them side by side.
    """
    port = free_port()
    # Every variant serves its status site (with /metrics and the
    # dashboard), as a daemon does by default: they differ only in events
    # and in who watches.
    status = ("--status", f"tcp:{port}:interface=127.0.0.1")
    variants: list[tuple[str, tuple[str, ...], Callable[[], Any] | None]] = [
        ("events off", (*status, "--no-events"), None),
        ("events on", status, None),
        ("listener", status, lambda: Listener(options.broker)),
        ("dashboard", status, lambda: DashboardViewer(port)),
    ]
    rows: list[tuple[str, dict[str, Any], int | None]] = []
    for round_number in range(options.repeat):
        for name, extra, watcher in variants:
            print(f"running {name} ({round_number + 1}/{options.repeat}) ...", flush=True)
            watching = watcher() if watcher is not None else None
            try:
                figures = measure(TwistedqSystem(options, name, extra), options)
            finally:
                received = watching.stop() if watching is not None else None
            rows.append((name, figures, received))
    print(
        f"\n{options.tasks} no-op tasks, concurrency {options.concurrency}, "
        f"results in {options.result_backend}, broker {options.broker.split('@')[-1]}"
    )
    header = (
        f"{'variant':<11} {'stream/s':>9} {'drain/s':>9} {'p50 ms':>8} "
        f"{'CPU us/task':>12} {'received':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, f, received in rows:  # received: events (listener) or updates (dashboard)
        print(
            f"{name:<11} {f['stream']:>9.0f} {f['drain']:>9.0f} {f['latency']['p50']:>8.2f} "
            f"{f['cpu'][0]:>12.0f} {received if received is not None else '-':>8}"
        )
    print("\nmean of each variant, and relative to events off:")
    means = {}
    for name, _, _ in variants:
        mine = [f for n, f, _ in rows if n == name]
        means[name] = {
            key: statistics.mean(f[key] if key != "cpu" else f["cpu"][0] for f in mine)
            for key in ("stream", "drain", "cpu")
        }
    base = means["events off"]
    for name, mean in means.items():
        change = {key: mean[key] / base[key] - 1 for key in mean}
        print(
            f"{name:<11} stream {mean['stream']:>6.0f}/s ({change['stream']:+.1%})"
            f"  drain {mean['drain']:>6.0f}/s ({change['drain']:+.1%})"
            f"  CPU {mean['cpu']:>4.0f} us/task ({change['cpu']:+.1%})"
        )


def main() -> None:
    # Ctrl-C or a SIGTERM stops the run, and its workers with it (the
    # peers' libraries may have taken SIGINT for themselves).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--broker",
        default=os.environ.get("TWISTEDQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
    )
    parser.add_argument(
        "--result-backend",
        default=os.environ.get("TWISTEDQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    )
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--latency", type=int, default=500)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--daemons", type=int, default=1, help="twistedq daemons on one queue")
    parser.add_argument("--no-celery", action="store_true")
    parser.add_argument("--no-dramatiq", action="store_true")
    parser.add_argument("--dramatiq-processes", type=int, default=2)
    parser.add_argument("--dramatiq-threads", type=int, default=8)
    parser.add_argument(
        "--dramatiq-confirms",
        action="store_true",
        help="Dramatiq's client waits for publisher confirms (its default is not to)",
    )
    parser.add_argument(
        "--source",
        type=Path,
        default=ROOT,
        help="run twistedq's daemon from this checkout (to compare versions)",
    )
    parser.add_argument(
        "--events",
        action="store_true",
        help="compare twistedq with events off, on with no listener, on with a listener, "
        "and with its live dashboard open",
    )
    parser.add_argument("--repeat", type=int, default=2, help="runs of each --events variant")
    parser.add_argument("--listen", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--watch-dashboard", type=int, metavar="PORT", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.listen:
        listen(options.broker)
        return
    if options.watch_dashboard:
        watch_dashboard(options.watch_dashboard)
        return
    if options.events:
        compare_events(options)
        return

    systems: list[Any] = [TwistedqSystem(options)]
    peers = [] if options.no_celery else [("celery", CelerySystem)]
    peers += [] if options.no_dramatiq else [("dramatiq", DramatiqSystem)]
    for name, peer in peers:
        try:
            systems.append(peer(options))
        except ImportError:
            print(f"({name} is not installed: pip install -e '.[bench]' to compare)")
    results = {}
    for system in systems:
        print(f"running {system.name} ...", flush=True)
        results[system.name] = measure(system, options)
    print_results(options, results)


def print_results(options: argparse.Namespace, results: dict[str, dict[str, Any]]) -> None:
    """
    One row per system, then twistedq's ratio to each peer.
    """
    print(
        f"\n{options.tasks} no-op tasks, twistedq {options.daemons} daemon(s) x "
        f"{options.concurrency} children, celery -c {options.concurrency}, dramatiq "
        f"{options.dramatiq_processes} x {options.dramatiq_threads} threads"
        f"{' with' if options.dramatiq_confirms else ' without'} confirms, results in "
        f"{options.result_backend}, broker {options.broker.split('@')[-1]}"
    )
    header = (
        f"{'system':<9} {'stream/s':>9} {'drain/s':>8} {'publish/s':>9} {'calls/s':>8} "
        f"{'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'RSS MiB':>8} {'CPU us/task':>11} "
        f"{'children':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, f in results.items():
        lat = f["latency"]
        print(
            f"{name:<9} {f['stream']:>9.0f} {f['drain']:>8.0f} {f['publish']:>9.0f} "
            f"{f['calls']:>8.0f} {lat['p50']:>7.2f} {lat['p90']:>7.2f} {lat['p99']:>7.2f} "
            f"{f['rss']:>8.1f} {f['cpu'][0]:>11.0f} {f['cpu'][1]:>8.0f}"
        )
    print_parts(results)
    ours = results["twistedq"]
    for name, theirs in results.items():
        if name == "twistedq":
            continue
        ratios = "  ".join(
            f"{key} {ours[key] / theirs[key]:.2f}x"
            for key in ("stream", "drain", "publish", "calls")
        )
        print(f"twistedq / {name}: {ratios}")


def print_parts(results: dict[str, dict[str, Any]]) -> None:
    """
    CPU microseconds per task of each part while streaming and while
    draining (the drain's client column is the benchmark's watching only;
    its figures are of the tasks done after the workers were up; "-": that
    server is not on this machine, or fewer than half the tasks were done
    after the workers were up).
    """
    print("\nCPU us per task  " + " ".join(f"{part:>9}" for part in PartsCPU.PARTS) + "    total")
    for name, f in results.items():
        for phase in ("stream", "drain"):
            values = f[f"parts_{phase}"]
            cells = " ".join("        -" if math.isnan(v) else f"{v:>9.0f}" for v in values)
            known = [v for v in values if not math.isnan(v)]
            total = f"{sum(known):>8.0f}" if known else "       -"
            print(f"{name + ' ' + phase:<16} {cells} {total}")
    print()


if __name__ == "__main__":
    main()
