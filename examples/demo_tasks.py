"""
The demo's tasks, registered the way the celery 0.2.0 README showed.
"""

import logging

from twistedq.task import tasks

logger = logging.getLogger(__name__)


def add(x, y):
    logger.info("Adding %s and %s", x, y)
    return x + y


def divide(x, y):
    return x / y


tasks.register(add, "add")
tasks.register(divide, "divide")
