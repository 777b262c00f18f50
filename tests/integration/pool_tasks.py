"""
Tasks that misbehave, for the pool's integration tests.
"""

import ctypes
import os
import time

from twisted.internet.defer import Deferred

from twistedq.exceptions import SoftTimeLimitExceeded
from twistedq.task import Task, task, tasks


def add(x, y):
    return x + y


def segfault():
    ctypes.string_at(0)


def exit_hard(code):
    os._exit(code)


def leak(megabytes):
    _leaked.append(bytearray(megabytes * 1024 * 1024))
    return len(_leaked)


_leaked: list[bytearray] = []


def big_result(megabytes):
    """
    A string of ``megabytes`` MiB: over the result size limit.
    """
    return "x" * (megabytes * 1024 * 1024)


def big_error(megabytes):
    raise ValueError("y" * (megabytes * 1024 * 1024))


def sleep_marked(seconds, marker_dir):
    """
    Sleep after leaving a file that says it started.
    """
    with open(os.path.join(marker_dir, f"{os.getpid()}-{time.monotonic_ns()}"), "w"):
        pass
    time.sleep(seconds)
    return seconds


def pid():
    return os.getpid()


class Hang(Task):
    name = "hang"
    time_limit = 2.0

    def run(self):
        time.sleep(1000)


class Slow(Task):
    name = "soft"
    soft_time_limit = 0.5

    def run(self):
        try:
            time.sleep(10)
        except SoftTimeLimitExceeded:
            return "cleaned up"
        return "not interrupted"


tasks.register(add, "add")
tasks.register(segfault, "segfault")
tasks.register(exit_hard, "exit_hard")
tasks.register(leak, "leak")
tasks.register(big_result, "big_result")
tasks.register(big_error, "big_error")
tasks.register(sleep_marked, "sleep_marked")
tasks.register(pid, "pid")
tasks.register(Hang)
tasks.register(Slow)


@task(name="async_echo", on_reactor=True)
async def async_echo(value):
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    await deferLater(reactor, 0.1, lambda: None)
    return value


@task(name="deferred_hang", on_reactor=True, time_limit=1.0)
def deferred_hang():
    return Deferred()


def open_fds():
    return sorted(int(fd) for fd in os.listdir("/proc/self/fd"))


tasks.register(open_fds, "open_fds")
