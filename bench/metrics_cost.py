"""
What ``/metrics`` costs the daemon when nobody scrapes: the time its
observer adds to each event, and to each task taken through the daemon's
core (dispatcher, memory store, a fake pool: no broker, no child, no
network, so the share measured is larger than in a real daemon, whose
main process also parses AMQP frames and speaks to the store).  Also the
time of one scrape.  Times are the process's CPU time, the least of five
runs taken in turn, so that other work on the machine counts little.

    python -m bench.metrics_cost [--tasks 10000]

It runs in one process, in a few seconds, and needs no server.
"""

from __future__ import annotations

import argparse
import gc
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


def best_of_each(repeat: int, *runs: Callable[[], float]) -> list[float]:
    """
    The shortest time of each run, the runs taken in turn ``repeat``
    times (so that a busy moment of the machine falls on all of them).
    """
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeat):
        for taken, run in zip(times, runs, strict=True):
            gc.collect()  # not the garbage of the run before
            taken.append(run())
    return [min(taken) for taken in times]


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
    started = time.process_time()
    for tid in ids:
        for kind in PATH:
            report(kind, tid, "add")
    return time.process_time() - started


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
    started = time.process_time()
    for index, one in enumerate(deliveries):
        dispatcher.deliver(one)
        pool.finish(index)
    return time.process_time() - started


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
    started = time.process_time()
    for _ in range(20):
        generate_latest(metrics.registry)
    return (time.process_time() - started) / 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10000)
    tasks = parser.parse_args().tasks
    events = len(PATH) * tasks

    bare, empty, observed = best_of_each(
        5,
        lambda: events_run(tasks, False),
        lambda: events_run(tasks, None),
        lambda: events_run(tasks, True),
    )
    print(f"events, no observer:      {bare / events * 1e9:7.0f} ns/event")
    print(f"events, empty observer:   {empty / events * 1e9:7.0f} ns/event")
    print(f"events, metrics observer: {observed / events * 1e9:7.0f} ns/event")
    added = (observed - bare) / tasks
    print(f"  added per task ({len(PATH)} events): {added * 1e6:.2f} us")

    core_bare, core_observed = best_of_each(
        5, lambda: core_run(tasks, False), lambda: core_run(tasks, True)
    )
    print(f"core, no metrics:         {core_bare / tasks * 1e6:7.1f} us/task")
    print(f"core, metrics:            {core_observed / tasks * 1e6:7.1f} us/task")
    share = (core_observed - core_bare) / core_bare * 100
    print(f"  metrics' share of the core's time per task: {share:.1f} %")

    for names in (10, 100):
        print(f"one scrape, {names:3d} task names:  {scrape_time(names) * 1e3:7.2f} ms")


if __name__ == "__main__":
    main()
