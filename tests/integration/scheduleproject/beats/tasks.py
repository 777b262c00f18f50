"""
The task the test's periodic task publishes: it appends its task id, its
argument and its process to the file ``BEATS_FILE`` names.
"""

import os

from twistedq.task import tasks


def record(label, **kwargs):
    with open(os.environ["BEATS_FILE"], "a") as beats:
        beats.write(f"{kwargs['task_id']} {label} {os.getpid()}\n")
    return label


tasks.register(record, "beats.record")
