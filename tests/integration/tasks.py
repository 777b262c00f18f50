"""
Tasks the integration tests run in the daemon's children.
"""

from twistedq.task import Task, task, tasks


class TaskFailed(Exception):
    """
    Raised by the ``fail`` task, importable on both sides.
    """


def add(x, y):
    return x + y


def fail(message):
    raise TaskFailed(message)


def fail_builtin(message):
    raise ValueError(message)


def echo(value):
    return value


def noop():
    return None


def shout():
    print("printed to stdout by a task")
    return "ok"


tasks.register(add, "add")
tasks.register(fail, "fail")
tasks.register(fail_builtin, "fail_builtin")
tasks.register(echo, "echo")
tasks.register(noop, "noop")
tasks.register(shout, "shout")


def sleep(seconds):
    import time

    time.sleep(seconds)
    return seconds


def die_once(marker):
    """
    Kill the child running it the first time; succeed when run again.
    """
    import os
    import signal

    if not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"


tasks.register(sleep, "sleep")
tasks.register(die_once, "die_once")


def count_run(path):
    """
    Append a line per run, so a test can count them.
    """
    with open(path, "a") as f:
        f.write("ran\n")
    return "counted"


tasks.register(count_run, "count_run")


def _record_run(path):
    """
    Append this run's start (Unix time) to ``path``; return how many runs
    there were before it.
    """
    import time

    try:
        with open(path) as f:
            before = len(f.read().splitlines())
    except FileNotFoundError:
        before = 0
    with open(path, "a") as f:
        f.write(f"{time.time()}\n")
    return before


@task(name="flaky", autoretry_for=(TaskFailed,), default_retry_delay=0.2)
def flaky(path, failures):
    """
    Fail with TaskFailed on the first ``failures`` runs, then succeed;
    retried automatically.
    """
    runs = _record_run(path)
    if runs < failures:
        raise TaskFailed(f"run {runs + 1} fails")
    return runs + 1


@task(name="always_fails", autoretry_for=(TaskFailed,), max_retries=2, retry_backoff=0.1)
def always_fails(path):
    """
    Fail on every run; after its two retries the task fails.
    """
    runs = _record_run(path)
    raise TaskFailed(f"run {runs + 1} fails")


class RetryLater(Task):
    """
    Asks once for a retry ``countdown`` seconds later, then returns the
    start times of its runs.
    """

    name = "retry_later"

    def run(self, path, countdown):
        if _record_run(path) == 0:
            self.retry(countdown=countdown)
        with open(path) as f:
            return [float(line) for line in f.read().splitlines()]


tasks.register(RetryLater)


@task(name="record_start")
def record_start(path):
    """
    Record the start of its run; return it.
    """
    _record_run(path)
    with open(path) as f:
        return float(f.read().splitlines()[-1])


def slow_count(path, seconds):
    """
    Append a line per run to ``path``, then sleep: a long task whose runs a
    test can count.
    """
    import time

    with open(path, "a") as f:
        f.write("ran\n")
    time.sleep(seconds)
    return "slow"


tasks.register(slow_count, "slow_count")
