"""
What ``/metrics`` costs the daemon when nobody scrapes: the time its
observer adds to each event, and to each task taken through the daemon's
core (dispatcher, memory store, a fake pool: no broker, no child, no
network, so the share measured is larger than in a real daemon, whose
main process also parses AMQP frames and speaks to the store).  Also the
time of one scrape.

    python -m bench.metrics_cost [--tasks 20000]

It runs in one process, in a few seconds, and needs no server.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from prometheus_client.exposition import generate_latest
from twisted.internet import reactor
from twisted.internet.task import Clock

from tests.unit.fakes import FakePool, delivery, task_id
from twistedq.backends.memory import MemoryBackend
from twistedq.daemon.dispatcher import Dispatcher
from twistedq.daemon.events import EventKind, Events
from twistedq.metrics import DaemonMetrics

#: One task's path, as the core reports it with claims.
PATH = (EventKind.RECEIVED, EventKind.CLAIMED, EventKind.STARTED, EventKind.SUCCEEDED)


def best(repeat: int, run: Callable[[], float]) -> float:
    return min(run() for _ in range(repeat))


def events_run(tasks: int, metrics: bool | None) -> float:
    """
    Seconds to report ``tasks`` tasks' paths to one Events, observed by
    nothing, by an observer that does nothing (``None``), or by metrics.
    """
    events = Events()
    if metrics is None:
        events.subscribe(lambda event: None)
    elif metrics:
        DaemonMetrics(events, reactor, lambda: {})  # the reactor's clock, as in the daemon
    ids = [task_id(number) for number in range(tasks)]
    report = events.report
    started = time.perf_counter()
    for tid in ids:
        for kind in PATH:
            report(kind, tid, "add")
    return time.perf_counter() - started


def core_run(tasks: int, metrics: bool) -> float:
    """
    Seconds to take ``tasks`` tasks through a dispatcher, one at a time.
    """
    clock = Clock()
    pool = FakePool(idle=1)
    store = MemoryBackend(clock)
    events = Events()
    if metrics:
        DaemonMetrics(events, clock, lambda: {})
    dispatcher = Dispatcher(pool, store, clock, events=events)
    deliveries = [delivery(number) for number in range(tasks)]
    started = time.perf_counter()
    for index, one in enumerate(deliveries):
        dispatcher.deliver(one)
        pool.finish(index)
    return time.perf_counter() - started


def scrape_time(names: int) -> float:
    """
    Seconds of one scrape of a daemon that ran tasks of ``names`` names.
    """
    clock = Clock()
    events = Events()
    metrics = DaemonMetrics(events, clock, lambda: {})
    for number in range(names * 10):
        tid, name = task_id(number), f"task{number % names}"
        for kind in PATH:
            events.report(kind, tid, name)
    started = time.perf_counter()
    for _ in range(20):
        generate_latest(metrics.registry)
    return (time.perf_counter() - started) / 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20000)
    tasks = parser.parse_args().tasks
    events = len(PATH) * tasks

    bare = best(3, lambda: events_run(tasks, False))
    empty = best(3, lambda: events_run(tasks, None))
    observed = best(3, lambda: events_run(tasks, True))
    print(f"events, no observer:      {bare / events * 1e9:7.0f} ns/event")
    print(f"events, empty observer:   {empty / events * 1e9:7.0f} ns/event")
    print(f"events, metrics observer: {observed / events * 1e9:7.0f} ns/event")
    added = (observed - bare) / tasks
    print(f"  added per task ({len(PATH)} events): {added * 1e6:.2f} us")

    core_bare = best(3, lambda: core_run(tasks, False))
    core_observed = best(3, lambda: core_run(tasks, True))
    print(f"core, no metrics:         {core_bare / tasks * 1e6:7.1f} us/task")
    print(f"core, metrics:            {core_observed / tasks * 1e6:7.1f} us/task")
    share = (core_observed - core_bare) / core_bare * 100
    print(f"  metrics' share of the core's time per task: {share:.1f} %")

    for names in (10, 100):
        print(f"one scrape, {names:3d} task names:  {scrape_time(names) * 1e3:7.2f} ms")


if __name__ == "__main__":
    main()
