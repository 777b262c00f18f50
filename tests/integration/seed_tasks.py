"""
The celery 0.2.0 README's examples, as written there with ``celery``
spelled ``twistedq``: the module the daemon's children import.
"""

import os
import time
from datetime import timedelta

from twistedq.log import setup_logger
from twistedq.task import PeriodicTask, dmap, tasks


def do_something(some_arg, **kwargs):
    logger = setup_logger(**kwargs)
    logger.info("Did something: %s" % some_arg)
    time.sleep(0.5)  # long enough for the test to see ready() False first
    return 42


tasks.register(do_something, "do_something")


class MyPeriodicTask(PeriodicTask):
    name = "foo.my-periodic-task"
    run_every = timedelta(seconds=30)

    def run(self, **kwargs):
        logger = self.get_logger(**kwargs)
        logger.info("Running periodic task!")
        return "ran"


tasks.register(MyPeriodicTask)


def divide(x, y):
    return x / y


tasks.register(divide, "divide")


def square(x):
    return x * x


tasks.register(square, "square")


def fail_on(x, bad):
    if x == bad:
        raise ValueError(f"item {x} is bad")
    return x


tasks.register(fail_on, "fail_on")


def pause(seconds):
    time.sleep(seconds)
    return seconds


tasks.register(pause, "pause")


def nested_dmap(count):
    """
    Maps over a taskset from inside a task: refused at once.
    """
    return dmap("square", range(count))


tasks.register(nested_dmap, "nested_dmap")


# Autodiscovery, as the README puts it in urls.py.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.integration.seedproject.settings")
tasks.autodiscover()
