"""
The task of the fault-injection suite.  Each run appends ``<task id>
<child pid>`` to ``$TWISTEDQ_TEST_RUNS_FILE``, and first asks Redis whether
the task's outcome is committed already: if it is, the run is one that
should never have happened, and the line says ``after-commit``.
"""

import os
import socket
import time
from urllib.parse import urlsplit

from twistedq.task import tasks

_RESULT_PREFIX = b"twistedq:result:"


def _committed(task_id: str) -> bool:
    """
    Whether Redis holds a final outcome for the task (a raw RESP GET, so the
    check needs nothing but the standard library).  False when Redis does
    not answer.
    """
    url = urlsplit(os.environ["TWISTEDQ_TEST_REDIS_URL"])
    key = _RESULT_PREFIX + task_id.encode()
    try:
        with socket.create_connection((url.hostname, url.port or 6379), timeout=2) as sock:
            sock.sendall(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key))
            reply = b""
            while b"\r\n" not in reply or (reply.startswith(b"$") and not _complete(reply)):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
    except OSError:
        return False
    return b'"status":"SUCCESS"' in reply or b'"status":"FAILURE"' in reply


def _complete(reply: bytes) -> bool:
    header, _, rest = reply.partition(b"\r\n")
    length = int(header[1:])
    return length < 0 or len(rest) >= length + 2


def record(index: int, task_id: str, **kwargs: object) -> int:
    late = " after-commit" if _committed(task_id) else ""
    line = f"{task_id} {os.getpid()}{late}\n".encode()
    descriptor = os.open(
        os.environ["TWISTEDQ_TEST_RUNS_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT
    )
    try:
        os.write(descriptor, line)
    finally:
        os.close(descriptor)
    time.sleep(0.002)
    if str(index) == os.environ.get("TWISTEDQ_TEST_HUGE_INDEX"):
        return "x" * (2 * 1024 * 1024)  # over the 1 MiB the store is set to take
    return index


tasks.register(record, "fault.record")
