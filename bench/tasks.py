"""
The benchmark's task, for twistedq.
"""

from twistedq.task import tasks


def noop():
    return None


tasks.register(noop, "noop")


def nap(seconds):
    import time

    time.sleep(seconds)
    return seconds


tasks.register(nap, "nap")
