"""
The same no-op task for Dramatiq, on the same broker (RabbitMQ) and the
same Redis result store.  Dramatiq publishes without publisher confirms
by default (a message can be lost unseen); ``BENCH_DRAMATIQ_CONFIRMS=1``
turns them on, as twistedq's client always has them.  The task returns the time it ran, so that the
benchmark reads when each task was done from its stored result.
"""

import os
import time

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

QUEUE = os.environ.get("BENCH_QUEUE", "bench-dramatiq")

broker = RabbitmqBroker(
    url=os.environ.get("BENCH_BROKER", "amqp://guest:guest@127.0.0.1:5672/"),
    confirm_delivery=os.environ.get("BENCH_DRAMATIQ_CONFIRMS") == "1",
)
results = RedisBackend(url=os.environ.get("BENCH_RESULT_BACKEND", "redis://127.0.0.1:6379/0"))
broker.add_middleware(Results(backend=results))
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE, store_results=True)
def noop():
    return time.time()
