"""
The same no-op task for Celery, on the same broker and result store.
"""

import os

from celery import Celery

app = Celery(
    "bench",
    broker=os.environ.get("BENCH_BROKER", "amqp://guest:guest@127.0.0.1:5672//"),
    backend=os.environ.get("BENCH_RESULT_BACKEND", "redis://127.0.0.1:6379/0"),
)
app.conf.task_default_queue = os.environ.get("BENCH_QUEUE", "bench-celery")
app.conf.worker_hijack_root_logger = False


@app.task(name="noop")
def noop():
    return None
