"""
Tests for :py:obj:`twistedq.dashboard.state` and
:py:obj:`twistedq.dashboard.watch`: the cluster as the event documents
tell it, and the watch that feeds it only while someone looks.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.fakes import task_id
from twistedq.backends.memory import MemoryBackend
from twistedq.dashboard.state import BUCKET_SECONDS, ClusterState
from twistedq.dashboard.watch import ClusterWatch


def heartbeat(name: str, when: float, **fields: Any) -> dict[str, Any]:
    document = {
        "type": "daemon.heartbeat",
        "time": when,
        "daemon": name,
        "host": "h",
        "pid": 7,
        "queue": "q",
        "interval": 2.0,
        "children": 2,
        "busy": 1,
        "held": 3,
    }
    document.update(fields)
    return document


def task_event(kind: str, number: int, when: float, **fields: Any) -> dict[str, Any]:
    document = {
        "type": f"task.{kind}",
        "time": when,
        "daemon": "d1",
        "host": "h",
        "pid": 7,
        "queue": "q",
        "id": task_id(number),
        "name": "add",
    }
    document.update(fields)
    return document


class ClusterStateTests(SynchronousTestCase):
    """
    :py:class:`ClusterState` made from event documents.
    """

    def setUp(self) -> None:
        self.now = 1_000_000.0
        self.state = ClusterState(lambda: self.now)

    def test_daemons_from_heartbeats(self) -> None:
        """
        A heartbeat makes or updates a daemon with its load; the unacked
        count is the sum of what the daemons hold; offline removes it.
        """
        self.state.on_events([heartbeat("d1", self.now), heartbeat("d2", self.now, held=4)])
        sections = self.state.sections()
        self.assertEqual([d["name"] for d in sections["daemons"]], ["d1", "d2"])
        self.assertEqual(sections["daemons"][0]["busy"], 1)
        self.assertEqual(sections["queues"]["unacked"], 7)
        self.state.on_events([{"type": "daemon.offline", "daemon": "d2", "time": self.now}])
        self.assertEqual([d["name"] for d in self.state.sections()["daemons"]], ["d1"])

    def test_gone_after_three_missed_heartbeats(self) -> None:
        """
        A daemon silent for more than three heartbeat intervals is gone
        (and its held messages no longer counted); much later it is
        dropped with its running tasks.
        """
        self.state.on_events([heartbeat("d1", self.now), task_event("started", 1, self.now)])
        self.now += 6.0
        self.state.expire()
        self.assertFalse(self.state.sections()["daemons"][0]["gone"])
        self.now += 0.5
        self.state.expire()
        self.assertTrue(self.state.sections()["daemons"][0]["gone"])
        self.assertEqual(self.state.sections()["queues"]["unacked"], 0)
        self.now += 60.0
        self.state.expire()
        self.assertEqual(self.state.sections()["daemons"], [])
        self.assertEqual(self.state.sections()["running"], [])

    def test_running_tasks(self) -> None:
        """
        A task runs from its started event to its final event; successes
        and failures are counted in the current bar of the chart, and a
        failure goes to the latest failures, newest first.
        """
        self.state.on_events(
            [
                task_event("started", 1, self.now, args="(1, 2)", child="Process-1"),
                task_event("started", 2, self.now),
            ]
        )
        running = self.state.sections()["running"]
        self.assertEqual([t["id"] for t in running], [task_id(1), task_id(2)])
        self.assertEqual(running[0]["args"], "(1, 2)")
        self.assertEqual(running[0]["child"], "Process-1")
        self.state.on_events(
            [
                task_event("succeeded", 1, self.now, runtime=0.1),
                task_event("failed", 2, self.now, exception="ValueError"),
                task_event("failed", 3, self.now + 1, exception="KeyError"),
            ]
        )
        sections = self.state.sections()
        self.assertEqual(sections["running"], [])
        self.assertEqual(sum(sections["rates"]["succeeded"]), 1)
        self.assertEqual(sections["rates"]["failed"][-1], 2)
        self.assertEqual(
            [(f["id"], f["exception"]) for f in sections["failures"]],
            [(task_id(3), "KeyError"), (task_id(2), "ValueError")],
        )

    def test_args_from_started(self) -> None:
        """
        A running task shows the argument preview of its started event; a
        received event alone shows nothing running.
        """
        self.state.on_events([task_event("received", 2, self.now, args="(1,), {}")])
        self.assertEqual(self.state.sections()["running"], [])
        self.state.on_events([task_event("started", 1, self.now, args="(3, 4), {}")])
        self.assertEqual(self.state.sections()["running"][0]["args"], "(3, 4), {}")

    def test_end_before_start(self) -> None:
        """
        A task's end that arrives before its start (they travel in
        different messages) leaves no ghost running; a later attempt of
        the same task (a retry) runs again.
        """
        self.state.on_events([task_event("succeeded", 1, self.now)])
        self.state.on_events([task_event("started", 1, self.now - 0.01)])
        self.assertEqual(self.state.sections()["running"], [])
        self.state.on_events([task_event("retried", 2, self.now)])
        self.state.on_events([task_event("started", 2, self.now + 5)])
        self.assertEqual([t["id"] for t in self.state.sections()["running"]], [task_id(2)])

    def test_chart_keeps_ten_minutes(self) -> None:
        """
        The chart has 60 bars of 10 s; a count older than 10 minutes
        falls off it.
        """
        self.state.on_events([task_event("succeeded", 1, self.now)])
        rates = self.state.rates()
        self.assertEqual(len(rates["succeeded"]), 60)
        self.assertEqual(rates["width"], BUCKET_SECONDS)
        self.now += 590
        self.assertEqual(sum(self.state.rates()["succeeded"]), 1)
        self.now += 20
        self.state.expire()
        self.assertEqual(sum(self.state.rates()["succeeded"]), 0)
        self.assertEqual(len(self.state.buckets), 0)

    def test_memory_bounded(self) -> None:
        """
        However many tasks start and fail, the state keeps at most its caps.
        """
        state = ClusterState(lambda: self.now, max_running=50, max_running_shown=10)
        for number in range(2000):
            state.on_events(
                [
                    task_event("started", number, self.now, taskset=task_id(number + 10**6)),
                    task_event("failed", number - 100, self.now),
                ]
            )
        self.assertEqual(len(state.running), 50)
        self.assertEqual(state.sections()["running_count"], 50)
        self.assertEqual(len(state.sections()["running"]), 10)
        self.assertEqual(len(state.ended), 500)
        self.assertEqual(len(state.failures), 20)
        self.assertEqual(len(state.tasksets), 20)
        self.assertGreater(state.running_dropped, 0)

    def test_tasksets(self) -> None:
        """
        A task event naming a taskset shows it; its progress is what the
        store says; a ready one goes a minute after its last event.
        """
        taskset = task_id(99)
        self.state.on_events([task_event("received", 1, self.now, taskset=taskset)])
        self.state.set_taskset_progress(
            taskset, {"total": 4, "completed": 4, "failed": 1, "ready": True}
        )
        shown = self.state.sections()["tasksets"]
        self.assertEqual(shown[0]["id"], taskset)
        self.assertEqual((shown[0]["completed"], shown[0]["failed"]), (4, 1))
        self.now += 61
        self.state.expire()
        self.assertEqual(self.state.sections()["tasksets"], [])

    def test_unreadable_documents_skipped(self) -> None:
        """
        Documents that are not event documents are skipped.
        """
        self.state.on_events(
            [
                "x",  # type: ignore[list-item]
                {"type": 3},
                {"type": "task.started"},
                {"type": "daemon.heartbeat"},
                {"type": "listener.hello"},
            ]
        )
        self.assertEqual(self.state.sections()["running"], [])
        self.assertEqual(self.state.sections()["daemons"], [])


class FakeReceiver:
    def __init__(self, on_events: Any) -> None:
        self.on_events = on_events
        self.running = False
        self.starts = 0

    def start(self) -> defer.Deferred[None]:
        self.running = True
        self.starts += 1
        return defer.succeed(None)

    def stop(self) -> defer.Deferred[None]:
        self.running = False
        return defer.succeed(None)


class FakeWatcher:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.keep_alives = 0

    def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    def keep_alive(self) -> None:
        self.keep_alives += 1


class ClusterWatchTests(SynchronousTestCase):
    """
    :py:class:`ClusterWatch` runs its receiver and loops only while
    someone watches, and sends each watcher the snapshot, then changes.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.receivers: list[FakeReceiver] = []
        self.depth_reads = 0

        def receiver(on_events: Any) -> FakeReceiver:
            made = FakeReceiver(on_events)
            self.receivers.append(made)
            return made

        def depths() -> defer.Deferred[dict[str, Any]]:
            self.depth_reads += 1
            return defer.succeed({"ready": 5, "consumers": 2, "dead_letters": 1})

        self.store = MemoryBackend(self.clock)
        self.watch = ClusterWatch(
            self.clock, self.clock.seconds, receiver, backend=self.store, queue_depths=depths
        )

    def test_receiver_only_while_watched(self) -> None:
        """
        Nothing runs before the first watcher; the receiver starts with it
        and stops after the last one leaves, and no loop is left.
        """
        self.assertEqual(self.receivers, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        first, second = FakeWatcher(), FakeWatcher()
        self.watch.watch(first)
        self.watch.watch(second)
        self.assertEqual(len(self.receivers), 1)
        self.assertTrue(self.receivers[0].running)
        self.assertTrue(self.watch.live)
        self.watch.unwatch(first)
        self.assertTrue(self.receivers[0].running)
        self.watch.unwatch(second)
        self.assertFalse(self.receivers[0].running)
        self.assertFalse(self.watch.live)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        reads = self.depth_reads
        self.clock.advance(60)
        self.assertEqual(self.depth_reads, reads)
        self.watch.watch(FakeWatcher())
        self.assertEqual(len(self.receivers), 1)
        self.assertEqual(self.receivers[0].starts, 2)

    def test_snapshot_then_changed_sections(self) -> None:
        """
        A watcher gets the whole snapshot at once, then, at most every
        flush interval, only the sections that changed.
        """
        watcher = FakeWatcher()
        self.watch.watch(watcher)
        self.assertEqual(watcher.messages[0]["kind"], "snapshot")
        self.assertIn("daemons", watcher.messages[0]["sections"])
        self.clock.advance(0.25)
        watcher.messages.clear()
        receiver = self.receivers[0]
        now = self.clock.seconds()
        for number in range(10):
            receiver.on_events([task_event("started", number, now)])
        self.assertEqual(watcher.messages, [])
        self.clock.advance(0.25)
        self.assertEqual(len(watcher.messages), 1)
        patch = watcher.messages[0]
        self.assertEqual(patch["kind"], "patch")
        self.assertEqual(set(patch["sections"]), {"running", "running_count"})
        self.assertEqual(len(patch["sections"]["running"]), 10)
        self.clock.advance(0.25)
        self.assertEqual(len(watcher.messages), 1)

    def test_keep_alive_and_queue_depths(self) -> None:
        """
        The queue depths are read while watched, and a quiet stream gets a
        keep-alive.
        """
        watcher = FakeWatcher()
        self.watch.watch(watcher)
        self.assertEqual(self.depth_reads, 1)
        for _ in range(80):
            self.clock.advance(0.25)
        self.assertGreaterEqual(self.depth_reads, 4)
        queues = self.watch.snapshot()["sections"]["queues"]
        self.assertEqual((queues["ready"], queues["dead_letters"]), (5, 1))
        self.assertGreaterEqual(watcher.keep_alives, 1)

    def test_taskset_progress_read_from_store(self) -> None:
        """
        A taskset named by an event has its progress read from the store.
        """
        taskset = task_id(42)
        self.store.create_taskset(taskset, 3)
        self.watch.watch(FakeWatcher())
        self.receivers[0].on_events(
            [task_event("started", 1, self.clock.seconds(), taskset=taskset)]
        )
        self.clock.advance(1.0)
        shown = self.watch.snapshot()["sections"]["tasksets"]
        self.assertEqual((shown[0]["total"], shown[0]["completed"]), (3, 0))
