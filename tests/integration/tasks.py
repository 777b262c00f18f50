"""
Tasks the integration tests run in the daemon's children.
"""

from twistedq.task import tasks


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
