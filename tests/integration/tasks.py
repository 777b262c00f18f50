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
