"""
:py:class:`ClusterWatch` keeps a :py:class:`~twistedq.dashboard.state.ClusterState`
up to date while someone watches, and sends each watcher the snapshot
first, then the sections that changed, at most every ``flush_interval``
seconds.

The subscription to the events exchange (an ``EventReceiver``) runs only
while at least one watcher is there, and stops when the last one leaves;
so do the reads of the queue depths, the periodic tasks and the progress of
tasksets.  Nobody watching costs the daemon nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from twistedq.amqp.broker import BrokerConnection, Topology
from twistedq.backends.base import IResultBackend, IScheduleStore
from twistedq.dashboard.state import ClusterState, section_texts

__all__ = [
    "ClusterWatch",
    "EventSource",
    "Watcher",
    "periodic_reader",
    "queue_depth_reader",
]

log = Logger()


class EventSource(Protocol):
    """
    What the watch needs of an ``EventReceiver``
    (:py:mod:`twistedq.amqp.events`).
    """

    def start(self) -> defer.Deferred[None]: ...

    def stop(self) -> defer.Deferred[None]: ...


class Watcher(Protocol):
    """
    One open page (an SSE stream).
    """

    def send(self, message: dict[str, Any]) -> None:
        """
        ``{"kind": "snapshot" | "patch", "now": t, "live": bool,
        "sections": {...}}``: every section for a snapshot, only those that
        changed for a patch.
        """

    def keep_alive(self) -> None:
        """
        Nothing changed for a while: say so, so proxies keep the stream.
        """


class ClusterWatch:
    """
    The live state of the cluster for the dashboard.

    :param clock: runs the loops.
    :param wall: seconds since the epoch.
    :param receiver_factory: makes a receiver that passes each batch of
        event documents to the function given; ``None`` watches no events.
    :param backend: where taskset progress is read.
    :param queue_depths: reads ``{"ready", "consumers", "dead_letters"}``.
    :param periodic: reads the periodic tasks, a list of
        ``{"name", "enabled", "last_run_at", "next_run_at", "total_run_count"}``.
    :param seed_running: reads the tasks running when the watch starts (in
        the form of ``task.started`` documents), for those started before.
    """

    def __init__(
        self,
        clock: IReactorTime,
        wall: Callable[[], float],
        receiver_factory: Callable[[Callable[[list[dict[str, Any]]], None]], EventSource] | None,
        backend: IResultBackend | None = None,
        queue_depths: Callable[[], defer.Deferred[dict[str, Any]]] | None = None,
        periodic: Callable[[], defer.Deferred[list[dict[str, Any]]]] | None = None,
        seed_running: Callable[[], defer.Deferred[list[dict[str, Any]]]] | None = None,
        flush_interval: float = 0.25,
        poll_interval: float = 5.0,
        taskset_interval: float = 1.0,
        keep_alive_interval: float = 15.0,
    ) -> None:
        self.clock = clock
        self.wall = wall
        self.receiver_factory = receiver_factory
        self.backend = backend
        self.queue_depths = queue_depths
        self.periodic = periodic
        self.seed_running = seed_running
        self.flush_interval = flush_interval
        self.poll_interval = poll_interval
        self.taskset_interval = taskset_interval
        self.keep_alive_interval = keep_alive_interval
        self.state = ClusterState(wall)
        self.watchers: list[Watcher] = []
        #: Whether the receiver is bound and consuming.
        self.live = False
        self._receiver: EventSource | None = None
        self._receiving = False
        self._changing = False
        self._sent_version = -1
        self._sent_texts: dict[str, str] = {}
        self._last_sent = 0.0
        self._flush_loop = LoopingCall(self._flush)
        self._flush_loop.clock = clock
        self._poll_loop = LoopingCall(self._poll)
        self._poll_loop.clock = clock
        self._taskset_loop = LoopingCall(self._read_tasksets)
        self._taskset_loop.clock = clock
        self._polling = False
        self._reading_tasksets = False
        self._event_listeners: list[Callable[[list[dict[str, Any]]], None]] = []

    # watchers

    def watch(self, watcher: Watcher) -> None:
        """
        Add a watcher: it gets the snapshot at once, then the changes.  The
        first one starts the receiver and the loops.
        """
        self.watchers.append(watcher)
        if len(self.watchers) == 1:
            self._start_loops()
        watcher.send(self.snapshot())
        self._change_receiver()

    def unwatch(self, watcher: Watcher) -> None:
        """
        Remove a watcher; after the last one the receiver stops.
        """
        if watcher in self.watchers:
            self.watchers.remove(watcher)
        if not self.watchers:
            self._stop_loops()
        self._change_receiver()

    def add_event_listener(self, listener: Callable[[list[dict[str, Any]]], None]) -> None:
        """
        Also pass each batch of events to ``listener`` (while the receiver
        runs).
        """
        self._event_listeners.append(listener)

    def remove_event_listener(self, listener: Callable[[list[dict[str, Any]]], None]) -> None:
        if listener in self._event_listeners:
            self._event_listeners.remove(listener)

    def snapshot(self) -> dict[str, Any]:
        """
        Every section, with the time now and whether events arrive.
        """
        self.state.expire()
        return {
            "kind": "snapshot",
            "now": self.wall(),
            "live": self.live,
            "sections": self.state.sections(),
        }

    def refresh(self) -> defer.Deferred[None]:
        """
        Read the queue depths, the periodic tasks and the tasksets' progress
        once (for a snapshot asked without a stream).
        """
        return defer.DeferredList(
            [self._poll(), self._read_tasksets()], consumeErrors=True
        ).addCallback(lambda _: None)

    # receiver

    def on_events(self, documents: list[dict[str, Any]]) -> None:
        """
        A batch from the receiver.
        """
        self.state.on_events(documents)
        for listener in list(self._event_listeners):
            try:
                listener(documents)
            except Exception:
                log.failure("A dashboard event listener failed; it is removed")
                self.remove_event_listener(listener)

    def _change_receiver(self) -> None:
        """
        Start the receiver if someone watches and it is not running, stop
        it if nobody does; one change at a time.
        """
        if self._changing or self.receiver_factory is None:
            return
        wanted = bool(self.watchers)
        if wanted and not self._receiving:
            if self._receiver is None:
                # One receiver, started and stopped again: its connect hook
                # is added to the connection once.
                self._receiver = self.receiver_factory(self.on_events)
            self._receiving = True
            d = defer.maybeDeferred(self._receiver.start)
            d.addCallback(self._started)
        elif not wanted and self._receiving and self._receiver is not None:
            self._receiving = False
            self.live = False
            d = defer.maybeDeferred(self._receiver.stop)
            d.addCallback(lambda _: self._reset())
        else:
            return
        self._changing = True
        d.addErrback(lambda failure: log.failure("The dashboard's event receiver failed", failure))

        def changed(_: Any) -> None:
            self._changing = False
            self._change_receiver()

        d.addBoth(changed)

    def _started(self, _: Any) -> None:
        self.live = True
        self.state.version += 1
        if self.seed_running is not None:
            self.seed_running().addCallbacks(
                self.state.on_events,
                lambda failure: log.info(
                    "Cannot read the running tasks: {error}", error=failure.getErrorMessage()
                ),
            )

    def _reset(self) -> None:
        """
        Forget what the events told: while nobody watched, nothing was
        heard.
        """
        heard = self.state
        self.state = ClusterState(self.wall)
        # Read from the broker and the store, not heard: still true.
        self.state.queues, self.state.periodic = heard.queues, heard.periodic
        self._sent_version = -1
        self._sent_texts = {}

    # loops

    def _start_loops(self) -> None:
        for loop, interval in (
            (self._flush_loop, self.flush_interval),
            (self._poll_loop, self.poll_interval),
            (self._taskset_loop, self.taskset_interval),
        ):
            if not loop.running:
                loop.start(interval, now=loop is not self._flush_loop)

    def _stop_loops(self) -> None:
        for loop in (self._flush_loop, self._poll_loop, self._taskset_loop):
            if loop.running:
                loop.stop()

    def _flush(self) -> None:
        """
        Send the sections that changed since the last message, or a
        keep-alive after a quiet while.
        """
        try:
            self.state.expire()
            now = self.clock.seconds()
            if self.state.version == self._sent_version:
                if now - self._last_sent >= self.keep_alive_interval:
                    self._last_sent = now
                    for watcher in list(self.watchers):
                        watcher.keep_alive()
                return
            self._sent_version = self.state.version
            sections = self.state.sections()
            texts = section_texts(sections)
            changed = [name for name, text in texts.items() if self._sent_texts.get(name) != text]
            self._sent_texts = texts
            if not changed:
                return
            self._last_sent = now
            message = {
                "kind": "patch",
                "now": self.wall(),
                "live": self.live,
                "sections": {name: sections[name] for name in changed},
            }
            for watcher in list(self.watchers):
                watcher.send(message)
        except Exception:
            log.failure("Sending the dashboard's changes failed")

    def _poll(self) -> defer.Deferred[None]:
        if self._polling:
            return defer.succeed(None)
        self._polling = True
        reads = []
        if self.queue_depths is not None:
            reads.append(self.queue_depths().addCallback(lambda q: self.state.set_queues(q)))
        if self.periodic is not None:
            reads.append(self.periodic().addCallback(lambda p: self.state.set_periodic(p)))
        d = defer.DeferredList(reads, consumeErrors=True)

        def done(results: list[tuple[bool, Any]]) -> None:
            self._polling = False
            for ok, result in results:
                if not ok:
                    log.info("A dashboard read failed: {error}", error=result.getErrorMessage())

        return d.addCallback(done)

    def _read_tasksets(self) -> defer.Deferred[None]:
        backend = self.backend
        wanted = [t["id"] for t in self.state.tasksets.values() if not t.get("ready")]
        if backend is None or not wanted or self._reading_tasksets:
            return defer.succeed(None)
        self._reading_tasksets = True
        state = self.state

        def read(taskset_id: str) -> defer.Deferred[None]:
            d = backend.get_taskset(taskset_id)
            return d.addCallback(
                lambda found: state.set_taskset_progress(
                    taskset_id,
                    None
                    if found is None
                    else {
                        "total": found.total,
                        "completed": found.completed,
                        "failed": found.failed,
                        "ready": found.ready,
                    },
                )
            )

        d = defer.DeferredList([read(i) for i in wanted], consumeErrors=True)

        def done(_: Any) -> None:
            self._reading_tasksets = False

        return d.addCallback(done)


def queue_depth_reader(
    connection: BrokerConnection, topology: Topology
) -> Callable[[], defer.Deferred[dict[str, Any]]]:
    """
    A function reading the task queue's ready messages and consumers and
    the dead-letter queue's length by passive ``queue.declare`` (``None``
    for a queue that does not exist), on a channel of its own.
    """

    async def declared(protocol: Any, queue: str) -> Any:
        channel = await protocol.open_channel()
        try:
            return await channel.queue_declare(queue=queue, passive=True)
        except Exception:
            return None
        finally:
            if not channel.closed:
                await channel.channel_close()

    async def read() -> dict[str, Any]:
        protocol = await connection.when_connected(fail_after=1)
        tasks = await declared(protocol, topology.queue)
        letters = await declared(protocol, topology.dead_letter_queue)
        return {
            "queue": topology.queue,
            "ready": None if tasks is None else tasks.message_count,
            "consumers": None if tasks is None else tasks.consumer_count,
            "dead_letters": None if letters is None else letters.message_count,
        }

    return lambda: defer.Deferred.fromCoroutine(read())


def periodic_reader(
    store: IScheduleStore, names: Callable[[], list[str]]
) -> Callable[[], defer.Deferred[list[dict[str, Any]]]]:
    """
    A function reading the stored state of the periodic tasks ``names()``
    gives (next and last run, paused, runs).
    """

    async def read() -> list[dict[str, Any]]:
        wanted = sorted(names())
        if not wanted:
            return []
        states = await store.get_periodic_states(wanted)
        rows = []
        for name in wanted:
            state = states.get(name)
            rows.append(
                {
                    "name": name,
                    "enabled": True if state is None else state.enabled,
                    "last_run_at": None if state is None else state.last_run_at,
                    "next_run_at": None if state is None else state.next_run_at,
                    "total_run_count": 0 if state is None else state.total_run_count,
                }
            )
        return rows

    return lambda: defer.Deferred.fromCoroutine(read())
