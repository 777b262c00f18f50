"""
The Redis Sentinel set of ``scripts/services start sentinel``, seen and
shaken by tests: who is primary, a failover, a primary killed with
``-9`` and brought back as a replica.

The set's name is ``twistedq``; ``TWISTEDQ_TEST_SENTINEL_URL`` names its
sentinels (the tests are skipped without it).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tests.integration.servers import server_url

NAME = "twistedq"

Address = tuple[str, int]


def sentinel_url() -> str:
    return server_url("TWISTEDQ_TEST_SENTINEL_URL")


def sentinel_addresses() -> list[Address]:
    """
    The sentinels of ``TWISTEDQ_TEST_SENTINEL_URL``.
    """
    addresses = []
    for item in urlsplit(sentinel_url()).netloc.split(","):
        host, _, port = item.rpartition(":")
        addresses.append((host, int(port)))
    return addresses


def _read(stream: Any) -> Any:
    """
    One RESP value from ``stream``: bytes, an int, None or a list.
    """
    header = stream.readline()
    kind, rest = header[:1], header[1:-2]
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b"+":
        return rest
    if kind == b":":
        return int(rest)
    if kind == b"$":
        return None if int(rest) < 0 else stream.read(int(rest) + 2)[:-2]
    if kind == b"*":
        return None if int(rest) < 0 else [_read(stream) for _ in range(int(rest))]
    raise RuntimeError(f"not a RESP reply: {header!r}")


def command(address: Address, *words: str | int) -> Any:
    """
    One Redis command's reply (bytes, an int, None or a list of them).

    :raises RuntimeError: Redis answered an error.
    """
    encoded = [str(w).encode() for w in words]
    request = b"*%d\r\n" % len(encoded) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in encoded)
    with socket.create_connection(address, timeout=10) as connection:
        connection.sendall(request)
        return _read(connection.makefile("rb"))


def _pairs(flat: list[bytes]) -> dict[str, str]:
    text = [item.decode() for item in flat]
    return dict(zip(text[::2], text[1::2], strict=True))


def fields(address: Address, *words: str | int) -> dict[str, str]:
    """
    A reply of alternating keys and values (``SENTINEL MASTER``) as a dict.
    """
    return _pairs(command(address, *words))


def info(address: Address, section: str) -> dict[str, str]:
    text = command(address, "INFO", section).decode()
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def primary() -> Address:
    """
    The primary the first sentinel names.
    """
    host, port = command(sentinel_addresses()[0], "SENTINEL", "GET-MASTER-ADDR-BY-NAME", NAME)
    return host.decode(), int(port)


def replica() -> Address:
    """
    The primary's replica, as the primary tells it.
    """
    replication = info(primary(), "replication")
    found = dict(item.split("=", 1) for item in replication["slave0"].split(","))
    return found["ip"], int(found["port"])


def poll(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """
    Wait until ``condition()`` holds (errors count as no), every 0.1 s.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (OSError, RuntimeError, ValueError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def healthy() -> bool:
    """
    Every sentinel names one primary, up, with a replica in sync that it
    sees up: another failover can happen.
    """
    named = {
        tuple(command(a, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", NAME)) for a in sentinel_addresses()
    }
    if len(named) != 1:
        return False
    current = primary()
    replication = info(current, "replication")
    if replication.get("connected_slaves") != "1" or "state=online" not in replication["slave0"]:
        return False
    following = info(replica(), "replication")
    if following.get("master_link_status") != "up":
        return False
    if following.get("master_sync_in_progress") != "0":
        return False  # a replica still loading could be promoted and lose the data
    for address in sentinel_addresses():
        state = fields(address, "SENTINEL", "MASTER", NAME)
        if state["flags"] != "master" or state["num-other-sentinels"] != "2":
            return False
        replicas = [_pairs(r) for r in command(address, "SENTINEL", "REPLICAS", NAME)]
        if not any(r["flags"] == "slave" for r in replicas):
            return False  # no replica the sentinel sees up and well
    return True


def wait_healthy(timeout: float = 60.0) -> Address:
    """
    Wait until the set is :py:func:`healthy`; the primary.
    """
    poll(healthy, timeout, "the Sentinel set healthy")
    return primary()


def failover(timeout: float = 60.0) -> Address:
    """
    Ask the sentinels for a failover (the primary stays up and becomes a
    replica) and wait until every one names the new primary; that one.
    """
    old = wait_healthy()
    command(sentinel_addresses()[0], "SENTINEL", "FAILOVER", NAME)
    poll(lambda: named_by_all() not in (None, old), timeout, "a new primary")
    new = named_by_all()
    assert new is not None
    return new


def named_by_all() -> Address | None:
    """
    The primary every sentinel names, or None while they differ.
    """
    named = {
        tuple(command(a, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", NAME)) for a in sentinel_addresses()
    }
    if len(named) != 1:
        return None
    host, port = named.pop()
    return host.decode(), int(port)


@dataclass
class KilledServer:
    """
    A Redis server of the set killed with ``-9``, and how to start it
    again as it was.
    """

    address: Address
    arguments: list[str]

    def restart_as_replica_of(self, current: Address) -> None:
        """
        Start it again, as a replica of ``current`` (it would otherwise come
        back a primary of its own until the sentinels demote it).
        """
        subprocess.run(
            ["redis-server", *self.arguments, "--replicaof", current[0], str(current[1])],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            timeout=30,
        )


def kill_primary() -> KilledServer:
    """
    Kill the current primary with ``-9`` (no goodbye to anyone), after
    noting how it was started.
    """
    address = primary()
    settings = {
        key: command(address, "CONFIG", "GET", key)[1].decode()
        for key in ("dir", "pidfile", "logfile", "appendonly", "appendfsync")
    }
    pid = int(info(address, "server")["process_id"])
    arguments = [
        "--bind",
        address[0],
        "--port",
        str(address[1]),
        "--save",
        "",
        "--daemonize",
        "yes",
        *[part for key, value in settings.items() for part in (f"--{key}", value)],
    ]
    os.kill(pid, signal.SIGKILL)
    return KilledServer(address, arguments)
