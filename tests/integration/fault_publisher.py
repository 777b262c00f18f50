"""
Publishes the fault-injection suite's tasks, ``count`` of them in chunks
spread over ``seconds``, through the blocking client.  A chunk whose
publish fails (the broker restarting: ``BrokerUnavailable``,
``PublishUncertain``) is published again with the same ids until the
broker confirms it.  Prints the confirmed ids as JSON.

Usage: python -m tests.integration.fault_publisher BROKER BACKEND QUEUE COUNT SECONDS
"""

import json
import sys
import time

from twistedq.client import Client
from twistedq.message import TaskMessage, new_task_id


def main() -> None:
    broker, backend, queue, count, seconds = sys.argv[1:6]
    total, spread = int(count), float(seconds)
    client = Client(broker_url=broker, result_backend=backend, queue=queue, timeout=5)
    chunk = 25
    pause = spread / (total / chunk)
    confirmed: list[str] = []
    retries = 0
    for start in range(0, total, chunk):
        messages = [
            TaskMessage(id=new_task_id(), task="fault.record", args=(index,))
            for index in range(start, min(start + chunk, total))
        ]
        while True:
            try:
                client.publish_many(messages)
                break
            except Exception as error:
                retries += 1
                print(f"publish failed ({type(error).__name__}: {error}); again", file=sys.stderr)
                time.sleep(0.5)
        confirmed.extend(message.id for message in messages)
        time.sleep(pause)
    client.close()
    print(json.dumps({"ids": confirmed, "retries": retries}))


if __name__ == "__main__":
    main()
