"""
Tasks the workflow integration tests run (:py:mod:`twistedq.canvas`).
"""

import os
import time

from twistedq.task import task


@task(name="canvas.add")
def add(x, y):
    return x + y


@task(name="canvas.mul")
def mul(x, y):
    return x * y


@task(name="canvas.fail")
def fail(message):
    raise ValueError(message)


@task(name="canvas.record")
def record(value, path):
    """
    Append ``value`` as a line to the file ``path``: how often a task ran.
    """
    with open(path, "a") as f:
        f.write(f"{value}\n")
    return value


@task(name="canvas.member")
def member(index, path, pause):
    """
    A chord member: counts its runs in ``path``, takes ``pause`` seconds.
    """
    with open(path, "a") as f:
        f.write(f"{index} {os.getpid()}\n")
    time.sleep(pause)
    return 2 * index


@task(name="canvas.tsum")
def tsum(values, path):
    """
    A chord callback: the sum, each run counted in ``path``.
    """
    with open(path, "a") as f:
        f.write(f"{sum(values)} {len(values)}\n")
    return sum(values)
